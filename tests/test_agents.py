"""Agents: CRUD by UUID or slug, tenancy (own / shared / default / admin), a strict whitelist on
writes, real deletes, audit rows."""

from __future__ import annotations

import uuid

import pytest

from tests.support.processes import TEST_TOKEN

UNKNOWN = "00000000-0000-0000-0000-000000000000"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def provider(admin, llm_stub) -> str:
    """An OpenAI-compatible provider on the stub; its name."""
    name = unique("stub")
    body = {"name": name, "provider_type": "openai_compat", "api_base": llm_stub.openai_base, "api_key": "sk-test"}
    assert admin.post("/v1/providers", json=body).status_code == 201
    return name


@pytest.fixture
def user(client_for, make_key):
    """Factory: a non-admin operator client acting as the given tenant."""
    key, _ = make_key("operator.write", name="agents-test")

    def make(user_id: str):
        return client_for(key, user=user_id)

    return make


def create(client, **body) -> dict:
    body.setdefault("name", unique("agent"))
    response = client.post("/v1/agents", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_create_returns_the_stored_agent_with_slug_as_name_and_agent_key(user, provider):
    alice = user("alice")
    name = unique("helper")
    agent = create(
        alice, name=name, display_name="Helper", provider=provider, model="stub-gpt",
        system_prompt="Be brief.", description="answers questions", other_config={"max_tokens": 512},
    )
    assert agent["name"] == agent["agent_key"] == name
    assert uuid.UUID(agent["id"])
    assert agent["owner_id"] == "alice"
    assert (agent["provider"], agent["model"], agent["system_prompt"]) == (provider, "stub-gpt", "Be brief.")
    assert agent["display_name"] == "Helper" and agent["description"] == "answers questions"
    assert agent["context_window"] == 200000 and agent["max_tool_iterations"] == 20
    assert agent["agent_type"] == "open" and agent["status"] == "active" and agent["is_default"] is False
    assert agent["memory_config"] == {"enabled": True} and agent["tools_config"] == {}
    assert agent["other_config"] == {"max_tokens": 512}
    assert alice.get(f"/v1/agents/{agent['id']}").json() == agent


def test_an_agent_is_addressed_by_uuid_or_slug_on_every_verb(user):
    alice = user("alice")
    agent = create(alice)
    assert alice.get(f"/v1/agents/{agent['name']}").json()["id"] == agent["id"]
    assert alice.put(f"/v1/agents/{agent['name']}", json={"model": "m1"}).json()["model"] == "m1"
    assert alice.put(f"/v1/agents/{agent['id']}", json={"model": "m2"}).json()["model"] == "m2"
    assert alice.delete(f"/v1/agents/{agent['name']}").json() == {
        "status": "deleted", "id": agent["id"], "agent_key": agent["name"],
    }


def test_without_name_the_slug_comes_from_display_name(user):
    alice = user("alice")
    display = f"My Research Bot {uuid.uuid4().hex[:6]}"
    agent = alice.post("/v1/agents", json={"display_name": display}).json()
    assert agent["name"] == display.lower().replace(" ", "-")
    again = alice.post("/v1/agents", json={"display_name": display})
    assert again.status_code == 201
    assert again.json()["name"].startswith(agent["name"] + "-")
    assert alice.post("/v1/agents", json={}).json()["name"].startswith("agent")


def test_list_is_newest_first_and_an_empty_list_is_a_list(user):
    nobody = user(unique("nobody"))
    assert nobody.get("/v1/agents").json() == {"agents": [], "total": 0, "limit": 100, "offset": 0}
    carol = user(unique("carol"))
    first, second = create(carol), create(carol)
    listed = carol.get("/v1/agents").json()
    assert [a["id"] for a in listed["agents"]] == [second["id"], first["id"]]
    assert listed["total"] == 2
    page = carol.get("/v1/agents", params={"limit": 1, "offset": 1}).json()
    assert [a["id"] for a in page["agents"]] == [first["id"]] and page["total"] == 2


def test_the_user_header_is_required_to_list_and_create(admin):
    assert admin.get("/v1/agents").status_code == 400
    response = admin.post("/v1/agents", json={"name": unique("x")})
    assert response.status_code == 400
    assert "X-GoClaw-User-Id" in response.json()["error"]


def test_duplicate_slug_is_409_on_create_and_on_rename(user):
    alice, bob = user("alice"), user("bob")
    taken = create(alice)
    response = bob.post("/v1/agents", json={"name": taken["name"]})
    assert response.status_code == 409
    assert taken["name"] in response.json()["error"]
    mine = create(bob)
    assert bob.put(f"/v1/agents/{mine['id']}", json={"name": taken["name"]}).status_code == 409
    assert bob.get(f"/v1/agents/{mine['id']}").json()["name"] == mine["name"]


def test_rename_keeps_the_uuid(user):
    alice = user("alice")
    agent = create(alice)
    new = unique("renamed")
    renamed = alice.put(f"/v1/agents/{agent['id']}", json={"name": new}).json()
    assert (renamed["id"], renamed["name"], renamed["agent_key"]) == (agent["id"], new, new)
    assert alice.get(f"/v1/agents/{agent['name']}").status_code == 404


@pytest.mark.parametrize("ref", [UNKNOWN, "no-such-agent"])
def test_unknown_agent_is_404_on_every_verb(user, ref):
    alice = user("alice")
    assert alice.get(f"/v1/agents/{ref}").status_code == 404
    assert alice.put(f"/v1/agents/{ref}", json={"model": "x"}).status_code == 404
    response = alice.delete(f"/v1/agents/{ref}")
    assert response.status_code == 404
    assert response.json() == {"error": f"agent not found: {ref}"}


@pytest.mark.parametrize(
    "body",
    [
        {"name": "Not A Slug"},
        {"name": "-edge"},
        {"name": "x" * 101},
        {"name": ""},
        {"name": 5},
        {"agent_type": "robot"},
        {"status": "summoning"},
        {"context_window": 0},
        {"max_tool_iterations": 1001},
        {"budget_monthly_cents": -1},
        {"tools_config": []},
        {"is_default": "yes"},
        {"display_name": "x" * 256},
        {"owner_id": "mallory"},
        {"workspace": "/"},
    ],
)
def test_invalid_create_input_is_400_and_creates_nothing(user, body):
    tenant = user(unique("t"))
    response = tenant.post("/v1/agents", json=body)
    assert response.status_code == 400, response.text
    assert isinstance(response.json()["error"], str)
    assert tenant.get("/v1/agents").json()["agents"] == []


def test_unknown_provider_is_409_and_an_empty_provider_means_none(user, provider):
    alice = user("alice")
    response = alice.post("/v1/agents", json={"name": unique("a"), "provider": "no-such-provider"})
    assert response.status_code == 409
    assert response.json() == {"error": "provider not found: no-such-provider"}
    agent = create(alice, provider=provider)
    assert alice.put(f"/v1/agents/{agent['id']}", json={"provider": "nope"}).status_code == 409
    cleared = alice.put(f"/v1/agents/{agent['id']}", json={"provider": ""}).json()
    assert cleared["provider"] == ""


def test_update_changes_only_the_given_fields(user, provider):
    alice = user("alice")
    agent = create(alice, display_name="Before", model="m0", tools_config={"deny": ["exec"]})
    updated = alice.put(
        f"/v1/agents/{agent['id']}",
        json={"model": "stub-gpt", "provider": provider, "status": "inactive", "context_window": 64000,
              "budget_monthly_cents": 500},
    )
    assert updated.status_code == 200
    after = updated.json()
    assert (after["model"], after["provider"], after["status"]) == ("stub-gpt", provider, "inactive")
    assert after["context_window"] == 64000 and after["budget_monthly_cents"] == 500
    assert after["display_name"] == "Before" and after["tools_config"] == {"deny": ["exec"]}
    assert after["updated_at"] > agent["updated_at"]
    cleared = alice.put(f"/v1/agents/{agent['id']}", json={"budget_monthly_cents": None}).json()
    assert cleared["budget_monthly_cents"] is None


@pytest.mark.parametrize(
    "body",
    [
        {"owner_id": "mallory"},
        {"id": UNKNOWN},
        {"model": "x", "owner_id": "mallory"},
        {"workspace": "/etc"},
        {"restrict_to_workspace": False},
        {"created_at": "2020-01-01T00:00:00Z"},
        {"agent_key": "other"},
    ],
)
def test_mass_assignment_is_rejected_and_changes_nothing(user, database, body):
    alice = user("alice")
    agent = create(alice, model="m0")
    response = alice.put(f"/v1/agents/{agent['id']}", json=body)
    assert response.status_code == 400, response.text
    assert "unknown field" in response.json()["error"] or "additional" in response.json()["error"].lower()
    with database.connect() as conn:
        owner, model, workspace = conn.execute(
            "SELECT owner_id, model, workspace FROM agents WHERE id = %s", (agent["id"],)
        ).fetchone()
    assert (owner, model, workspace) == ("alice", "m0", "")


def test_other_tenants_cannot_see_or_touch_a_private_agent(user, database):
    alice, bob = user(unique("alice")), user(unique("bob"))
    agent = create(alice)
    for ref in (agent["id"], agent["name"]):
        assert bob.get(f"/v1/agents/{ref}").status_code == 404
        assert bob.put(f"/v1/agents/{ref}", json={"model": "stolen"}).status_code == 404
        assert bob.delete(f"/v1/agents/{ref}").status_code == 404
    assert bob.get("/v1/agents").json()["agents"] == []
    assert alice.get(f"/v1/agents/{agent['id']}").json()["model"] == ""


def test_a_shared_agent_is_visible_but_only_its_owner_may_change_it(user, database):
    alice, bob = user(unique("alice")), user(unique("bob"))
    agent = create(alice)
    with database.connect() as conn:
        conn.execute(
            "INSERT INTO agent_shares (agent_id, user_id, granted_by) VALUES (%s, %s, %s)",
            (agent["id"], bob.headers["X-GoClaw-User-Id"], alice.headers["X-GoClaw-User-Id"]),
        )
    assert [a["id"] for a in bob.get("/v1/agents").json()["agents"]] == [agent["id"]]
    assert bob.get(f"/v1/agents/{agent['name']}").status_code == 200
    assert bob.put(f"/v1/agents/{agent['id']}", json={"model": "x"}).status_code == 404
    assert bob.delete(f"/v1/agents/{agent['id']}").status_code == 404


def test_default_agents_are_visible_to_everyone_and_only_admins_set_the_flag(user, client_for):
    admin_as_ops = client_for(TEST_TOKEN, user="ops")
    default = create(admin_as_ops, is_default=True)
    stranger = user(unique("stranger"))
    assert default["id"] in [a["id"] for a in stranger.get("/v1/agents").json()["agents"]]
    assert stranger.get(f"/v1/agents/{default['name']}").status_code == 200
    assert stranger.put(f"/v1/agents/{default['id']}", json={"model": "x"}).status_code == 404

    response = stranger.post("/v1/agents", json={"name": unique("sneaky"), "is_default": True})
    assert response.status_code == 403
    own = create(stranger)
    assert stranger.put(f"/v1/agents/{own['id']}", json={"is_default": True}).status_code == 403
    assert stranger.put(f"/v1/agents/{own['id']}", json={"is_default": False}).status_code == 200
    admin_as_ops.delete(f"/v1/agents/{default['id']}")


def test_admins_see_and_change_every_agent(user, client_for):
    alice = user(unique("alice"))
    agent = create(alice)
    admin = client_for(TEST_TOKEN, user="ops")
    assert agent["id"] in [a["id"] for a in admin.get("/v1/agents", params={"limit": 500}).json()["agents"]]
    changed = admin.put(f"/v1/agents/{agent['id']}", json={"model": "by-admin"}).json()
    assert changed["owner_id"] == alice.headers["X-GoClaw-User-Id"] and changed["model"] == "by-admin"
    assert admin.delete(f"/v1/agents/{agent['id']}").status_code == 200


def test_owners_listed_in_goclaw_owner_ids_are_admins(database, tmp_path, make_key):
    """GOCLAW_OWNER_IDS users see every tenant's agents, even with a non-admin key."""
    import httpx

    from tests.support.processes import start_gateway

    gw = start_gateway(database.dsn, tmp_path / "gw", GOCLAW_OWNER_IDS="root-user")
    try:
        key, _ = make_key("operator.write")

        def headers(user_id: str) -> dict:
            return {"Authorization": f"Bearer {key}", "X-GoClaw-User-Id": user_id}

        created = httpx.post(gw.url + "/v1/agents", json={"name": unique("p")}, headers=headers("u9"))
        assert created.status_code == 201
        listed = httpx.get(gw.url + "/v1/agents", params={"limit": 500}, headers=headers("root-user"))
        assert created.json()["id"] in [a["id"] for a in listed.json()["agents"]]
        assert httpx.get(gw.url + "/v1/agents", headers=headers("u8")).json()["agents"] == []
    finally:
        gw.stop()


def test_delete_is_real_cascades_and_frees_the_slug(user, database):
    alice = user("alice")
    agent = create(alice)
    with database.connect() as conn:
        conn.execute(
            "INSERT INTO agent_shares (agent_id, user_id, granted_by) VALUES (%s, 'bob', 'alice')", (agent["id"],)
        )
    assert alice.delete(f"/v1/agents/{agent['id']}").status_code == 200
    with database.connect() as conn:
        assert conn.execute("SELECT count(*) FROM agents WHERE id = %s", (agent["id"],)).fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM agent_shares WHERE agent_id = %s", (agent["id"],)).fetchone()[0] == 0
    assert alice.get(f"/v1/agents/{agent['id']}").status_code == 404
    assert create(alice, name=agent["name"])["id"] != agent["id"]


def test_changes_write_activity_rows(user, admin):
    alice = user("alice")
    agent = create(alice)
    alice.put(f"/v1/agents/{agent['id']}", json={"model": "m"})
    alice.put(f"/v1/agents/{agent['id']}", json={"model": "m"})  # no change, no row
    alice.delete(f"/v1/agents/{agent['id']}")
    logs = admin.get("/v1/activity", params={"entity_id": agent["id"]}).json()["logs"]
    assert [log["action"] for log in logs] == ["agent.deleted", "agent.updated", "agent.created"]
    assert all(log["entity_type"] == "agent" and log["actor_id"] == "alice" for log in logs)
    assert logs[1]["details"] == {"agent_key": agent["name"], "fields": ["model"]}


def test_viewers_may_read_but_not_write(client_for, make_key, user):
    alice = user("alice")
    agent = create(alice)
    key, _ = make_key("operator.read")
    viewer = client_for(key, user="alice")
    assert viewer.get(f"/v1/agents/{agent['id']}").status_code == 200
    assert viewer.post("/v1/agents", json={"name": unique("v")}).status_code == 403
    assert viewer.put(f"/v1/agents/{agent['id']}", json={"model": "x"}).status_code == 403
    assert viewer.delete(f"/v1/agents/{agent['id']}").status_code == 403


def test_lone_surrogates_are_stored_as_replacement_characters(user):
    alice = user("alice")
    response = alice.post(
        "/v1/agents", content=b'{"display_name": "a\\ud800b", "description": "\\udfff"}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text
    assert (response.json()["display_name"], response.json()["description"]) == ("a\ufffdb", "\ufffd")
