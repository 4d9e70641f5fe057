"""Channel instances (CRUD, masked encrypted credentials, per-type rules, tenancy), contacts and
pending group messages (seeded with the domain's own INSERT statements, as the channel layer would)."""

from __future__ import annotations

import json
import uuid

import pytest

from domain.channels import CONTACT_UPSERT_SQL, PENDING_INSERT_SQL
from gateway.secrets import SecretBox, parse_key
from tests.support.processes import TEST_ENCRYPTION_KEY

BOX = SecretBox(parse_key(TEST_ENCRYPTION_KEY))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def writer_key(make_key):
    key, _ = make_key("operator.write")
    return key


@pytest.fixture
def tenants(client_for, writer_key):
    """Two tenants sharing one operator key, told apart by X-GoClaw-User-Id."""
    alice, bob = unique("alice"), unique("bob")
    return client_for(writer_key, user=alice), client_for(writer_key, user=bob)


@pytest.fixture
def make_agent(database):
    """An agent row owned by `owner` (agents have their own API; only the row matters here)."""

    def make(owner: str) -> tuple[str, str]:
        key = unique("agent")
        with database.connect() as conn:
            row = conn.execute(
                "INSERT INTO agents (agent_key, owner_id) VALUES (%s, %s) RETURNING id", (key, owner)
            ).fetchone()
        return str(row[0]), key

    return make


def owner_of(client) -> str:
    return client.headers["X-GoClaw-User-Id"]


def create(client, agent: str, /, **overrides):
    body = {
        "name": unique("tg"),
        "channel_type": "telegram",
        "agent_id": agent,
        "credentials": {"token": "123456:telegram-secret-token"},
    }
    body.update(overrides)
    return client.post("/v1/channels/instances", json=body)


def stored_credentials(database, instance_id: str) -> str | None:
    with database.connect() as conn:
        return conn.execute("SELECT credentials FROM channel_instances WHERE id = %s", (instance_id,)).fetchone()[0]


# --- instances ---------------------------------------------------------------------------------


def test_create_masks_credentials_and_stores_them_encrypted(tenants, make_agent, database):
    alice, _ = tenants
    agent_id, _ = make_agent(owner_of(alice))
    response = create(alice, agent_id, display_name="Support bot", config={"allow_from": ["42"]})
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["credentials"] == {"token": "***"}
    assert created["has_credentials"] is True
    assert created["agent_id"] == agent_id
    assert created["enabled"] is True
    assert created["config"] == {"allow_from": ["42"]}
    assert created["owner_id"] == owner_of(alice)
    assert "telegram-secret-token" not in response.text
    stored = stored_credentials(database, created["id"])
    assert stored.startswith("aes-gcm:") and "telegram-secret-token" not in stored
    assert BOX.decrypt_json(stored) == {"token": "123456:telegram-secret-token"}
    fetched = alice.get(f"/v1/channels/instances/{created['id']}").json()
    assert fetched == created
    assert "telegram-secret-token" not in alice.get("/v1/channels/instances").text


def test_agent_may_be_named_by_slug(tenants, make_agent):
    alice, _ = tenants
    agent_id, agent_key = make_agent(owner_of(alice))
    created = create(alice, agent_key).json()
    assert created["agent_id"] == agent_id


@pytest.mark.parametrize(
    ("channel_type", "credentials"),
    [
        ("telegram", {"token": "t"}),
        ("discord", {"token": "t"}),
        ("slack", {"bot_token": "xoxb-1", "app_token": "xapp-1"}),
        ("whatsapp", {"bridge_url": "ws://127.0.0.1:3001/ws"}),
        ("zalo_oa", {"token": "t"}),
        ("zalo_personal", {"imei": "i", "cookie": "c", "user_agent": "ua"}),
        ("feishu", {"app_id": "cli_1", "app_secret": "s"}),
    ],
)
def test_each_channel_type_is_created_with_its_required_credentials(tenants, make_agent, channel_type, credentials):
    alice, _ = tenants
    agent_id, _ = make_agent(owner_of(alice))
    response = create(alice, agent_id, name=unique("ch"), channel_type=channel_type, credentials=credentials)
    assert response.status_code == 201, response.text
    assert response.json()["credentials"] == {key: "***" for key in credentials}


