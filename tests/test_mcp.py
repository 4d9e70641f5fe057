"""MCP servers: CRUD and secrets over HTTP, discovery over stdio and streamable HTTP with a real SDK
server (tests/stubs/mcp_server.py), clean 502/504 for servers that are down or hang, and the
agent's MCP tools called in-process through the pooled sessions."""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid

import pytest

from tests.support.processes import ROOT, free_port, wait_until
from tests.test_tools import call, gateway_data_dir, make_agent, run, toolset_for

STUB = [sys.executable, "-m", "tests.stubs.mcp_server"]


@pytest.fixture(autouse=True)
def loopback_allowed(monkeypatch):
    """In-process calls run the SSRF guard of this process: allow the loopback stubs, as the gateway does."""
    monkeypatch.setenv("GOCLAW_ALLOW_PRIVATE_NETWORKS", "127.0.0.0/8")


@pytest.fixture(scope="module")
def mcp_http():
    """The stub MCP server over streamable HTTP; yields its endpoint URL."""
    port = free_port()
    process = subprocess.Popen([*STUB, "--transport", "http", "--port", str(port)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    assert wait_until(up, timeout=30), "stub MCP server did not start"
    yield f"http://127.0.0.1:{port}/mcp"
    process.terminate()
    process.wait(10)


@pytest.fixture
def server(admin):
    """Factory: create an MCP server over HTTP (deleted afterwards)."""
    made = []

    def make(client=None, **fields):
        body = {"name": f"s{uuid.uuid4().hex[:8]}", **fields}
        response = (client or admin).post("/v1/mcp/servers", json=body)
        assert response.status_code == 201, response.text
        made.append(response.json()["id"])
        return response.json()

    yield make
    for server_id in made:
        admin.delete(f"/v1/mcp/servers/{server_id}")


def stdio(**extra):
    return {"transport": "stdio", "command": sys.executable, "args": ["-m", "tests.stubs.mcp_server"], **extra}


def test_create_shows_masked_secrets_and_stores_them_encrypted(admin, database, server):
    created = server(**stdio(env={"STUB_TOKEN": "env-secret-value"}), display_name="Stub", timeout_seconds=20)
    assert created["transport"] == "stdio" and created["args"] == ["-m", "tests.stubs.mcp_server"]
    assert created["env"] == {"STUB_TOKEN": "***"} and created["headers"] == {}
    assert created["timeout_seconds"] == 20 and created["enabled"] is True and created["agent_ids"] == []
    assert admin.get(f"/v1/mcp/servers/{created['id']}").json() == created
    listed = {s["id"]: s for s in admin.get("/v1/mcp/servers").json()["servers"]}
    assert listed[created["id"]]["env"] == {"STUB_TOKEN": "***"}
    with database.connect() as conn:
        stored = conn.execute("SELECT env FROM mcp_servers WHERE id = %s", (created["id"],)).fetchone()[0]
    assert stored.startswith("aes-gcm:") and "env-secret" not in stored


def test_update_grants_and_delete_write_activity(admin, database, server, mcp_http):
    agent_id = make_agent(database)
    created = server(transport="streamable-http", url=mcp_http, headers={"Authorization": "Bearer abcdefgh1234"})
    response = admin.put(f"/v1/mcp/servers/{created['id']}",
                         json={"agent_ids": [agent_id], "headers": {"Authorization": "***", "X-Extra": "1"},
                               "tool_prefix": "stubby", "enabled": False})
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["agent_ids"] == [agent_id] and updated["agent_count"] == 1
    assert updated["headers"] == {"Authorization": "***", "X-Extra": "***"} and updated["tool_prefix"] == "stubby"
    assert updated["updated_at"] > created["updated_at"]
    assert admin.delete(f"/v1/mcp/servers/{created['id']}").json()["status"] == "deleted"
    assert admin.get(f"/v1/mcp/servers/{created['id']}").status_code == 404
    logs = admin.get("/v1/activity", params={"entity_id": created["id"]}).json()["logs"]
    assert [log["action"] for log in logs] == ["mcp_server.deleted", "mcp_server.updated", "mcp_server.created"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"transport": "stdio"}, 400),  # no command
        ({"transport": "streamable-http"}, 400),  # no url
        ({"transport": "websocket", "url": "http://example.test/mcp"}, 400),
        ({"transport": "sse", "url": "ftp://example.test/"}, 400),
        ({"transport": "sse", "url": "http://169.254.169.254/latest/"}, 403),  # SSRF guard
        ({"transport": "sse", "url": "http://10.1.2.3:8080/sse"}, 403),
        ({"transport": "stdio", "command": "x", "timeout_seconds": 0}, 400),
        ({"transport": "stdio", "command": "x", "agent_ids": [str(uuid.uuid4())]}, 404),
        ({"transport": "stdio", "command": "x", "unknown": 1}, 400),
    ],
)
def test_bad_server_input(admin, body, status):
    response = admin.post("/v1/mcp/servers", json={"name": f"bad{uuid.uuid4().hex[:6]}", **body})
    assert response.status_code == status, response.text
    assert "error" in response.json()


