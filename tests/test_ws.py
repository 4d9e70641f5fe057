"""WebSocket RPC protocol v3: real sockets (the `websockets` client) against the gateway process."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from tests.support.processes import TEST_TOKEN, start_gateway, wait_until

ROOT = Path(__file__).resolve().parents[1]


class Rpc:
    """A protocol client: `call` sends a request and returns its `res`, keeping the events seen."""

    def __init__(self, url: str) -> None:
        self.ws = ws_connect(url, open_timeout=10, max_size=4 * 1024 * 1024).__enter__()
        self.events: list[dict] = []
        self.responses: dict[str, dict] = {}
        self._n = 0

    def send(self, method: str, params: dict | None = None) -> str:
        self._n += 1
        req_id = f"r{self._n}"
        frame = {"type": "req", "id": req_id, "method": method}
        if params is not None:
            frame["params"] = params
        self.ws.send(json.dumps(frame))
        return req_id

    def next_frame(self, timeout: float = 15.0) -> dict:
        frame = json.loads(self.ws.recv(timeout=timeout))
        if frame["type"] == "event":
            self.events.append(frame)
        else:
            self.responses[frame["id"]] = frame
        return frame

    def wait_response(self, req_id: str, timeout: float = 15.0) -> dict:
        while req_id not in self.responses:
            self.next_frame(timeout)
        return self.responses.pop(req_id)

    def call(self, method: str, params: dict | None = None, timeout: float = 15.0) -> dict:
        return self.wait_response(self.send(method, {} if params is None else params), timeout)

    def ok(self, method: str, params: dict | None = None) -> dict | list:
        response = self.call(method, params)
        assert response["ok"] is True, response
        return response.get("payload")

    def wait_event(self, predicate, timeout: float = 15.0) -> dict:
        for event in self.events:
            if predicate(event):
                return event
        while True:
            frame = self.next_frame(timeout)
            if frame["type"] == "event" and predicate(frame):
                return frame

    def agent_events(self, run_id: str | None = None) -> list[dict]:
        return [e["payload"] for e in self.events
                if e["event"] == "agent" and (run_id is None or e["payload"]["runId"] == run_id)]

    def login(self, token: str | None = TEST_TOKEN, user: str | None = "alice") -> dict:
        params = {"locale": "en"}
        if token is not None:
            params["token"] = token
        if user is not None:
            params["user_id"] = user
        return self.ok("connect", params)

    def close_code(self, timeout: float = 15.0) -> int | None:
        try:
            while True:
                self.next_frame(timeout)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None

    def close(self) -> None:
        self.ws.close()


@pytest.fixture
def rpc(gateway):
    opened: list[Rpc] = []

    def make(url: str | None = None) -> Rpc:
        client = Rpc(url or gateway.ws_url)
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.close()


def error_of(response: dict) -> tuple[str, str]:
    assert response["ok"] is False, response
    return response["error"]["code"], response["error"]["message"]


def user() -> str:
    return f"u-{uuid.uuid4().hex[:8]}"  # a fresh tenant (and a fresh chat rate-limit bucket)


@pytest.fixture
def bot(admin, llm_stub):
    """Factory: a provider on the LLM stub and an agent owned by `owner`."""

    def make(owner: str) -> dict:
        suffix = uuid.uuid4().hex[:8]
        provider = admin.post("/v1/providers", json={
            "name": f"stub-{suffix}", "provider_type": "openai_compat", "api_base": llm_stub.url + "/v1",
            "api_key": "sk-test-secret-123456",
        })
        assert provider.status_code == 201, provider.text
        agent = admin.post("/v1/agents", headers={"X-GoClaw-User-Id": owner}, json={
            "name": f"bot-{suffix}", "provider": f"stub-{suffix}", "model": "gpt-4o-mini",
            "display_name": "Test Bot", "description": "terse", "other_config": {"emoji": "🤖"},
        })
        assert agent.status_code == 201, agent.text
        return agent.json()

    return make


def traces(admin, agent_id: str, status: str | None = None) -> list[dict]:
    params = {"agent_id": agent_id, **({"status": status} if status else {})}
    return admin.get("/v1/traces", params=params).json()["traces"]


# ---- handshake ----------------------------------------------------------------------------------

def test_anything_before_connect_is_unauthorized_and_the_socket_stays_open(rpc):
    client = rpc()
    assert error_of(client.call("health")) == ("UNAUTHORIZED", "first request must be 'connect'")
    assert error_of(client.call("sessions.list")) == ("UNAUTHORIZED", "first request must be 'connect'")
    hello = client.login()
    assert client.ok("health")["status"] == "ok"
    assert hello["protocol"] == 3


def test_gateway_token_is_admin_and_connect_describes_the_server(rpc):
    hello = rpc().login(TEST_TOKEN, "alice")
    assert hello["role"] == "admin" and hello["user_id"] == "alice"
    assert hello["server"]["name"] == "goclaw" and hello["server"]["version"]
    assert "operator.admin" in hello["scopes"]


@pytest.mark.parametrize(("scopes", "role"), [
    (["operator.read"], "viewer"), (["operator.read", "operator.write"], "operator"), (["operator.admin"], "admin"),
])
def test_api_key_role_comes_from_its_scopes(rpc, make_key, scopes, role):
    key, _ = make_key(*scopes)
    hello = rpc().login(key, "bob")
    assert hello["role"] == role and hello["user_id"] == "bob"


@pytest.mark.parametrize("token", ["wrong-token", "goclaw_" + "0" * 32, None])
def test_a_bad_or_missing_token_is_an_unauthorized_error_not_a_viewer(rpc, token):
    client = rpc()
    params = {"user_id": "alice"} if token is None else {"token": token, "user_id": "alice"}
    code, message = error_of(client.call("connect", params))
    assert code == "UNAUTHORIZED"
    assert "token" in message if token is None else message == "invalid authentication"
    assert error_of(client.call("status")) == ("UNAUTHORIZED", "first request must be 'connect'")


def test_five_failed_connects_close_the_socket_with_1008(rpc):
    client = rpc()
    for _ in range(4):
        assert error_of(client.call("connect", {"token": "nope"}))[0] == "UNAUTHORIZED"
    client.send("connect", {"token": "nope"})
    assert client.close_code() == 1008


def test_errors_are_localised_by_the_connect_locale(rpc):
    client = rpc()
    assert error_of(client.call("connect", {"token": "nope", "locale": "vi-VN"})) == (
        "UNAUTHORIZED", "xác thực không hợp lệ")


def test_a_failed_reconnect_leaves_the_socket_unauthenticated(rpc):
    client = rpc()
    client.login()
    assert error_of(client.call("connect", {"token": "nope"}))[0] == "UNAUTHORIZED"
    assert error_of(client.call("status"))[1] == "first request must be 'connect'"


def test_a_revoked_key_closes_its_socket(rpc, make_key, admin):
    key, key_id = make_key("operator.read", "operator.write")
    client = rpc()
    client.login(key, "carol")
    assert admin.delete(f"/v1/api-keys/{key_id}").status_code == 200
    assert client.close_code() == 1008


# ---- frames -----------------------------------------------------------------------------------------

def test_malformed_frames_get_error_frames_and_the_socket_stays_open(rpc):
    client = rpc()
    client.login()
    client.ws.send("{not json")
    frame = client.next_frame()
    assert frame["id"] == "" and frame["error"]["code"] == "INVALID_REQUEST"
    assert frame["error"]["message"].startswith("invalid frame:")
    client.ws.send(json.dumps({"type": "event", "event": "x"}))
    assert client.next_frame()["error"] == {"code": "INVALID_REQUEST", "message": "unexpected frame type: event"}
    client.ws.send(json.dumps({"id": "a", "method": "health"}))
    assert client.next_frame()["error"]["message"] == "unexpected frame type: null"
    client.ws.send(json.dumps({"type": "req", "id": 1, "method": "health"}))
    frame = client.next_frame()
    assert frame["id"] == "" and frame["error"]["message"].startswith("malformed request:")
    client.ws.send(json.dumps([1, 2]))
    assert client.next_frame()["error"]["message"] == "invalid frame: expected a JSON object"
    assert error_of(client.call("no.such.method")) == ("INVALID_REQUEST", "unknown method: no.such.method")
    client.ws.send(json.dumps({"type": "req", "id": "p", "method": "status", "params": [1]}))
    assert client.next_frame()["error"]["code"] == "INVALID_REQUEST"
    client.ws.send(json.dumps({"type": "req", "id": "b", "method": "health"}).encode())  # binary frames too
    assert client.next_frame()["ok"] is True
    assert client.ok("health")["status"] == "ok"


def test_a_message_over_512_kib_closes_with_1009(rpc):
    client = rpc()
    client.login()
    client.ws.send(json.dumps({"type": "req", "id": "big", "method": "health", "params": {"x": "y" * (600 * 1024)}}))
    assert client.close_code() == 1009


def test_only_the_ws_path_upgrades(gateway):
    with pytest.raises(InvalidStatus) as caught:
        ws_connect(gateway.ws_url.replace("/ws", "/other"), open_timeout=10)
    assert caught.value.response.status_code == 404


# ---- the permission matrix ------------------------------------------------------------------------

def test_readme_prints_the_method_table():
    from ws.methods import table

    assert table() in (ROOT / "README.md").read_text()


def test_every_method_refuses_a_key_without_its_scope(rpc, make_key):
    from ws.methods import METHODS

    read_key, _ = make_key("operator.read")
    write_key, _ = make_key("operator.read", "operator.write")
    viewer, operator = rpc(), rpc()
    viewer.login(read_key, "dora")
    operator.login(write_key, "dora")
    denied = 0
    for name, method in METHODS.items():
        for client, lacking in ((viewer, ("operator.write", "operator.admin")), (operator, ("operator.admin",))):
            if method.scope in lacking:
                code, message = error_of(client.call(name, {}))
                assert (code, message) == ("UNAUTHORIZED", f"permission denied: insufficient role for {name}")
                denied += 1
    assert denied >= 15
    assert viewer.ok("sessions.list")["sessions"] == []


def test_auth_disabled_gateway_makes_callers_operators_and_refuses_foreign_origins(database, tmp_path):
    gw = start_gateway(database.dsn, tmp_path / "open", GOCLAW_GATEWAY_TOKEN="<unset>")
    try:
        client = Rpc(gw.ws_url)
        hello = client.login(None, "erin")
        assert hello["role"] == "operator"
        assert error_of(client.call("api_keys.list"))[0] == "UNAUTHORIZED"
        assert error_of(client.call("connect", {"token": "something-wrong"}))[0] == "UNAUTHORIZED"
        client.close()
        with pytest.raises(InvalidStatus) as caught:
            ws_connect(gw.ws_url, origin="https://evil.example", open_timeout=10)
        assert caught.value.response.status_code == 403
        ws_connect(gw.ws_url, origin="http://localhost:3000", open_timeout=10).close()
    finally:
        assert gw.stop() == 0


# ---- methods: happy paths ----------------------------------------------------------------------------

def test_system_agent_and_catalogue_methods(rpc, bot, llm_stub):
    owner = user()
    agent = bot(owner)
    client = rpc()
    client.login(TEST_TOKEN, owner)
    health = client.ok("health")
    assert health["database"] == "ok" and health["currentId"] in {c["id"] for c in health["clients"]}
    status = client.ok("status")
    assert agent["name"] in {a["id"] for a in status["agents"]} and status["clients"] >= 1
    listed = client.ok("agents.list")
    mine = next(a for a in listed["agents"] if a["id"] == agent["name"])
    assert mine == {**mine, "uuid": agent["id"], "name": "Test Bot", "model": "gpt-4o-mini", "isRunning": False}
    assert client.ok("agent", {"agentId": agent["name"]})["uuid"] == agent["id"]
    identity = client.ok("agent.identity.get", {"sessionKey": f"agent:{agent['name']}:ws-x"})
    assert identity == {"agentId": agent["name"], "name": "Test Bot", "description": "terse", "emoji": "🤖"}
    assert client.ok("agent.identity.get", {"agentId": "no-such-agent"}) == {"agentId": "no-such-agent"}
    assert error_of(client.call("agent", {"agentId": "no-such-agent"}))[0] == "NOT_FOUND"
    models = client.ok("models.list", {"agentId": agent["name"]})
    assert models["provider"] == agent["provider"] and "stub-gpt" in {m["id"] for m in models["models"]}
    assert isinstance(client.ok("skills.list")["skills"], list)
    summary = client.ok("usage.summary", {"period": "7d"})
    assert summary["period"] == "7d" and "current" in summary
    assert error_of(client.call("usage.summary", {"period": "1y"}))[0] == "INVALID_REQUEST"


def test_api_key_methods_share_the_http_rules(rpc, admin):
    client = rpc()
    client.login()
    created = client.ok("api_keys.create", {"name": "from-ws", "scopes": ["operator.read"]})
    assert re.fullmatch(r"goclaw_[0-9a-f]{32}", created["key"])
    listed = client.ok("api_keys.list")
    assert isinstance(listed, list) and created["id"] in {k["id"] for k in listed}
    assert all("key" not in k and "key_hash" not in k for k in listed)
    assert error_of(client.call("api_keys.create", {"name": "x", "scopes": ["operator.root"]}))[0] == "INVALID_REQUEST"
    assert client.ok("api_keys.revoke", {"id": created["id"]})["status"] == "revoked"
    assert error_of(client.call("api_keys.revoke", {"id": str(uuid.uuid4())}))[0] == "NOT_FOUND"
    actions = [a["action"] for a in admin.get("/v1/activity", params={"entity_id": created["id"]}).json()["logs"]]
    assert actions == ["api_key.revoked", "api_key.created"]


def test_channel_instance_methods_mask_credentials_and_apply_tenancy(rpc, bot):
    owner = user()
    agent = bot(owner)
    client, stranger = rpc(), rpc()
    client.login(TEST_TOKEN, owner)
    created = client.ok("channels.instances.create", {
        "name": f"tg-{uuid.uuid4().hex[:6]}", "channel_type": "telegram", "agent_id": agent["id"],
        "credentials": {"token": "123456:secret-bot-token"},
    })
    assert "secret-bot-token" not in json.dumps(created)
    assert client.ok("channels.instances.get", {"id": created["id"]})["name"] == created["name"]
    assert created["id"] in {i["id"] for i in client.ok("channels.instances.list")["instances"]}
    updated = client.ok("channels.instances.update", {"id": created["id"], "updates": {"display_name": "Bot"}})
    assert updated["status"] == "updated" and updated["instance"]["display_name"] == "Bot"
    key, _ = make_operator_key(client)
    stranger.login(key, user())
    assert error_of(stranger.call("channels.instances.get", {"id": created["id"]}))[0] == "NOT_FOUND"
    assert client.ok("channels.instances.delete", {"id": created["id"]})["status"] == "deleted"
    assert error_of(client.call("channels.instances.get", {"id": created["id"]}))[0] == "NOT_FOUND"
    assert error_of(client.call("channels.instances.create", {"name": "x"}))[0] == "INVALID_REQUEST"


def make_operator_key(admin_client: Rpc) -> tuple[str, str]:
    created = admin_client.ok("api_keys.create", {"name": "op", "scopes": ["operator.read", "operator.write"]})
    return created["key"], created["id"]


def test_logs_tail_replays_and_streams_scrubbed_records(rpc):
    client = rpc()
    client.login()
    assert client.ok("logs.tail", {"action": "start", "level": "debug"}) == {"status": "tailing", "level": "debug"}
    assert client.ok("logs.tail", {"action": "stop"}) == {"status": "stopped"}
    assert error_of(client.call("logs.tail", {"action": "pause"}))[0] == "INVALID_REQUEST"
    assert error_of(client.call("logs.tail", {"action": "start", "level": "loud"}))[0] == "INVALID_REQUEST"


def test_the_log_buffer_never_keeps_credentials():
    from domain import logs

    handler = logs.RingHandler(capacity=3)
    logger = logging.getLogger("test.ws.logs")
    logger.addHandler(handler)
    try:
        logger.warning("upstream said no; Authorization: Bearer sk-live-abcdefghijkl (key goclaw_%s)", "ab" * 16)
        logger.warning("config {'api_key': 'hunter2hunter2', 'password': 's3cret'} tokens=12")
        for n in range(5):
            logger.warning("line %d", n)
    finally:
        logger.removeHandler(handler)
    assert [r["message"] for r in handler.records] == ["line 2", "line 3", "line 4"]
    assert [r["message"] for r in handler.tail(logging.ERROR)] == []

    async def live() -> list[dict]:
        handler.loop = asyncio.get_running_loop()
        received: list[dict] = []
        handler.subscribers.append(received.append)
        logger.addHandler(handler)
        try:
            logger.error("token=abcdef123456 failed")
        finally:
            logger.removeHandler(handler)
        return received

    (record,) = asyncio.run(live())
    assert logs.public(record) == {"timestamp": record["timestamp"], "level": "error",
                                   "message": "token=*** failed", "source": "test.ws.logs"}
    first = logs.scrub("Authorization: Bearer sk-live-abcdefghijkl (key goclaw_" + "ab" * 16 + ")")
    assert "sk-live" not in first and "goclaw_ab" not in first and "abcdefghijkl" not in first
    second = logs.scrub("config {'api_key': 'hunter2hunter2', 'password': 's3cret'} tokens=12")
    assert "hunter2" not in second and "s3cret" not in second and "tokens=12" in second


def test_a_slow_reader_loses_events_never_responses():
    from ws.connection import Connection, Limits

    class Stuck:
        remote_address = ("127.0.0.1", 1)

        async def send(self, frame):
            await asyncio.Event().wait()  # the client never reads

    async def scenario() -> tuple[int, int]:
        conn = Connection(Stuck(), Limits(max_queued=10, write_timeout=3600))
        accepted = sum(conn.push(f"event {n}", droppable=True) for n in range(100))
        assert all(conn.push(f"response {n}") for n in range(20))
        queued = conn.queued
        conn.close_now()
        assert conn.queued == 0 and not conn.push("late")
        return accepted, queued

    accepted, queued = asyncio.run(scenario())
    assert accepted == 10  # the queue's bound; the other 90 events were dropped for this client
    assert queued == 30  # ... while every response was kept


# ---- chat -----------------------------------------------------------------------------------------

def test_chat_send_streams_agent_events_then_answers(rpc, bot, llm_stub, admin):
    owner = user()
    agent = bot(owner)
    llm_stub.reset()
    llm_stub.script({"wire": "openai", "chunks": ["Hel", "lo ", "there"]})
    client = rpc()
    client.login(TEST_TOKEN, owner)
    key = f"agent:{agent['name']}:ws-{owner}-1"
    result = client.ok("chat.send", {"agentId": agent["name"], "sessionKey": key, "message": "hi", "stream": True})
    assert result["content"] == "Hello there"
    assert result["usage"]["total_tokens"] == result["usage"]["prompt_tokens"] + result["usage"]["completion_tokens"]
    events = client.agent_events(result["runId"])
    types = [e["type"] for e in events]
    assert types == ["run.started", "activity", "chunk", "chunk", "chunk", "run.completed"]
    assert events[0]["payload"] == {"message": "hi"}
    assert all(e["agentId"] == agent["name"] and e["sessionKey"] == key and e["userId"] == owner for e in events)
    assert all(e["channel"] == "ws" and e["chatId"] for e in events)
    assert "".join(e["payload"]["content"] for e in events if e["type"] == "chunk") == "Hello there"
    assert events[-1]["payload"]["content"] == "Hello there" and events[-1]["payload"]["usage"]["total_tokens"] > 0
    history = client.ok("chat.history", {"sessionKey": key})["messages"]
    assert history == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello there"}]
    # the next turn carries the history to the model
    llm_stub.reset()
    assert client.ok("chat.send", {"sessionKey": key, "message": "again"})["content"] == "echo: again"
    sent = [m["content"] for m in llm_stub.requests()[-1]["body"]["messages"] if m["role"] != "system"]
    assert sent == ["hi", "Hello there", "again"]
    assert wait_until(lambda: len(traces(admin, agent["id"], "completed")) == 2, timeout=5)


def test_tool_calls_become_tool_events(rpc, bot, llm_stub):
    owner = user()
    agent = bot(owner)
    llm_stub.reset()
    llm_stub.script([{"wire": "openai", "tool_calls": [{"name": "lookup", "arguments": {"q": "x" * 800}}]},
                     {"wire": "openai", "text": "done"}])
    client = rpc()
    client.login(TEST_TOKEN, owner)
    result = client.ok("chat.send", {"agentId": agent["name"], "message": "use a tool"})
    assert result["content"] == "done"
    events = client.agent_events(result["runId"])
    assert [e["type"] for e in events] == [
        "run.started", "activity", "tool.call", "tool.result", "activity", "chunk", "run.completed"]
    call, outcome = events[2]["payload"], events[3]["payload"]
    assert call["name"] == "lookup" and call["arguments"]["q"] == "x" * 500 + "..."
    assert outcome["id"] == call["id"] and outcome["is_error"] is True and "unknown tool" in outcome["content"]
    assert events[4]["payload"] == {"phase": "thinking", "iteration": 2}


def test_chat_send_errors(rpc, bot, llm_stub, make_key):
    owner = user()
    agent = bot(owner)
    client = rpc()
    client.login(TEST_TOKEN, owner)
    assert error_of(client.call("chat.send", {"agentId": agent["name"]}))[0] == "INVALID_REQUEST"
    assert error_of(client.call("chat.send", {"agentId": "no-such-agent", "message": "x"}))[0] == "NOT_FOUND"
    llm_stub.reset()
    llm_stub.script([{"wire": "openai", "status": 500, "message": "boom"}] * 3)
    send = client.send("chat.send", {"agentId": agent["name"], "message": "x"})
    code, message = error_of(client.wait_response(send))
    assert code == "UNAVAILABLE" and "boom" in message
    failed = [e for e in client.agent_events() if e["type"] == "run.failed"]
    assert len(failed) == 1 and "boom" in failed[0]["payload"]["error"]
    nameless = rpc()
    nameless.login(TEST_TOKEN, None)
    assert error_of(nameless.call("chat.send", {"agentId": agent["name"], "message": "x"})) == (
        "INVALID_REQUEST", "user_id is required")


def test_one_run_per_session_inject_and_abort_mid_stream(rpc, bot, llm_stub, admin):
    owner = user()
    agent = bot(owner)
    llm_stub.reset()
    llm_stub.script({"wire": "openai", "chunks": ["start ", "never"], "hang_after": 2})
    client, other_tab = rpc(), rpc()
    client.login(TEST_TOKEN, owner)
    other_tab.login(TEST_TOKEN, owner)
    key = f"agent:{agent['name']}:ws-{owner}"
    send = client.send("chat.send", {"agentId": agent["name"], "sessionKey": key, "message": "hang", "stream": True})
    client.wait_event(lambda e: e["event"] == "agent" and e["payload"]["type"] == "chunk")
    run_id = client.agent_events()[0]["runId"]
    code, message = error_of(other_tab.call("chat.send", {"sessionKey": key, "message": "me too"}))
    assert code == "FAILED_PRECONDITION" and "busy" in message and run_id in message
    assert other_tab.ok("chat.inject", {"sessionKey": key, "message": "psst"})["runId"] == run_id
    aborted = other_tab.ok("chat.abort", {"sessionKey": key})
    assert aborted == {"ok": True, "aborted": True, "runIds": [run_id]}
    answer = client.wait_response(send)
    assert answer["ok"] is True and answer["payload"]["aborted"] is True and answer["payload"]["runId"] == run_id
    assert answer["payload"]["content"] == "start "
    terminal = client.agent_events(run_id)[-1]
    assert terminal["type"] == "run.aborted" and terminal["payload"]["reason"] == "aborted"
    assert other_tab.wait_event(lambda e: e["event"] == "agent" and e["payload"]["type"] == "run.aborted")
    assert wait_until(lambda: llm_stub.stats()["open_streams"] == 0, timeout=5)
    assert wait_until(lambda: len(traces(admin, agent["id"], "cancelled")) == 1, timeout=5)
    assert client.ok("chat.history", {"sessionKey": key})["messages"][0] == {"role": "user", "content": "hang"}
    assert client.ok("chat.abort", {"runId": run_id}) == {"ok": True, "aborted": False, "runIds": []}
    # the session is free again
    llm_stub.reset()
    assert client.ok("chat.send", {"sessionKey": key, "message": "after"})["content"] == "echo: after"


def test_a_message_injected_during_the_answer_gets_its_own_turn(rpc, bot, llm_stub):
    owner = user()
    agent = bot(owner)
    llm_stub.reset()
    llm_stub.script({"wire": "openai", "text": "first answer", "delay": 3})
    client = rpc()
    client.login(TEST_TOKEN, owner)
    key = f"agent:{agent['name']}:ws-{owner}"
    send = client.send("chat.send", {"agentId": agent["name"], "sessionKey": key, "message": "one"})
    client.wait_event(lambda e: e["event"] == "agent" and e["payload"]["type"] == "run.started")
    assert client.ok("chat.inject", {"sessionKey": key, "message": "two"})["injected"] is True
    answer = client.wait_response(send)
    assert answer["payload"]["content"] == "echo: two"
    sent = [m["content"] for m in llm_stub.requests()[-1]["body"]["messages"] if m["role"] != "system"]
    assert sent == ["one", "first answer", "two"]
    injected = [e for e in client.agent_events() if e["type"] == "activity"
                and e["payload"]["phase"] == "injected_message"]
    assert injected[0]["payload"]["content"] == "two"
    history = [m["content"] for m in client.ok("chat.history", {"sessionKey": key})["messages"]]
    assert history == ["one", "first answer", "two", "echo: two"]


def test_chat_inject_without_a_run_adds_a_labelled_note(rpc, bot, llm_stub):
    owner = user()
    agent = bot(owner)
    client = rpc()
    client.login(TEST_TOKEN, owner)
    key = f"agent:{agent['name']}:ws-{owner}"
    client.ok("chat.send", {"agentId": agent["name"], "sessionKey": key, "message": "hello"})
    note = client.ok("chat.inject", {"sessionKey": key, "message": "remember this", "label": "system"})
    assert note["injected"] is False and note["messageId"]
    assert client.ok("chat.history", {"sessionKey": key})["messages"][-1] == {
        "role": "assistant", "content": "[system]\n\nremember this"}
    assert error_of(client.call("chat.inject", {"sessionKey": "agent:x:nowhere", "message": "x"}))[0] == "NOT_FOUND"


def test_disconnect_mid_run_cancels_it(rpc, bot, llm_stub, admin):
    owner = user()
    agent = bot(owner)
    llm_stub.reset()
    llm_stub.script({"wire": "openai", "chunks": ["start ", "never"], "hang_after": 2})
    client, watcher = rpc(), rpc()
    client.login(TEST_TOKEN, owner)
    watcher.login(TEST_TOKEN, owner)
    client.send("chat.send", {"agentId": agent["name"], "message": "hang", "stream": True})
    client.wait_event(lambda e: e["event"] == "agent" and e["payload"]["type"] == "chunk")
    client.close()
    event = watcher.wait_event(lambda e: e["event"] == "agent" and e["payload"]["type"] == "run.aborted")
    assert event["payload"]["payload"]["reason"] == "disconnected"
    assert wait_until(lambda: llm_stub.stats()["open_streams"] == 0, timeout=5)
    assert wait_until(lambda: len(traces(admin, agent["id"], "cancelled")) == 1, timeout=5)
    assert traces(admin, agent["id"], "cancelled")[0]["error"] == "client disconnected"


def test_events_reach_the_runs_user_and_admins_only(rpc, bot, llm_stub, make_key):
    owner, stranger_id = user(), user()
    agent = bot(owner)
    key, _ = make_key("operator.read", "operator.write")
    owner_client, admin_client, stranger, anonymous = rpc(), rpc(), rpc(), rpc()
    owner_client.login(key, owner)
    admin_client.login(TEST_TOKEN, "root")
    stranger.login(key, stranger_id)
    llm_stub.reset()
    result = owner_client.ok("chat.send", {"agentId": agent["name"], "message": "secret plans"})
    seen = admin_client.wait_event(lambda e: e["event"] == "agent" and e["payload"]["type"] == "run.completed"
                                   and e["payload"]["runId"] == result["runId"])
    assert seen["payload"]["userId"] == owner
    stranger.ok("health")  # a round trip after the run: anything for us would have arrived first
    assert stranger.agent_events(result["runId"]) == []
    anonymous.send("health")
    assert anonymous.next_frame()["error"]["code"] == "UNAUTHORIZED"
    assert anonymous.events == []


def test_sessions_methods_with_tenancy(rpc, bot, llm_stub):
    owner = user()
    agent = bot(owner)
    client, stranger = rpc(), rpc()
    client.login(TEST_TOKEN, owner)
    stranger_key, _ = make_operator_key(client)
    stranger.login(stranger_key, user())
    key = f"agent:{agent['name']}:ws-{owner}-s"
    client.ok("chat.send", {"agentId": agent["name"], "sessionKey": key, "message": "one"})
    listed = client.ok("sessions.list", {"agentId": agent["name"]})
    assert listed["total"] == 1
    info = listed["sessions"][0]
    assert info["key"] == key and info["messageCount"] == 2 and info["userID"] == owner and info["channel"] == "ws"
    assert client.ok("sessions.patch", {"key": key, "label": "Trip", "metadata": {"topic": "travel"}}) == {
        "ok": True, "key": key}
    info = client.ok("sessions.list", {"agentId": agent["name"]})["sessions"][0]
    assert info["label"] == "Trip" and info["metadata"] == {"topic": "travel"}
    preview = client.ok("sessions.preview", {"key": key})
    assert [m["role"] for m in preview["messages"]] == ["user", "assistant"] and preview["summary"] == ""
    # someone else's session does not exist for a stranger
    assert stranger.ok("sessions.list")["sessions"] == []
    for method in ("sessions.preview", "sessions.patch", "sessions.reset", "sessions.delete"):
        assert error_of(stranger.call(method, {"key": key, "label": "x"}))[0] == "NOT_FOUND", method
    assert stranger.ok("chat.history", {"sessionKey": key})["messages"] == []
    assert error_of(stranger.call("chat.send", {"sessionKey": key, "message": "hijack"}))[0] == "NOT_FOUND"
    assert error_of(stranger.call("chat.abort", {}))[0] == "INVALID_REQUEST"
    assert client.ok("sessions.reset", {"key": key}) == {"ok": True, "key": key}
    assert client.ok("sessions.preview", {"key": key})["messages"] == []
    assert client.ok("sessions.delete", {"key": key}) == {"ok": True, "key": key}
    assert error_of(client.call("sessions.preview", {"key": key}))[0] == "NOT_FOUND"
    assert error_of(client.call("sessions.patch", {"key": key, "metadata": {"n": 1}}))[0] in ("INVALID_REQUEST",
                                                                                             "NOT_FOUND")


# ---- several processes ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def second_gateway(database, tmp_path_factory):
    gw = start_gateway(database.dsn, tmp_path_factory.mktemp("gateway-b"), GOCLAW_WS_CONNECT_TIMEOUT="1")
    yield gw
    assert gw.stop() == 0, gw.log()


def peers_seen(client: Rpc, want_conns: bool) -> bool:
    peers = client.ok("health")["peers"]
    return any(p["conns"] > 0 for p in peers) if want_conns else bool(peers)


def test_abort_and_events_cross_processes(rpc, gateway, second_gateway, bot, llm_stub, admin):
    owner = user()
    agent = bot(owner)
    on_a, on_b = rpc(gateway.ws_url), rpc(second_gateway.ws_url)
    on_a.login(TEST_TOKEN, owner)
    on_b.login(TEST_TOKEN, owner)
    assert wait_until(lambda: peers_seen(on_a, want_conns=True), timeout=15)
    assert wait_until(lambda: peers_seen(on_b, want_conns=False), timeout=15)
    llm_stub.reset()
    llm_stub.script({"wire": "openai", "chunks": ["far ", "away"], "hang_after": 2})
    key = f"agent:{agent['name']}:ws-{owner}-x"
    long_message = "hang " + "ü" * 12_000  # over the NOTIFY limit: travels in fragments
    send = on_a.send("chat.send", {"agentId": agent["name"], "sessionKey": key, "message": long_message,
                                   "stream": True})
    started = on_b.wait_event(lambda e: e["event"] == "agent" and e["payload"]["type"] == "run.started")
    assert started["payload"]["payload"]["message"] == long_message
    run_id = started["payload"]["runId"]
    on_b.wait_event(lambda e: e["event"] == "agent" and e["payload"]["type"] == "chunk")
    # the session is busy on the other process too
    assert error_of(on_b.call("chat.send", {"sessionKey": key, "message": "me too"}))[0] == "FAILED_PRECONDITION"
    assert on_b.ok("chat.abort", {"runId": run_id}) == {"ok": True, "aborted": True, "runIds": [run_id]}
    assert on_a.wait_response(send)["payload"]["aborted"] is True
    assert on_b.wait_event(lambda e: e["event"] == "agent" and e["payload"]["type"] == "run.aborted")
    assert wait_until(lambda: llm_stub.stats()["open_streams"] == 0, timeout=5)
    assert wait_until(lambda: len(traces(admin, agent["id"], "cancelled")) == 1, timeout=5)


def test_an_http_wake_on_one_process_is_aborted_from_another(gateway, second_gateway, bot, llm_stub, rpc):
    owner = user()
    agent = bot(owner)
    on_b = rpc(second_gateway.ws_url)
    on_b.login(TEST_TOKEN, owner)
    assert wait_until(lambda: peers_seen(on_b, want_conns=False), timeout=15)
    llm_stub.reset()
    llm_stub.script({"wire": "openai", "hang_after": 0})

    async def wake_and_abort():
        async with httpx.AsyncClient(timeout=30) as http:
            wake = asyncio.create_task(http.post(
                f"{gateway.url}/v1/agents/{agent['id']}/wake", json={"message": "wake up"},
                headers={"Authorization": f"Bearer {TEST_TOKEN}", "X-GoClaw-User-Id": owner}))
            await asyncio.to_thread(on_b.wait_event, lambda e: e["event"] == "agent"
                                    and e["payload"]["type"] == "run.started" and e["payload"]["channel"] == "wake")
            aborted = await asyncio.to_thread(
                on_b.ok, "chat.abort", {"sessionKey": f"agent:{agent['name']}:wake:direct:{owner}"})
            return aborted, await wake

    aborted, response = asyncio.run(wake_and_abort())
    assert aborted["aborted"] is True and len(aborted["runIds"]) == 1
    assert response.status_code == 409 and "aborted" in response.json()["error"]


def test_an_unauthenticated_socket_is_closed_after_the_connect_timeout(second_gateway):
    client = Rpc(second_gateway.ws_url)
    try:
        assert client.close_code() == 1008
    finally:
        client.close()