@pytest.mark.parametrize(
    ("channel_type", "credentials"),
    [
        ("telegram", {}),
        ("telegram", {"bot_token": "wrong key"}),
        ("slack", {"bot_token": "xoxb-1"}),
        ("whatsapp", {"token": "t"}),
        ("whatsapp", {"bridge_url": "not a url"}),
        ("zalo_personal", {"cookie": "c"}),
        ("feishu", {"app_id": "cli_1"}),
        ("discord", {"token": ""}),
        ("discord", {"token": 42}),
        ("discord", {"token": "***"}),
    ],
)
def test_missing_or_bad_required_credentials_are_400(tenants, make_agent, database, channel_type, credentials):
    alice, _ = tenants
    agent_id, _ = make_agent(owner_of(alice))
    name = unique("bad")
    response = create(alice, agent_id, name=name, channel_type=channel_type, credentials=credentials)
    assert response.status_code == 400, response.text
    assert isinstance(response.json()["error"], str)
    with database.connect() as conn:
        assert conn.execute("SELECT count(*) FROM channel_instances WHERE name = %s", (name,)).fetchone()[0] == 0


@pytest.mark.parametrize(
    "url", ["ftp://bridge", "http://", "http://a:65536", "http://-bad-", "http://a b", "bridge:3001", "http://[::1]/"]
)
def test_bridge_url_must_be_a_web_url(tenants, make_agent, url):
    alice, _ = tenants
    agent_id, _ = make_agent(owner_of(alice))
    response = create(alice, agent_id, name=unique("wa"), channel_type="whatsapp", credentials={"bridge_url": url})
    assert response.status_code == 400, (url, response.text)


def test_bridge_url_is_ssrf_checked_before_connecting(monkeypatch):
    """Where a URL points is decided when the channel layer connects (DNS can change meanwhile)."""
    import asyncio

    from domain.channels import check_outbound
    from gateway.errors import ApiError

    monkeypatch.delenv("GOCLAW_ALLOW_PRIVATE_NETWORKS", raising=False)
    for url in ("http://169.254.169.254/latest", "wss://10.0.0.1/bridge", "ws://localhost:3001"):
        with pytest.raises(ApiError) as refused:
            asyncio.run(check_outbound({"bridge_url": url}))
        assert refused.value.status == 400, url
    monkeypatch.setenv("GOCLAW_ALLOW_PRIVATE_NETWORKS", "127.0.0.0/8")
    asyncio.run(check_outbound({"bridge_url": "ws://127.0.0.1:3001/ws"}))


@pytest.mark.parametrize(
    "overrides",
    [
        {"name": "Not A Slug"},
        {"name": "-leading-dash"},
        {"name": "x" * 101},
        {"name": ""},
        {"channel_type": "irc"},
        {"display_name": "d" * 256},
        {"enabled": "yes"},
        {"config": ["not", "an", "object"]},
        {"credentials": "token"},
        {"unknown_field": 1},
        {"agent_id": ""},
    ],
)
def test_invalid_create_bodies_are_400(tenants, make_agent, overrides):
    alice, _ = tenants
    agent_id, _ = make_agent(owner_of(alice))
    response = create(alice, agent_id, **overrides)
    assert response.status_code == 400, response.text


def test_required_fields_are_400_when_absent(tenants, make_agent):
    alice, _ = tenants
    agent_id, _ = make_agent(owner_of(alice))
    for field in ("name", "channel_type", "agent_id", "credentials"):
        body = {"name": unique("x"), "channel_type": "telegram", "agent_id": agent_id, "credentials": {"token": "t"}}
        del body[field]
        assert alice.post("/v1/channels/instances", json=body).status_code == 400, field