def test_names_are_unique_per_owner(admin, server):
    created = server(**stdio())
    response = admin.post("/v1/mcp/servers", json={"name": created["name"], **stdio()})
    assert response.status_code == 409
    other = admin.post("/v1/mcp/servers", headers={"X-GoClaw-User-Id": "erin"},
                       json={"name": created["name"], **stdio()})
    assert other.status_code == 201
    admin.delete(f"/v1/mcp/servers/{other.json()['id']}")


def test_stdio_servers_need_an_admin_and_tenants_see_their_own(client_for, make_key, server, mcp_http):
    key, _ = make_key("operator.write")
    frank = client_for(key, user="frank")
    assert frank.post("/v1/mcp/servers", json={"name": "mine", **stdio()}).status_code == 403
    franks = server(client=frank, transport="streamable-http", url=mcp_http)
    assert franks["owner_id"] == "frank"
    assert frank.put(f"/v1/mcp/servers/{franks['id']}", json={"transport": "stdio", "command": "sh"}).status_code == 403
    grace = client_for(key, user="grace")
    assert grace.get(f"/v1/mcp/servers/{franks['id']}").status_code == 404
    assert grace.get(f"/v1/mcp/servers/{franks['id']}/tools").status_code == 404
    assert franks["id"] not in [s["id"] for s in grace.get("/v1/mcp/servers").json()["servers"]]


def test_discovery_over_stdio(admin, server):
    created = server(**stdio())
    response = admin.get(f"/v1/mcp/servers/{created['id']}/tools")
    assert response.status_code == 200, response.text
    tools = {t["name"]: t for t in response.json()["tools"]}
    assert {"add", "echo", "env_value", "fail", "sleep"} <= set(tools)
    assert tools["add"]["tool_name"] == f"mcp_{created['name']}__add"
    assert tools["add"]["input_schema"]["required"] == ["a", "b"]


def test_discovery_over_streamable_http(admin, server, mcp_http):
    created = server(transport="streamable-http", url=mcp_http, tool_prefix="stubhttp")
    response = admin.get(f"/v1/mcp/servers/{created['id']}/tools")
    assert response.status_code == 200, response.text
    assert "mcp_stubhttp__echo" in [t["tool_name"] for t in response.json()["tools"]]


