"""Tenancy (BOLA): user B — a non-admin operator key with `X-GoClaw-User-Id: bob` — tries to read,
list, search, change, delete and use user A's objects, by id and by slug. Every attempt is a 404 or
an empty answer (never a 403 that would confirm the id exists), and A's objects are unchanged.

What tenancy means per resource (README "Security"):
* tenant-owned (owner = the X-GoClaw-User-Id that created it): agents, channel instances and their
  contacts and pending messages, media, workspace files, traces/usage/activity/sessions of the
  tenant's runs, personal memory documents and KG entities, custom tools, MCP servers, skills;
* shared (owner ''): created by an admin (custom tools) or by a tenant with `shared`/`is_default`;
  every tenant reads them, only their owner or an admin changes them;
* gateway-wide: providers (every tenant reads them with the key masked; writes need an operator,
  and a non-admin cannot point a stored key at another host) and API keys (admin only).
"""

from __future__ import annotations

import io
import time
import uuid
import zipfile

import httpx
import pytest

from domain.channels import CONTACT_UPSERT_SQL, PENDING_INSERT_SQL
from domain.workspace import safe_name
from tests.support.client import ApiClient
from tests.support.processes import TEST_TOKEN, wait_until

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
    b"\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82"
)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def skill_zip(slug: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("SKILL.md", f"---\nname: {slug}\ndescription: private recipe\nslug: {slug}\n---\nSecret.\n")
    return buffer.getvalue()


class World:
    """Alice's objects of every kind, and Bob, who should never reach them."""


@pytest.fixture(scope="module")
def world(gateway, openapi, database, llm_stub):
    clients: list[ApiClient] = []

    def client(token: str | None, user: str | None = None) -> ApiClient:
        made = ApiClient(gateway.url, openapi, token=token)
        if user is not None:
            made.as_user(user)
        clients.append(made)
        return made

    w = World()
    admin = client(TEST_TOKEN)
    w.admin = admin

    def key(*scopes: str) -> str:
        response = admin.post("/v1/api-keys", json={"name": "bola", "scopes": list(scopes)})
        assert response.status_code == 201, response.text
        return response.json()["key"]

    w.alice_id, w.bob_id = unique("alice"), unique("bob")
    w.alice = client(key("operator.write"), w.alice_id)
    w.bob = client(key("operator.write", "operator.read"), w.bob_id)
    w.bob_viewer = client(key("operator.read"), w.bob_id)
    w.nobody = client(key("operator.write"))  # an operator that names no tenant at all
    w.as_alice_admin = client(TEST_TOKEN, w.alice_id)

    provider = admin.post("/v1/providers", json={
        "name": unique("bola"), "provider_type": "openai_compat", "api_base": llm_stub.url + "/v1",
        "api_key": "sk-bola-secret-0123456789",
    })
    assert provider.status_code == 201, provider.text
    w.provider = provider.json()
    agent = w.alice.post("/v1/agents", json={"name": unique("alices-bot"), "provider": w.provider["name"],
                                             "model": "gpt-4o-mini", "system_prompt": "Alice's private prompt."})
    assert agent.status_code == 201, agent.text
    w.agent = agent.json()
    # a default agent (visible to every tenant) owned by alice: her personal data on it stays hers
    default = w.as_alice_admin.post("/v1/agents", json={"name": unique("shared-bot"), "provider": w.provider["name"],
                                                        "model": "gpt-4o-mini", "is_default": True})
    assert default.status_code == 201, default.text
    w.default_agent = default.json()

    # a chat run: a session, a trace, usage
    w.session_key = unique("alice-session")
    reply = w.alice.post("/v1/chat/completions", headers={"X-GoClaw-Session-Key": w.session_key},
                         json={"model": f"goclaw:{w.agent['name']}",
                               "messages": [{"role": "user", "content": "alice's private question"}]})
    assert reply.status_code == 200, reply.text

    def traced() -> bool:
        return admin.get("/v1/traces", params={"agent_id": w.agent["id"]}).json()["total"] >= 1

    assert wait_until(traced, timeout=10)
    w.trace = admin.get("/v1/traces", params={"agent_id": w.agent["id"]}).json()["traces"][0]

    instance = w.alice.post("/v1/channels/instances", json={
        "name": unique("alice-tg"), "channel_type": "telegram", "agent_id": w.agent["id"],
        "credentials": {"token": "123456:alice-telegram-secret"},
    })
    assert instance.status_code == 201, instance.text
    w.instance = instance.json()
    with database.connect() as conn:
        conn.execute(CONTACT_UPSERT_SQL, {
            "instance_id": w.instance["id"], "sender_id": "alice-contact-42", "user_id": "", "display_name": "Zed",
            "username": "zed", "avatar_url": "", "peer_kind": "direct", "metadata": "{}",
        })
        conn.execute(PENDING_INSERT_SQL, {
            "instance_id": w.instance["id"], "history_key": "group:-100", "group_title": "Alice team",
            "sender": "Zed", "sender_id": "42", "body": "private group chatter", "platform_msg_id": "m1",
            "is_summary": False,
        })

    media = w.alice.post("/v1/media/upload", files={"file": ("alice.png", PNG, "image/png")})
    assert media.status_code == 200, media.text
    w.media = media.json()

    workspace = gateway.log_path.parent / "data" / "workspace" / "users" / safe_name(w.alice_id)
    workspace.mkdir(parents=True, exist_ok=True)
    (workspace / "alice-diary.txt").write_text("dear diary")

    doc = w.alice.put(f"/v1/agents/{w.default_agent['id']}/memory/documents/notes%2Falice-private.md",
                      json={"content": "The vault code is zanzibarquux."})
    assert doc.status_code == 201, doc.text
    own_doc = w.alice.put(f"/v1/agents/{w.agent['id']}/memory/documents/plans.md",
                          json={"content": "Alice plans qwertyplum."})
    assert own_doc.status_code == 201, own_doc.text

    entity = w.alice.post(f"/v1/agents/{w.default_agent['id']}/kg/entities",
                          json={"name": "Alice Secret Contact", "entity_type": "person"})
    assert entity.status_code in (200, 201), entity.text
    w.entity = entity.json()["entity"]
    own_entity = w.alice.post(f"/v1/agents/{w.agent['id']}/kg/entities",
                              json={"name": "Alice Project", "entity_type": "project"})
    assert own_entity.status_code in (200, 201), own_entity.text
    w.own_entity = own_entity.json()["entity"]

    tool = w.as_alice_admin.post("/v1/tools/custom", json={
        "name": unique("alice-tool").replace("-", "_"), "description": "alice's tool", "command": ["echo", "hi"],
        "agent_id": w.agent["id"], "env": {"ALICE_TOKEN": "alice-env-secret"},
    })
    assert tool.status_code == 201, tool.text
    w.tool = tool.json()

    server = w.alice.post("/v1/mcp/servers", json={
        "name": unique("alice-mcp"), "transport": "streamable-http", "url": "http://127.0.0.1:9/mcp",
        "headers": {"Authorization": "Bearer alice-mcp-secret"},
    })
    assert server.status_code == 201, server.text
    w.server = server.json()

    w.skill_slug = unique("alice-skill")
    skill = w.alice.post("/v1/skills", files={"file": ("s.zip", skill_zip(w.skill_slug), "application/zip")})
    assert skill.status_code == 201, skill.text
    w.skill = skill.json()

    yield w
    for made in clients:
        made.close()


def assert_absent(listing: list[dict] | dict, *needles: str) -> None:
    text = str(listing)
    for needle in needles:
        assert needle not in text, f"{needle!r} leaked: {text[:500]}"


# --- agents --------------------------------------------------------------------------------------


def test_bob_cannot_see_alices_agent_by_id_slug_or_listing(world):
    for ref in (world.agent["id"], world.agent["name"]):
        assert world.bob.get(f"/v1/agents/{ref}").status_code == 404
        assert world.bob_viewer.get(f"/v1/agents/{ref}").status_code == 404
        assert world.nobody.get(f"/v1/agents/{ref}").status_code == 404
    assert_absent(world.bob.get("/v1/agents", params={"limit": 500}).json(), world.agent["id"])


def test_bob_cannot_change_delete_or_run_alices_agent(world):
    for ref in (world.agent["id"], world.agent["name"]):
        assert world.bob.put(f"/v1/agents/{ref}", json={"system_prompt": "pwned"}).status_code == 404
        assert world.bob.delete(f"/v1/agents/{ref}").status_code == 404
        assert world.bob.post(f"/v1/agents/{ref}/wake", json={"message": "hi"}).status_code == 404
        chat = {"model": f"goclaw:{ref}", "messages": [{"role": "user", "content": "hi"}]}
        assert world.bob.post("/v1/chat/completions", json=chat).status_code == 404
        via_header = {"model": "whatever", "messages": [{"role": "user", "content": "hi"}]}
        assert world.bob.post("/v1/chat/completions", json=via_header,
                              headers={"X-GoClaw-Agent-Id": ref}).status_code == 404
    after = world.alice.get(f"/v1/agents/{world.agent['id']}").json()
    assert after["system_prompt"] == "Alice's private prompt."


def test_a_default_agent_is_usable_by_bob_but_only_its_owner_or_an_admin_changes_it(world):
    ref = world.default_agent["id"]
    assert world.bob.get(f"/v1/agents/{ref}").status_code == 200
    assert world.bob.put(f"/v1/agents/{ref}", json={"system_prompt": "pwned"}).status_code in (403, 404)
    assert world.bob.delete(f"/v1/agents/{ref}").status_code in (403, 404)
    assert world.alice.get(f"/v1/agents/{ref}").json()["system_prompt"] in (None, "")


def test_bob_cannot_bind_his_objects_to_alices_agent(world):
    bind = world.bob.post("/v1/channels/instances", json={
        "name": unique("bob-tg"), "channel_type": "telegram", "agent_id": world.agent["id"],
        "credentials": {"token": "1:x"}})
    assert bind.status_code in (404, 409)
    server = world.bob.post("/v1/mcp/servers", json={
        "name": unique("bob-mcp"), "transport": "streamable-http", "url": "http://127.0.0.1:9/mcp",
        "agent_ids": [world.agent["id"]]})
    assert server.status_code in (404, 409)


# --- chat sessions, traces, usage, activity ----------------------------------------------------


def test_bob_cannot_write_into_alices_session_through_chat(world, database):
    chat = {"model": f"goclaw:{world.default_agent['name']}",
            "messages": [{"role": "user", "content": "bob injects this"}]}
    response = world.bob.post("/v1/chat/completions", json=chat, headers={"X-GoClaw-Session-Key": world.session_key})
    assert response.status_code in (400, 404)
    time.sleep(0.5)  # the transcript writer flushes in batches; nothing of bob's may arrive
    with database.connect() as conn:
        contents = [r[0] for r in conn.execute(
            "SELECT m.content FROM session_messages m JOIN sessions s ON s.id = m.session_id "
            "WHERE s.session_key = %s", (world.session_key,))]
    assert "alice's private question" in contents and "bob injects this" not in contents


def test_bob_cannot_read_alices_traces_usage_or_costs(world):
    trace_id = world.trace["id"]
    assert world.bob.get(f"/v1/traces/{trace_id}").status_code == 404
    assert_absent(world.bob.get("/v1/traces", params={"limit": 200}).json(), trace_id)
    by_agent = world.bob.get("/v1/traces", params={"agent_id": world.agent["id"]}).json()
    assert by_agent["total"] == 0
    by_user = world.bob.get("/v1/traces", params={"user_id": world.alice_id}).json()
    assert by_user["total"] == 0
    by_session = world.bob.get("/v1/traces", params={"session_key": world.session_key}).json()
    assert by_session["total"] == 0
    for period in ("24h", "7d"):
        summary = world.bob.get("/v1/usage/summary", params={"period": period, "agent_id": world.agent["id"]})
        assert summary.status_code in (200, 404)
        if summary.status_code == 200:
            assert summary.json()["current"]["requests"] == 0
    series = world.bob.get("/v1/usage/timeseries", params={"period": "1h", "agent_id": world.agent["id"]}).json()
    assert all(point["request_count"] == 0 for point in series["points"])
    everyone = world.admin.get("/v1/usage/timeseries", params={"period": "1h", "agent_id": world.agent["id"]}).json()
    assert sum(point["request_count"] for point in everyone["points"]) >= 1  # there was something to hide
    costs = world.bob.get("/v1/costs/summary", params={"agent_id": world.agent["id"]}).json()
    assert costs["rows"] == [] and costs["total_cost"] == 0


def test_bob_sees_only_his_own_activity(world):
    logs = world.bob.get("/v1/activity", params={"limit": 200}).json()["logs"]
    assert all(log["actor_id"] == world.bob_id for log in logs)
    for entity in (world.agent["id"], world.instance["id"], world.server["id"]):
        assert world.bob.get("/v1/activity", params={"entity_id": entity}).json()["logs"] == []
    assert world.bob.get("/v1/activity", params={"actor_id": world.alice_id}).json()["logs"] == []


# --- channels, contacts, pending messages ------------------------------------------------------


def test_bob_cannot_reach_alices_channel_instance(world):
    ident, name = world.instance["id"], world.instance["name"]
    assert world.bob.get(f"/v1/channels/instances/{ident}").status_code == 404
    assert world.bob.put(f"/v1/channels/instances/{ident}", json={"enabled": False}).status_code == 404
    assert world.bob.delete(f"/v1/channels/instances/{ident}").status_code == 404
    assert_absent(world.bob.get("/v1/channels/instances", params={"search": name}).json(), ident)
    assert world.alice.get(f"/v1/channels/instances/{ident}").json()["enabled"] is True


def test_bob_cannot_see_alices_contacts_or_pending_messages(world):
    ident, name = world.instance["id"], world.instance["name"]
    assert_absent(world.bob.get("/v1/contacts", params={"search": "zed"}).json(), "alice-contact-42")
    assert world.bob.get("/v1/contacts", params={"channel_instance_id": ident}).json()["contacts"] == []
    assert_absent(world.bob.get("/v1/pending-messages").json(), ident)
    assert world.bob.get("/v1/pending-messages", params={"channel": name}).status_code == 404
    assert world.bob.delete("/v1/pending-messages", params={"channel": name, "key": "group:-100"}).status_code == 404
    assert world.bob.delete("/v1/pending-messages", params={"channel": ident, "key": "group:-100"}).status_code == 404
    groups = world.alice.get("/v1/pending-messages", params={"channel": name}).json()["groups"]
    assert [g["count"] for g in groups] == [1]


# --- media and storage ---------------------------------------------------------------------------


def test_bob_cannot_fetch_alices_media(world, gateway):
    path = world.media["path"]
    assert world.bob.get(path).status_code == 404
    bob_key = world.bob.headers["Authorization"].split(" ", 1)[1]
    query = httpx.get(gateway.url + path, params={"token": bob_key}, headers={"X-GoClaw-User-Id": world.bob_id})
    assert query.status_code == 404
    assert world.alice.get(path).content == PNG


def test_bob_cannot_list_alices_workspace(world):
    listing = world.bob.get("/v1/storage/files", params={"depth": 3}).json()
    assert_absent(listing, "alice-diary.txt", safe_name(world.alice_id))
    for sneaky in (f"../{safe_name(world.alice_id)}", f"../../users/{safe_name(world.alice_id)}"):
        assert world.bob.get("/v1/storage/files", params={"path": sneaky}).status_code == 400
    assert "alice-diary.txt" in str(world.alice.get("/v1/storage/files").json())


# --- memory and knowledge graph ----------------------------------------------------------------


def test_bob_cannot_read_search_or_delete_alices_memory(world):
    shared_agent, own_agent = world.default_agent, world.agent
    doc = f"/v1/agents/{shared_agent['id']}/memory/documents/notes%2Falice-private.md"
    assert world.bob.get(doc).status_code == 404
    assert world.bob.get(doc.replace("/documents/", "/chunks/")).status_code == 404
    assert world.bob.delete(doc).status_code == 404
    found = world.bob.post(f"/v1/agents/{shared_agent['id']}/memory/search", json={"query": "vault zanzibarquux"})
    assert found.status_code == 200 and found.json()["results"] == []
    spoofed = world.bob.post(f"/v1/agents/{shared_agent['id']}/memory/search",
                             json={"query": "vault zanzibarquux", "user_id": world.alice_id})
    assert spoofed.status_code in (200, 400, 403) and "zanzibarquux" not in spoofed.text
    for params in ({}, {"agent_id": shared_agent["id"]}, {"user_id": world.alice_id}):
        assert_absent(world.bob.get("/v1/memory/documents", params=params).json(), "alice-private.md", "plans.md")
    # her own agent is invisible altogether
    assert world.bob.get(f"/v1/agents/{own_agent['id']}/memory/documents/plans.md").status_code == 404
    assert world.bob.post(f"/v1/agents/{own_agent['id']}/memory/search", json={"query": "plans"}).status_code == 404
    assert world.bob.post(f"/v1/agents/{own_agent['id']}/memory/reindex").status_code == 404
    assert world.bob.get("/v1/memory/documents", params={"agent_id": own_agent["id"]}).status_code == 404
    assert world.bob.put(f"/v1/agents/{own_agent['id']}/memory/documents/plans.md",
                         json={"content": "overwritten"}).status_code == 404
    assert "qwertyplum" in world.alice.get(f"/v1/agents/{own_agent['id']}/memory/documents/plans.md").text


def test_bob_cannot_read_traverse_link_or_delete_alices_entities(world):
    base = f"/v1/agents/{world.default_agent['id']}/kg"
    ident = world.entity["id"]
    assert world.bob.get(f"{base}/entities/{ident}").status_code == 404
    assert world.bob.delete(f"{base}/entities/{ident}").status_code == 404
    assert world.bob.post(f"{base}/traverse", json={"entity_id": ident}).status_code == 404
    mine = world.bob.post(f"{base}/entities", json={"name": "Bob Thing", "entity_type": "thing"}).json()["entity"]
    link = world.bob.post(f"{base}/relations", json={
        "source_entity_id": mine["id"], "relation_type": "knows", "target_entity_id": ident})
    assert link.status_code in (404, 409)
    for params in ({"q": "alice secret"}, {}, {"user_id": world.alice_id}):
        assert_absent(world.bob.get(f"{base}/entities", params=params).json(), ident)
    own = f"/v1/agents/{world.agent['id']}/kg"
    assert world.bob.get(f"{own}/entities/{world.own_entity['id']}").status_code == 404
    assert world.bob.get(f"{own}/entities").status_code == 404
    assert world.bob.post(f"{own}/entities", json={"name": "X", "entity_type": "person"}).status_code == 404
    assert world.alice.get(f"{base}/entities/{ident}").status_code == 200


# --- tools, MCP servers, skills ------------------------------------------------------------------


def test_bob_cannot_see_or_change_alices_custom_tool(world):
    ident = world.tool["id"]
    assert world.bob.get(f"/v1/tools/custom/{ident}").status_code == 404
    assert world.bob.delete(f"/v1/tools/custom/{ident}").status_code == 404
    assert world.bob.put(f"/v1/tools/custom/{ident}", json={"command": ["id"]}).status_code in (403, 404)
    assert_absent(world.bob.get("/v1/tools/custom", params={"search": world.tool["name"]}).json(), ident)
    assert_absent(world.bob.get("/v1/tools/custom", params={"agent_id": world.agent["id"]}).json(), ident)
    assert world.alice.get(f"/v1/tools/custom/{ident}").json()["command"] == ["echo", "hi"]


def test_bob_cannot_see_change_or_probe_alices_mcp_server(world):
    ident = world.server["id"]
    assert world.bob.get(f"/v1/mcp/servers/{ident}").status_code == 404
    assert world.bob.get(f"/v1/mcp/servers/{ident}/tools").status_code == 404
    assert world.bob.put(f"/v1/mcp/servers/{ident}", json={"url": "https://attacker.example/mcp"}).status_code == 404
    assert world.bob.delete(f"/v1/mcp/servers/{ident}").status_code == 404
    assert_absent(world.bob.get("/v1/mcp/servers").json(), ident)
    assert world.alice.get(f"/v1/mcp/servers/{ident}").json()["url"] == "http://127.0.0.1:9/mcp"


def test_bob_cannot_see_change_or_delete_alices_skill(world):
    for ref in (world.skill["id"], world.skill_slug):
        assert world.bob.get(f"/v1/skills/{ref}").status_code == 404
        assert world.bob.put(f"/v1/skills/{ref}", json={"enabled": False}).status_code == 404
        assert world.bob.delete(f"/v1/skills/{ref}").status_code == 404
    assert_absent(world.bob.get("/v1/skills").json(), world.skill["id"], world.skill_slug)
    # uploading the same slug makes bob his own skill, never a new version of alice's
    again = world.bob.post("/v1/skills", files={"file": ("s.zip", skill_zip(world.skill_slug), "application/zip")})
    assert again.status_code == 201 and again.json()["owner_id"] == world.bob_id and again.json()["version"] == 1
    assert world.alice.get(f"/v1/skills/{world.skill['id']}").json()["enabled"] is True
    world.bob.delete(f"/v1/skills/{again.json()['id']}")


# --- objects without a tenant: what an operator that names no user may do -----------------------


def test_an_operator_without_a_user_id_cannot_create_shared_objects_that_reach_every_tenant(world):
    server = world.nobody.post("/v1/mcp/servers", json={
        "name": unique("global-mcp"), "transport": "streamable-http", "url": "http://127.0.0.1:9/mcp"})
    assert server.status_code == 400, server.text
    skill = world.nobody.post("/v1/skills", files={"file": ("s.zip", skill_zip(unique("global")),
                                                             "application/zip")})
    assert skill.status_code == 400, skill.text


def test_an_operator_without_a_user_id_cannot_change_shared_objects(world):
    shared_server = world.admin.post("/v1/mcp/servers", json={
        "name": unique("shared-mcp"), "transport": "streamable-http", "url": "http://127.0.0.1:9/mcp",
        "headers": {"Authorization": "Bearer admin-secret"}}).json()
    shared_skill = world.admin.post("/v1/skills", files={"file": ("s.zip", skill_zip(unique("shared")),
                                                                  "application/zip")}).json()
    shared_tool = world.admin.post("/v1/tools/custom", json={
        "name": unique("shared_tool").replace("-", "_"), "command": ["echo", "shared"]}).json()
    try:
        for caller in (world.nobody, world.bob):
            changed = caller.put(f"/v1/mcp/servers/{shared_server['id']}", json={"url": "https://attacker.example/"})
            assert changed.status_code == 403, changed.text
            assert caller.delete(f"/v1/mcp/servers/{shared_server['id']}").status_code == 403
            assert caller.put(f"/v1/skills/{shared_skill['id']}", json={"enabled": False}).status_code == 403
            assert caller.delete(f"/v1/skills/{shared_skill['id']}").status_code == 403
            assert caller.delete(f"/v1/tools/custom/{shared_tool['id']}").status_code == 403
        assert world.admin.get(f"/v1/mcp/servers/{shared_server['id']}").json()["url"] == "http://127.0.0.1:9/mcp"
    finally:
        world.admin.delete(f"/v1/mcp/servers/{shared_server['id']}")
        world.admin.delete(f"/v1/skills/{shared_skill['id']}")
        world.admin.delete(f"/v1/tools/custom/{shared_tool['id']}")


# --- gateway-wide objects: providers and API keys ------------------------------------------------


def test_providers_are_gateway_wide_readable_with_the_key_masked(world):
    listed = world.bob_viewer.get("/v1/providers").json()["providers"]
    mine = next(p for p in listed if p["id"] == world.provider["id"])
    assert mine["api_key"] == "***" and "sk-bola-secret" not in str(listed)
    assert world.bob_viewer.put(f"/v1/providers/{world.provider['id']}", json={"enabled": False}).status_code == 403


def test_a_non_admin_cannot_point_a_stored_provider_key_at_another_host(world, llm_stub):
    ident = world.provider["id"]
    moved = world.bob.put(f"/v1/providers/{ident}", json={"api_base": "https://attacker.example/v1"})
    assert moved.status_code == 400, moved.text
    assert world.admin.get(f"/v1/providers/{ident}").json()["api_base"] == llm_stub.url + "/v1"
    # with a key of his own the move is an ordinary reconfiguration (no stored secret travels)
    own = world.bob.post("/v1/providers", json={"name": unique("bobs"), "provider_type": "openai_compat",
                                                "api_key": "sk-bob"}).json()
    relocated = world.bob.put(f"/v1/providers/{own['id']}",
                              json={"api_base": llm_stub.url + "/v2", "api_key": "sk-bob-again"})
    assert relocated.status_code == 200, relocated.text
    world.admin.delete(f"/v1/providers/{own['id']}")


def test_api_keys_are_admin_only_for_every_tenant(world):
    listed = world.admin.get("/v1/api-keys").json()
    some_id = listed[0]["id"]
    for caller in (world.bob, world.bob_viewer, world.nobody):
        assert caller.get("/v1/api-keys").status_code == 403
        assert caller.delete(f"/v1/api-keys/{some_id}").status_code == 403
        assert caller.post(f"/v1/api-keys/{some_id}/revoke").status_code == 403
        assert caller.post("/v1/api-keys", json={"name": "x", "scopes": ["operator.admin"]}).status_code == 403
    assert next(k for k in world.admin.get("/v1/api-keys").json() if k["id"] == some_id)["revoked"] is False
