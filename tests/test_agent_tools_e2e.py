"""The agent loop end to end: through /v1/chat/completions, the (stub) model calls a built-in
tool, a custom tool and an MCP tool in one turn, gets their results, and answers; the trace shows
one span per call."""

from __future__ import annotations

import json
import sys
import uuid

import openai

from tests.support.processes import TEST_TOKEN, wait_until


def test_model_calls_builtin_custom_and_mcp_tools_then_answers(gateway, admin, llm_stub):
    suffix = uuid.uuid4().hex[:6]
    user = {"X-GoClaw-User-Id": "tooluser"}
    provider = admin.post("/v1/providers", json={"name": f"tools-{suffix}", "provider_type": "openai_compat",
                                                 "api_base": llm_stub.openai_base, "api_key": "sk-tools"})
    assert provider.status_code == 201
    agent = admin.post("/v1/agents", headers=user, json={"name": f"tooler-{suffix}", "provider": f"tools-{suffix}",
                                                         "model": "gpt-4o-mini"}).json()
    custom = admin.post("/v1/tools/custom", headers=user, json={
        "name": f"shout-{suffix}", "description": "Echo text back",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        "command": ["echo", "{{text}}"]})
    assert custom.status_code == 201, custom.text
    server = admin.post("/v1/mcp/servers", headers=user, json={
        "name": f"calc-{suffix}", "transport": "stdio", "command": sys.executable,
        "args": ["-m", "tests.stubs.mcp_server"], "timeout_seconds": 20})
    assert server.status_code == 201, server.text
    mcp_tool = f"mcp_calc_{suffix}__add"  # the server name, made identifier-safe

    llm_stub.reset()
    llm_stub.script([
        {"wire": "openai", "tool_calls": [
            {"id": "c1", "name": "current_time", "arguments": {}},
            {"id": "c2", "name": f"shout-{suffix}", "arguments": {"text": "hello; rm -rf /"}},
            {"id": "c3", "name": mcp_tool, "arguments": {"a": 2, "b": 3}},
        ]},
        {"wire": "openai", "text": "All three tools answered."},
    ])
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=TEST_TOKEN, max_retries=0, default_headers=user)
    reply = client.chat.completions.create(model=f"goclaw:tooler-{suffix}",
                                           messages=[{"role": "user", "content": "use your tools"}])
    assert reply.choices[0].message.content == "All three tools answered."

    offered = {t["function"]["name"] for t in llm_stub.requests()[0]["body"]["tools"]}
    assert {"current_time", f"shout-{suffix}", mcp_tool} <= offered
    fed_back = [m for m in llm_stub.requests()[1]["body"]["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in fed_back] == ["c1", "c2", "c3"]  # results in call order
    assert "hello; rm -rf /" in fed_back[1]["content"]  # the argument stayed one inert argv element
    assert "5" in fed_back[2]["content"]

    def trace_done() -> bool:
        return admin.get("/v1/traces", params={"agent_id": agent["id"]}).json()["total"] == 1

    assert wait_until(trace_done, timeout=5)
    trace = admin.get("/v1/traces", params={"agent_id": agent["id"]}).json()["traces"][0]
    spans = admin.get(f"/v1/traces/{trace['id']}").json()["spans"]
    assert [s["span_type"] for s in spans].count("llm_call") == 2
    tool_spans = {s["name"]: s for s in spans if s["span_type"] == "tool_call"}
    assert set(tool_spans) == {"current_time", f"shout-{suffix}", mcp_tool}
    assert all(s["status"] == "completed" and s["duration_ms"] is not None for s in tool_spans.values())
    assert json.loads(tool_spans[mcp_tool]["input_preview"]) == {"a": 2, "b": 3}
    assert trace["tool_call_count"] == 3


def test_a_tool_argument_that_breaks_the_schema_is_fed_back_as_an_error(gateway, admin, llm_stub):
    suffix = uuid.uuid4().hex[:6]
    user = {"X-GoClaw-User-Id": "tooluser"}
    admin.post("/v1/providers", json={"name": f"bad-{suffix}", "provider_type": "openai_compat",
                                      "api_base": llm_stub.openai_base, "api_key": "sk-tools"})
    admin.post("/v1/agents", headers=user, json={"name": f"badargs-{suffix}", "provider": f"bad-{suffix}",
                                                 "model": "gpt-4o-mini"})
    llm_stub.reset()
    llm_stub.script([
        {"wire": "openai", "tool_calls": [{"id": "x1", "name": "read_file", "arguments": {"path": 42}}]},
        {"wire": "openai", "text": "I could not read it."},
    ])
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=TEST_TOKEN, max_retries=0, default_headers=user)
    reply = client.chat.completions.create(model=f"goclaw:badargs-{suffix}",
                                           messages=[{"role": "user", "content": "read"}])
    assert reply.choices[0].message.content == "I could not read it."
    (result,) = [m for m in llm_stub.requests()[1]["body"]["messages"] if m["role"] == "tool"]
    assert "path" in result["content"]


def test_a_repeated_identical_tool_call_stops_the_loop(gateway, admin, llm_stub):
    suffix = uuid.uuid4().hex[:6]
    user = {"X-GoClaw-User-Id": "tooluser"}
    admin.post("/v1/providers", json={"name": f"loop-{suffix}", "provider_type": "openai_compat",
                                      "api_base": llm_stub.openai_base, "api_key": "sk-tools"})
    admin.post("/v1/agents", headers=user, json={"name": f"looper-{suffix}", "provider": f"loop-{suffix}",
                                                 "model": "gpt-4o-mini"})
    same_call = {"wire": "openai", "tool_calls": [{"id": "r", "name": "list_files", "arguments": {}}]}
    llm_stub.reset()
    llm_stub.script([same_call] * 5)
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=TEST_TOKEN, max_retries=0, default_headers=user)
    reply = client.chat.completions.create(model=f"goclaw:looper-{suffix}",
                                           messages=[{"role": "user", "content": "loop"}])
    assert reply.choices[0].message.content.startswith("Stopped: the model repeated")
    assert len(llm_stub.requests()) == 2
    llm_stub.reset()