def test_discovery_over_sse(admin, server):
    port = free_port()
    process = subprocess.Popen([*STUB, "--transport", "sse", "--port", str(port)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: _open(port), timeout=30)
        created = server(transport="sse", url=f"http://127.0.0.1:{port}/sse")
        response = admin.get(f"/v1/mcp/servers/{created['id']}/tools")
        assert response.status_code == 200, response.text
        assert "add" in [t["name"] for t in response.json()["tools"]]
    finally:
        process.terminate()
        process.wait(10)


def test_a_server_that_is_down_is_a_clean_502(admin, server):
    closed = server(transport="streamable-http", url=f"http://127.0.0.1:{free_port()}/mcp", timeout_seconds=5)
    missing = server(transport="stdio", command="/nonexistent/mcp-server-binary", timeout_seconds=5)
    crashing = server(transport="stdio", command=sys.executable, args=["-c", "import sys; sys.exit('boom')"],
                      timeout_seconds=5)
    for created in (closed, missing, crashing):
        response = admin.get(f"/v1/mcp/servers/{created['id']}/tools")
        assert response.status_code == 502, (created["name"], response.text)
        assert created["name"] in response.json()["error"]


def test_a_server_that_hangs_is_a_504_within_its_timeout(admin, server):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts connections, never answers
    try:
        silent_http = server(transport="streamable-http", url=f"http://127.0.0.1:{listener.getsockname()[1]}/mcp",
                             timeout_seconds=1)
        silent_stdio = server(transport="stdio", command="sleep", args=["60"], timeout_seconds=1)
        for created in (silent_http, silent_stdio):
            response = admin.get(f"/v1/mcp/servers/{created['id']}/tools")
            assert response.status_code == 504, response.text
            assert "within 1s" in response.json()["error"]
    finally:
        listener.close()


def test_agent_calls_mcp_tools_over_both_transports_through_pooled_sessions(
    gateway, database, tmp_path, server, mcp_http, admin
):
    agent_id = make_agent(database, owner="hana")
    other_agent = make_agent(database, owner="hana")
    local = server(**stdio(env={"STUB_TOKEN": "value-that-must-not-leak"}), agent_ids=[agent_id])
    remote = server(transport="streamable-http", url=mcp_http, agent_ids=[agent_id])
    p_local, p_remote = f"mcp_{local['name']}__", f"mcp_{remote['name']}__"

    async def scenario():
        from agent import mcp

        toolset = await toolset_for(agent_id)
        results = {
            "names": toolset.names(),
            "other": (await toolset_for(other_agent)).names(),
            "add": await call(agent_id, tmp_path, p_local + "add", {"a": 2, "b": 3}),
            "echo": await call(agent_id, tmp_path, p_remote + "echo", {"text": "over http"}),
            "bad_args": await call(agent_id, tmp_path, p_local + "add", {"a": "two", "b": 3}),
            "fail": await call(agent_id, tmp_path, p_remote + "fail", {"message": "nope"}),
            "env": await call(agent_id, tmp_path, p_local + "env_value", {"name": "STUB_TOKEN"}),
        }
        first = mcp.manager._connections[local["id"]]
        results["again"] = await call(agent_id, tmp_path, p_local + "add", {"a": 1, "b": 1})
        results["reused"] = mcp.manager._connections[local["id"]] is first
        return results

    r = run(database, gateway_data_dir(gateway), scenario)
    assert {p_local + "add", p_local + "echo", p_remote + "add", p_remote + "sleep"} <= set(r["names"])
    assert not any(n.startswith((p_local, p_remote)) for n in r["other"])  # granted to agent_id only
    assert (r["add"].content, r["add"].is_error) == ("5", False)
    assert r["echo"].content == "over http"
    assert r["bad_args"].is_error and "not of type 'integer'" in r["bad_args"].content  # validated before the call
    assert r["fail"].is_error and "nope" in r["fail"].content
    assert r["env"].content == "[REDACTED]"  # reached the server process, scrubbed on the way back
    assert r["again"].content == "2" and r["reused"] is True


def test_changed_or_dead_servers_get_fresh_sessions(gateway, database, tmp_path, server, admin, mcp_http):
    agent_id = make_agent(database, owner="ivan")
    created = server(**stdio(), agent_ids=[agent_id])
    add = f"mcp_{created['name']}__add"

    async def scenario():
        from agent import mcp
        from domain import mcp_servers
        from tests.test_tools import principal_for

        first = await call(agent_id, tmp_path, add, {"a": 1, "b": 2})
        conn = mcp.manager._connections[created["id"]]
        await mcp_servers.update_server(principal_for(), created["id"], {"timeout_seconds": 30})
        assert created["id"] not in mcp.manager._connections  # closed on change
        second = await call(agent_id, tmp_path, add, {"a": 2, "b": 2})
        renewed = mcp.manager._connections[created["id"]]
        renewed.error = RuntimeError("connection lost")  # as if the transport had failed
        third = await call(agent_id, tmp_path, add, {"a": 3, "b": 3})
        return first, second, third, renewed is not conn, mcp.manager._connections[created["id"]] is not renewed

    first, second, third, changed, rebuilt = run(database, gateway_data_dir(gateway), scenario)
    assert (first.content, second.content, third.content) == ("3", "4", "6")
    assert changed and rebuilt


def test_a_stdio_server_that_exits_is_restarted_on_the_next_call(gateway, database, tmp_path, server):
    agent_id = make_agent(database, owner="kai")
    created = server(**stdio(), agent_ids=[agent_id])
    prefix = f"mcp_{created['name']}__"

    async def scenario():
        return (
            await call(agent_id, tmp_path, prefix + "crash", {}),
            await call(agent_id, tmp_path, prefix + "add", {"a": 20, "b": 22}),
        )

    crashed, after = run(database, gateway_data_dir(gateway), scenario)
    assert crashed.is_error and "closed the connection" in crashed.content
    assert (after.content, after.is_error) == ("42", False)


def test_a_dead_server_costs_the_agent_an_error_result_not_a_crash(gateway, database, tmp_path, server):
    agent_id = make_agent(database, owner="jon")
    port = free_port()
    process = subprocess.Popen([*STUB, "--transport", "http", "--port", str(port)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: _open(port), timeout=30)
        created = server(transport="streamable-http", url=f"http://127.0.0.1:{port}/mcp", agent_ids=[agent_id],
                         timeout_seconds=3)
        echo = f"mcp_{created['name']}__echo"

        async def scenario():
            from agent import ToolContext
            from tests.test_tools import agent_row, principal_for

            agent = await agent_row(agent_id)
            toolset = await toolset_for(agent_id)
            ctx = ToolContext(principal_for(), agent, tmp_path)
            alive = await toolset.call(echo, {"text": "hi"}, ctx)
            process.terminate()
            process.wait(10)
            dead = await toolset.call(echo, {"text": "hi"}, ctx)
            later = await toolset_for(agent_id)  # the next run simply lacks the server's tools
            return alive, dead, later.names()

        alive, dead, names = run(database, gateway_data_dir(gateway), scenario)
        assert alive.content == "hi"
        assert dead.is_error and created["name"] in dead.content
        assert echo not in names
    finally:
        if process.poll() is None:
            process.kill()


def _open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0