def test_duplicate_name_is_409_even_across_tenants(tenants, make_agent):
    alice, bob = tenants
    alice_agent, _ = make_agent(owner_of(alice))
    bob_agent, _ = make_agent(owner_of(bob))
    name = unique("shared")
    assert create(alice, alice_agent, name=name).status_code == 201
    assert create(bob, bob_agent, name=name).status_code == 409
    assert create(alice, alice_agent, name=name).status_code == 409


def test_binding_an_agent_the_caller_cannot_see_is_409(tenants, make_agent):
    """409, like a foreign-key violation: a 404 would say the instance URL itself is missing."""
    alice, bob = tenants
    bobs_agent, bobs_key = make_agent(owner_of(bob))
    for ref in (bobs_agent, bobs_key, str(uuid.uuid4()), "no-such-agent"):
        response = create(alice, ref)
        assert response.status_code == 409, ref
        assert response.json()["error"] == f"agent not found: {ref}"


def test_update_merges_credentials_key_by_key(tenants, make_agent, database):
    alice, _ = tenants
    agent_id, _ = make_agent(owner_of(alice))
    created = create(
        alice, agent_id, channel_type="slack",
        credentials={"bot_token": "xoxb-old", "app_token": "xapp-old", "user_token": "xoxp-old"},
    ).json()
    response = alice.put(
        f"/v1/channels/instances/{created['id']}",
        json={"credentials": {"bot_token": "***", "app_token": "xapp-new", "user_token": None, "signing": "s"}},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "updated"
    assert body["instance"]["credentials"] == {"bot_token": "***", "app_token": "***", "signing": "***"}
    assert "xapp-new" not in response.text
    assert BOX.decrypt_json(stored_credentials(database, created["id"])) == {
        "bot_token": "xoxb-old", "app_token": "xapp-new", "signing": "s",
    }


def test_update_cannot_remove_a_required_credential(tenants, make_agent, database):
    alice, _ = tenants
    agent_id, _ = make_agent(owner_of(alice))
    created = create(alice, agent_id).json()
    before = stored_credentials(database, created["id"])
    # the request is well formed, it just does not fit what this instance stores: 409
    response = alice.put(f"/v1/channels/instances/{created['id']}", json={"credentials": {"token": None}})
    assert response.status_code == 409
    assert stored_credentials(database, created["id"]) == before
    switched = alice.put(f"/v1/channels/instances/{created['id']}", json={"channel_type": "feishu"})
    assert switched.status_code == 409  # feishu needs app_id and app_secret
    with_keys = {"channel_type": "feishu", "credentials": {"app_id": "cli_1", "app_secret": "s"}}
    assert alice.put(f"/v1/channels/instances/{created['id']}", json=with_keys).status_code == 200


def test_update_changes_only_the_given_fields(tenants, make_agent):
    alice, _ = tenants
    agent_id, _ = make_agent(owner_of(alice))
    other_agent, other_key = make_agent(owner_of(alice))
    created = create(alice, agent_id, display_name="Before", config={"a": 1}).json()
    response = alice.put(
        f"/v1/channels/instances/{created['id']}",
        json={"enabled": False, "config": {"b": 2}, "agent_id": other_key},
    )
    updated = response.json()["instance"]
    assert updated["enabled"] is False
    assert updated["config"] == {"b": 2}
    assert updated["agent_id"] == other_agent
    assert updated["display_name"] == "Before"
    assert updated["name"] == created["name"]
    assert updated["credentials"] == {"token": "***"}
    assert alice.put(f"/v1/channels/instances/{created['id']}", json={}).status_code == 200


def test_update_to_a_taken_name_is_409_and_bad_bodies_400(tenants, make_agent):
    alice, _ = tenants
    agent_id, _ = make_agent(owner_of(alice))
    first = create(alice, agent_id).json()
    second = create(alice, agent_id).json()
    url = f"/v1/channels/instances/{second['id']}"
    assert alice.put(url, json={"name": first["name"]}).status_code == 409
    assert alice.put(url, json={"name": "Bad Name"}).status_code == 400
    assert alice.put(url, json={"surprise": True}).status_code == 400
    assert alice.put(url, json={"credentials": {"token": 5}}).status_code == 400
    assert alice.put(url, json={"credentials": {"bridge_url": "gopher://x"}}).status_code == 400
    assert alice.put(url, json={"agent_id": str(uuid.uuid4())}).status_code == 409


def test_other_tenants_get_404_and_admins_see_everything(tenants, make_agent, admin):
    alice, bob = tenants
    agent_id, _ = make_agent(owner_of(alice))
    created = create(alice, agent_id).json()
    url = f"/v1/channels/instances/{created['id']}"
    assert bob.get(url).status_code == 404
    assert bob.put(url, json={"enabled": False}).status_code == 404
    assert bob.delete(url).status_code == 404
    assert created["id"] not in {i["id"] for i in bob.get("/v1/channels/instances").json()["instances"]}
    assert alice.get(url).json()["enabled"] is True
    assert admin.get(url).status_code == 200
    assert created["id"] in {
        i["id"] for i in admin.get("/v1/channels/instances", params={"search": created["name"]}).json()["instances"]
    }


def test_viewers_cannot_change_instances(client_for, make_key, tenants, make_agent):
    alice, _ = tenants
    agent_id, _ = make_agent(owner_of(alice))
    created = create(alice, agent_id).json()
    viewer_key, _ = make_key("operator.read")
    viewer = client_for(viewer_key, user=owner_of(alice))
    assert viewer.get(f"/v1/channels/instances/{created['id']}").status_code == 200
    assert create(viewer, agent_id).status_code == 403
    assert viewer.delete(f"/v1/channels/instances/{created['id']}").status_code == 403


def test_delete_removes_and_audits_every_change(tenants, make_agent, admin):
    alice, _ = tenants
    agent_id, _ = make_agent(owner_of(alice))
    created = create(alice, agent_id).json()
    url = f"/v1/channels/instances/{created['id']}"
    alice.put(url, json={"display_name": "x"})
    response = alice.delete(url)
    assert response.status_code == 200
    assert response.json() == {"status": "deleted", "id": created["id"]}
    assert alice.get(url).status_code == 404
    assert alice.delete(url).status_code == 404
    logs = admin.get("/v1/activity", params={"entity_id": created["id"]}).json()["logs"]
    assert [log["action"] for log in logs] == [
        "channel_instance.deleted", "channel_instance.updated", "channel_instance.created",
    ]
    assert all("telegram-secret-token" not in json.dumps(log) for log in logs)


def test_ids_must_be_uuids(tenants):
    alice, _ = tenants
    assert alice.get("/v1/channels/instances/not-a-uuid").status_code == 400
    assert alice.get(f"/v1/channels/instances/{uuid.uuid4()}").status_code == 404


def test_list_is_ordered_paginated_and_searchable(tenants, make_agent):
    alice, _ = tenants
    agent_id, _ = make_agent(owner_of(alice))
    tag = uuid.uuid4().hex[:6]
    names = [f"c-{tag}-{i}" for i in range(3)]
    for name in reversed(names):
        create(alice, agent_id, name=name, channel_type="discord", credentials={"token": "t"})
    listed = alice.get("/v1/channels/instances", params={"search": tag}).json()
    assert [i["name"] for i in listed["instances"]] == names
    assert listed["total"] == 3
    second = alice.get("/v1/channels/instances", params={"search": tag, "limit": 1, "offset": 1}).json()
    assert [i["name"] for i in second["instances"]] == names[1:2]
    assert second["total"] == 3 and second["limit"] == 1 and second["offset"] == 1
    past_end = alice.get("/v1/channels/instances", params={"search": tag, "offset": 10}).json()
    assert past_end["instances"] == [] and past_end["total"] == 3
    by_type = alice.get("/v1/channels/instances", params={"channel_type": "telegram", "search": tag}).json()
    assert by_type["instances"] == []
    assert alice.get("/v1/channels/instances", params={"search": "%"}).json()["instances"] == []
    for bad in ({"limit": 0}, {"limit": 201}, {"offset": -1}, {"channel_type": "irc"}, {"nope": 1}):
        assert alice.get("/v1/channels/instances", params=bad).status_code == 400, bad


# --- contacts ----------------------------------------------------------------------------------


def seed_contact(database, instance_id: str, sender_id: str, **fields) -> None:
    params = {
        "instance_id": instance_id, "sender_id": sender_id, "user_id": None, "display_name": None,
        "username": None, "avatar_url": None, "peer_kind": None, "metadata": None, **fields,
    }
    with database.connect() as conn:
        conn.execute(CONTACT_UPSERT_SQL, params)


def test_contacts_are_listed_for_the_instance_owner_newest_first(tenants, make_agent, database, admin):
    alice, bob = tenants
    agent_id, _ = make_agent(owner_of(alice))
    instance = create(alice, agent_id).json()
    seed_contact(database, instance["id"], "1001", display_name="Ann Lee", username="ann", peer_kind="direct")
    seed_contact(database, instance["id"], "1002", display_name="Bo_b", username="bob", peer_kind="group")
    listed = alice.get("/v1/contacts", params={"channel_instance_id": instance["id"]}).json()
    assert [c["sender_id"] for c in listed["contacts"]] == ["1002", "1001"]
    assert listed["total"] == 2
    first = listed["contacts"][1]
    assert first["channel_type"] == "telegram" and first["channel_instance"] == instance["name"]
    assert first["display_name"] == "Ann Lee" and first["peer_kind"] == "direct"
    assert bob.get("/v1/contacts", params={"channel_instance_id": instance["id"]}).json()["contacts"] == []
    assert admin.get("/v1/contacts", params={"channel_instance_id": instance["id"]}).json()["total"] == 2


def test_contacts_search_filters_and_upsert_rules(tenants, make_agent, database):
    alice, _ = tenants
    agent_id, _ = make_agent(owner_of(alice))
    instance = create(alice, agent_id).json()
    only = {"channel_instance_id": instance["id"]}
    seed_contact(database, instance["id"], "u-77", display_name="Carol", username="carol_c", peer_kind="direct")
    seed_contact(database, instance["id"], "u-88", display_name="Dave", username="dave")
    # a later sighting with empty fields keeps what was known; non-empty ones replace
    seed_contact(database, instance["id"], "u-77", display_name="", username="carol2")

    def senders(**params):
        response = alice.get("/v1/contacts", params={**only, **params})
        assert response.status_code == 200, response.text
        return sorted(c["sender_id"] for c in response.json()["contacts"])

    assert senders(search="CAROL") == ["u-77"]
    assert senders(search="carol2") == ["u-77"]
    assert senders(search="88") == ["u-88"]
    assert senders(search="_") == []  # wildcards are matched literally
    assert senders(peer_kind="direct") == ["u-77"]
    assert senders(channel_type="discord") == []
    carol = next(c for c in alice.get("/v1/contacts", params=only).json()["contacts"] if c["sender_id"] == "u-77")
    assert carol["display_name"] == "Carol" and carol["username"] == "carol2"
    assert alice.get("/v1/contacts", params={"peer_kind": "crowd"}).status_code == 400
    assert alice.get("/v1/contacts", params={"limit": 500}).status_code == 400
    assert alice.get("/v1/contacts", params={"channel_instance_id": "nope"}).status_code == 400
    assert alice.get("/v1/contacts", params={"channel_instance_id": ""}).status_code == 400


# --- pending messages --------------------------------------------------------------------------


def seed_pending(database, instance_id: str, key: str, body: str, **fields) -> None:
    params = {
        "instance_id": instance_id, "history_key": key, "group_title": None, "sender": "Ann",
        "sender_id": "1001", "body": body, "platform_msg_id": "", "is_summary": False, **fields,
    }
    with database.connect() as conn:
        conn.execute(PENDING_INSERT_SQL, params)


def test_pending_groups_summarise_buffered_messages(tenants, make_agent, database, admin):
    alice, bob = tenants
    agent_id, _ = make_agent(owner_of(alice))
    instance = create(alice, agent_id).json()
    seed_pending(database, instance["id"], "group:-100", "hello", group_title="Team chat")
    seed_pending(database, instance["id"], "group:-100", "anyone?")
    seed_pending(database, instance["id"], "group:-200", "[summary] earlier talk", is_summary=True)
    groups = alice.get("/v1/pending-messages", params={"channel": instance["name"]}).json()["groups"]
    by_key = {g["group_key"]: g for g in groups}
    assert set(by_key) == {"group:-100", "group:-200"}
    team = by_key["group:-100"]
    assert team["count"] == 2 and team["title"] == "Team chat" and team["has_summary"] is False
    assert team["channel"] == instance["name"] and team["channel_instance_id"] == instance["id"]
    assert by_key["group:-200"]["has_summary"] is True and by_key["group:-200"]["title"] is None
    assert groups[0]["group_key"] == "group:-200"  # most recent activity first
    assert instance["id"] not in {g["channel_instance_id"] for g in bob.get("/v1/pending-messages").json()["groups"]}
    assert bob.get("/v1/pending-messages", params={"channel": instance["name"]}).status_code == 404
    assert instance["id"] in {g["channel_instance_id"] for g in admin.get("/v1/pending-messages").json()["groups"]}


def test_clearing_a_pending_group(tenants, make_agent, database, admin):
    alice, bob = tenants
    agent_id, _ = make_agent(owner_of(alice))
    instance = create(alice, agent_id).json()
    seed_pending(database, instance["id"], "g1", "one")
    seed_pending(database, instance["id"], "g1", "two")
    seed_pending(database, instance["id"], "g2", "stays")
    target = {"channel": instance["name"], "key": "g1"}
    assert bob.delete("/v1/pending-messages", params=target).status_code == 404
    response = alice.delete("/v1/pending-messages", params=target)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "deleted": 2}
    assert alice.delete("/v1/pending-messages", params=target).json() == {"status": "ok", "deleted": 0}
    by_id = alice.delete("/v1/pending-messages", params={"channel": instance["id"], "key": "g2"})
    assert by_id.json()["deleted"] == 1
    assert alice.get("/v1/pending-messages", params={"channel": instance["name"]}).json()["groups"] == []
    logs = admin.get("/v1/activity", params={"entity_id": instance["id"], "action": "pending_messages.cleared"})
    assert len(logs.json()["logs"]) == 2


@pytest.mark.parametrize("params", [{}, {"channel": "x"}, {"key": "k"}, {"channel": "", "key": "k"}])
def test_clearing_needs_channel_and_key(tenants, params):
    alice, _ = tenants
    assert alice.delete("/v1/pending-messages", params=params).status_code == 400


def test_deleting_an_instance_removes_its_contacts_and_pending_messages(tenants, make_agent, database):
    alice, _ = tenants
    agent_id, _ = make_agent(owner_of(alice))
    instance = create(alice, agent_id).json()
    seed_contact(database, instance["id"], "s1", display_name="Zed")
    seed_pending(database, instance["id"], "g", "hi")
    assert alice.delete(f"/v1/channels/instances/{instance['id']}").status_code == 200
    with database.connect() as conn:
        for table in ("channel_contacts", "channel_pending_messages"):
            count = conn.execute(
                f"SELECT count(*) FROM {table} WHERE channel_instance_id = %s", (instance["id"],)
            ).fetchone()[0]
            assert count == 0, table
