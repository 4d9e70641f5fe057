"""The LLM adapters against the stub upstream, over real HTTP.

The stub runs as a subprocess (as in benchmarks); each test scripts it through
its control endpoints and then checks what the adapter returned and what went
over the wire.
"""

from __future__ import annotations

import asyncio
import math
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import pytest

from llm import (
    ChatRequest,
    Message,
    StreamEvent,
    ToolCall,
    ToolSpec,
    UpstreamError,
    UpstreamTimeout,
    create_http_client,
    make_client,
    verify,
)
from llm.base import MAX_DELAY, parse_retry_after
from llm.gemini import clean_schema

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[1]
KEY = "sk-test-secret-0123456789"
WIRES = {
    "openai": ("openai_compat", "/v1"),
    "anthropic": ("anthropic_native", "/anthropic/v1"),
    "gemini": ("gemini_native", "/gemini/v1beta"),
}
CHAT_PATHS = {
    "openai": "/v1/chat/completions",
    "anthropic": "/anthropic/v1/messages",
    "gemini": "/gemini/v1beta/models/",
}
EXEC_TOOL = ToolSpec(
    name="exec",
    description="Run a shell command",
    parameters={
        "type": "object",
        "properties": {"command": {"type": "string", "default": "ls", "examples": ["ls"]}},
        "required": ["command"],
        "additionalProperties": False,
    },
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def stub_url():
    port = _free_port()
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.stubs.llm_stub", "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(f"stub exited early: {log.read().decode(errors='replace')}")
        try:
            httpx.get(f"{url}/_stats", timeout=1).raise_for_status()
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("stub did not start")
            time.sleep(0.05)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


class Stub:
    """Synchronous handle on the stub's control endpoints."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=10)

    def script(self, *steps: dict[str, Any]) -> None:
        self.http.post("/_script", json=list(steps)).raise_for_status()

    def requests(self, path_prefix: str = "") -> list[dict[str, Any]]:
        return [r for r in self.http.get("/_requests").json() if r["path"].startswith(path_prefix)]

    def stats(self) -> dict[str, Any]:
        return self.http.get("/_stats").json()


@pytest.fixture
def stub(stub_url: str):
    s = Stub(stub_url)
    s.http.post("/_reset").raise_for_status()
    yield s
    s.http.close()


def run(
    stub: Stub,
    wire: str,
    fn: Callable[[Any], Awaitable[Any]],
    *,
    key: str = KEY,
    read_timeout: float = 30.0,
    on_retry: Callable[..., None] | None = None,
) -> Any:
    """Run `fn(adapter)` in a fresh event loop with a fresh shared client."""
    provider_type, base = WIRES[wire]

    async def main() -> Any:
        http = create_http_client(connect_timeout=5.0, read_timeout=read_timeout)
        try:
            adapter = make_client(provider_type, stub.url + base, key, http)
            adapter.on_retry = on_retry
            return await fn(adapter)
        finally:
            await http.aclose()

    return asyncio.run(main())


def ask(text: str = "hello world", **kw: Any) -> ChatRequest:
    return ChatRequest(model="stub-model", messages=[Message(role="user", content=text)], **kw)


async def collect(adapter: Any, req: ChatRequest) -> list[StreamEvent]:
    return [ev async for ev in adapter.stream(req)]


def chat(req: ChatRequest) -> Callable[[Any], Awaitable[Any]]:
    return lambda adapter: adapter.chat(req)


def stream(req: ChatRequest) -> Callable[[Any], Awaitable[Any]]:
    return lambda adapter: collect(adapter, req)


all_wires = pytest.mark.parametrize("wire", list(WIRES))


# -- chat and streaming ----------------------------------------------------------


@all_wires
def test_chat_text_with_usage(stub: Stub, wire: str) -> None:
    usage = {"input_tokens": 11, "output_tokens": 7, "cache_read_tokens": 4, "cache_creation_tokens": 2}
    stub.script({"wire": wire, "text": "Hello there", "usage": usage})
    resp = run(stub, wire, chat(ask(system="be brief")))
    assert resp.content == "Hello there"
    assert resp.finish_reason == "stop"
    assert resp.tool_calls == []
    assert resp.usage.output_tokens == 7
    assert resp.usage.cache_read_tokens == 4
    if wire == "anthropic":  # reported apart from input_tokens; normalised to be included
        assert resp.usage.input_tokens == 11 + 4 + 2
        assert resp.usage.cache_creation_tokens == 2
    else:
        assert resp.usage.input_tokens == 11
    assert resp.usage.total == resp.usage.input_tokens + 7


@all_wires
def test_chat_default_echo_and_length_finish(stub: Stub, wire: str) -> None:
    resp = run(stub, wire, chat(ask("ping")))
    assert resp.content == "echo: ping"
    stub.script({"wire": wire, "text": "cut", "finish": "length"})
    assert run(stub, wire, chat(ask())).finish_reason == "length"


@all_wires
def test_stream_text_arrives_incrementally(stub: Stub, wire: str) -> None:
    events = run(stub, wire, stream(ask("hello world")))
    texts = [e for e in events if e.kind == "text"]
    assert len(texts) >= 2
    assert "".join(e.text for e in texts) == "echo: hello world"
    assert [e.kind for e in events][-1] == "done"
    assert events.index(texts[-1]) < len(events) - 1
    done = events[-1]
    assert done.finish_reason == "stop"
    assert done.usage is not None and done.usage.output_tokens > 0 and done.usage.input_tokens > 0


@all_wires
def test_tool_call_non_streaming(stub: Stub, wire: str) -> None:
    stub.script({"wire": wire, "tool_call": {"name": "exec", "arguments": {"command": "ls -la", "n": 2}}})
    resp = run(stub, wire, chat(ask("list files", tools=[EXEC_TOOL])))
    assert resp.finish_reason == "tool_calls"
    assert len(resp.tool_calls) == 1
    call = resp.tool_calls[0]
    assert call.name == "exec"
    assert call.arguments == {"command": "ls -la", "n": 2}
    assert call.id


@all_wires
def test_tool_calls_streaming(stub: Stub, wire: str) -> None:
    stub.script(
        {
            "wire": wire,
            "text": "Let me look.",
            "tool_calls": [
                {"name": "exec", "arguments": {"command": "ls"}},
                {"name": "exec", "arguments": {"command": "pwd", "nested": {"a": [1, 2]}}},
            ],
        }
    )
    events = run(stub, wire, stream(ask("list files", tools=[EXEC_TOOL])))
    assert "".join(e.text for e in events if e.kind == "text") == "Let me look."
    calls = [e.tool_call for e in events if e.kind == "tool_call"]
    assert [c.arguments for c in calls] == [{"command": "ls"}, {"command": "pwd", "nested": {"a": [1, 2]}}]
    assert all(c.name == "exec" and c.id for c in calls)
    assert events[-1].kind == "done" and events[-1].finish_reason == "tool_calls"


# -- retries and failures ---------------------------------------------------------


@all_wires
def test_429_then_success_honours_retry_after(stub: Stub, wire: str) -> None:
    stub.script({"wire": wire, "status": 429, "message": "slow down", "retry_after": "1"})
    retries: list[tuple[int, float, UpstreamError]] = []
    resp = run(stub, wire, chat(ask("again")), on_retry=lambda n, delay, err: retries.append((n, delay, err)))
    assert resp.content == "echo: again"
    assert len(retries) == 1
    attempt, delay, err = retries[0]
    assert attempt == 1 and delay == 1.0
    assert err.status == 429 and err.message == "slow down"
    assert len(stub.requests(CHAT_PATHS[wire])) == 2


@all_wires
def test_500_three_times_gives_up(stub: Stub, wire: str) -> None:
    stub.script(*[{"wire": wire, "status": 500, "message": "boom"}] * 3)
    with pytest.raises(UpstreamError) as info:
        run(stub, wire, chat(ask()))
    assert info.value.status == 500
    assert info.value.message == "boom"
    assert len(stub.requests(CHAT_PATHS[wire])) == 3


@all_wires
def test_400_is_not_retried(stub: Stub, wire: str) -> None:
    stub.script({"wire": wire, "status": 400, "message": "bad request: model missing"})
    with pytest.raises(UpstreamError) as info:
        run(stub, wire, chat(ask()))
    assert info.value.status == 400
    assert info.value.message == "bad request: model missing"
    assert len(stub.requests(CHAT_PATHS[wire])) == 1


@all_wires
def test_streaming_connection_phase_is_retried(stub: Stub, wire: str) -> None:
    stub.script({"wire": wire, "status": 503, "message": "overloaded", "retry_after": "0"})
    events = run(stub, wire, stream(ask("x")))
    assert "".join(e.text for e in events if e.kind == "text") == "echo: x"


@all_wires
def test_dropped_non_streaming_response_is_retried(stub: Stub, wire: str) -> None:
    stub.script({"wire": wire, "drop_after": 1})
    resp = run(stub, wire, chat(ask("retry me")))
    assert resp.content == "echo: retry me"
    assert len(stub.requests(CHAT_PATHS[wire])) == 2


@all_wires
def test_slow_upstream_times_out(stub: Stub, wire: str) -> None:
    stub.script({"wire": wire, "delay": 3})
    with pytest.raises(UpstreamTimeout):
        run(stub, wire, chat(ask()), read_timeout=0.3)
    assert len(stub.requests(CHAT_PATHS[wire])) == 1  # a read timeout is final


@all_wires
def test_stream_dropped_halfway_raises(stub: Stub, wire: str) -> None:
    stub.script({"wire": wire, "drop_after": 2})
    seen: list[StreamEvent] = []

    async def consume(adapter: Any) -> None:
        async for ev in adapter.stream(ask("hello world")):
            seen.append(ev)

    with pytest.raises(UpstreamError) as info:
        run(stub, wire, consume)
    assert not isinstance(info.value, UpstreamTimeout)
    assert info.value.status is None
    assert all(e.kind != "done" for e in seen)
    assert len(stub.requests(CHAT_PATHS[wire])) == 1  # no retry once bytes flowed


@all_wires
def test_stream_that_hangs_times_out(stub: Stub, wire: str) -> None:
    stub.script({"wire": wire, "hang_after": 2})
    with pytest.raises(UpstreamTimeout):
        run(stub, wire, stream(ask()), read_timeout=0.5)


@all_wires
def test_cancelling_a_stream_closes_the_upstream(stub: Stub, wire: str) -> None:
    # Four frames reach the client (at least one text delta in every format), then the stub stalls.
    stub.script({"wire": wire, "hang_after": 4, "text": "one two three four five six"})

    async def cancel_mid_stream(adapter: Any) -> None:
        first = asyncio.Event()

        async def consume() -> None:
            async for ev in adapter.stream(ask()):
                if ev.kind == "text":
                    first.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(first.wait(), 10)
        assert stub.stats()["open_streams"] == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(stub, wire, cancel_mid_stream)
    while stub.stats()["open_streams"] != 0:  # the stub sees the disconnect
        time.sleep(0.02)


def test_error_message_never_contains_the_key(stub: Stub) -> None:
    stub.script({"wire": "openai", "status": 401, "body": {"error": {"message": f"Incorrect API key: {KEY}"}}})
    with pytest.raises(UpstreamError) as info:
        run(stub, "openai", chat(ask()))
    assert info.value.status == 401
    assert KEY not in info.value.message and KEY not in str(info.value)
    assert info.value.message.startswith("Incorrect API key")


def test_non_json_error_body_is_kept_as_text(stub: Stub) -> None:
    stub.script({"wire": "gemini", "status": 404, "body": "no such route"})
    with pytest.raises(UpstreamError) as info:
        run(stub, "gemini", chat(ask()))
    assert (info.value.status, info.value.message) == (404, "no such route")


# -- models, embeddings, verify --------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ("openai", ("stub-gpt", "stub-gpt")),
        ("anthropic", ("claude-stub-1", "Claude Stub 1")),
        ("gemini", ("gemini-stub", "Gemini Stub")),
    ],
)
def test_list_models(stub: Stub, wire: str, expected: tuple[str, str]) -> None:
    models = run(stub, wire, lambda a: a.list_models())
    assert len(models) >= 2
    assert (models[0].id, models[0].name) == expected


@pytest.mark.parametrize("wire", ["openai", "gemini"])
def test_embeddings(stub: Stub, wire: str) -> None:
    async def embed(adapter: Any) -> tuple[list[list[float]], list[list[float]], list[list[float]]]:
        a = await adapter.embed(["alpha", "beta"], "embed-model")
        b = await adapter.embed(["alpha"], "embed-model")
        c = await adapter.embed(["alpha"], "embed-model", dimensions=64)
        return a, b, c

    pair, single, small = run(stub, wire, embed)
    assert [len(v) for v in pair] == [384, 384]
    assert pair[0] != pair[1]
    assert single[0] == pair[0]  # deterministic per text
    assert len(small[0]) == 64
    assert math.isclose(sum(x * x for x in pair[0]), 1.0, rel_tol=1e-6)


def test_anthropic_has_no_embeddings(stub: Stub) -> None:
    with pytest.raises(UpstreamError, match="not supported"):
        run(stub, "anthropic", lambda a: a.embed(["x"], "any"))


@all_wires
def test_verify_valid_and_invalid(stub: Stub, wire: str) -> None:
    assert run(stub, wire, lambda a: verify(a, "stub-model")) == (True, None)
    stub.script({"wire": wire, "status": 401, "message": "invalid api key"})
    assert run(stub, wire, lambda a: verify(a, "stub-model")) == (False, "invalid api key")
    sent = stub.requests(CHAT_PATHS[wire])[-1]["body"]
    assert (sent.get("max_tokens") or sent.get("generationConfig", {}).get("maxOutputTokens")) == 1


def test_verify_never_raises_on_network_failure() -> None:
    async def check() -> tuple[bool, str | None]:
        async with create_http_client(connect_timeout=1.0) as http:
            adapter = make_client("openai_compat", f"http://127.0.0.1:{_free_port()}/v1", KEY, http)
            return await verify(adapter, "m")

    valid, error = asyncio.run(check())
    assert valid is False and error


# -- what goes over the wire -------------------------------------------------------

ROUND_TRIP = [
    Message(role="user", content="list files"),
    Message(role="assistant", content="", tool_calls=[ToolCall(id="call_1", name="exec", arguments={"command": "ls"})]),
    Message(role="tool", content="a.txt\nb.txt", tool_call_id="call_1"),
]


def _round_trip(wire: str, stub: Stub) -> dict[str, Any]:
    req = ChatRequest(model="stub-model", messages=ROUND_TRIP, tools=[EXEC_TOOL], system="You are helpful.")
    resp = run(stub, wire, chat(req))
    assert resp.content.startswith("echo: ")  # the stub echoes the tool result
    return stub.requests(CHAT_PATHS[wire])[-1]


def test_anthropic_wire(stub: Stub) -> None:
    sent = _round_trip("anthropic", stub)
    assert sent["headers"]["x-api-key"] == KEY
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    body = sent["body"]
    assert body["max_tokens"] == 4096
    assert body["system"][-1] == {"type": "text", "text": "You are helpful.", "cache_control": {"type": "ephemeral"}}
    assert body["tools"][0]["name"] == "exec" and body["tools"][0]["input_schema"]["required"] == ["command"]
    assert body["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "call_1", "name": "exec", "input": {"command": "ls"}}],
    }
    assert body["messages"][2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "a.txt\nb.txt"}],
    }
    events = run(stub, "anthropic", stream(ask()))
    assert events[-1].kind == "done"
    assert stub.requests(CHAT_PATHS["anthropic"])[-1]["body"]["stream"] is True


def test_gemini_wire(stub: Stub) -> None:
    sent = _round_trip("gemini", stub)
    assert sent["path"] == "/gemini/v1beta/models/stub-model:generateContent"
    assert KEY not in sent["path"] and KEY not in sent["query"]
    assert sent["headers"]["x-goog-api-key"] == KEY
    body = sent["body"]
    assert body["systemInstruction"] == {"parts": [{"text": "You are helpful."}]}
    decl = body["tools"][0]["functionDeclarations"][0]
    assert decl["parameters"] == {
        "type": "object",
        "properties": {"command": {"type": "string"}},
        "required": ["command"],
    }
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["contents"][1]["parts"] == [{"functionCall": {"name": "exec", "args": {"command": "ls"}}}]
    response = body["contents"][2]["parts"][0]["functionResponse"]
    assert response == {"name": "exec", "response": {"content": "a.txt\nb.txt"}}

    run(stub, "gemini", stream(ask()))
    streamed = stub.requests(CHAT_PATHS["gemini"])[-1]
    assert streamed["path"].endswith(":streamGenerateContent")
    assert streamed["query"] == "alt=sse"


def test_openai_wire(stub: Stub) -> None:
    sent = _round_trip("openai", stub)
    assert sent["headers"]["authorization"] == f"Bearer {KEY}"
    body = sent["body"]
    assert body["messages"][0] == {"role": "system", "content": "You are helpful."}
    assert body["tool_choice"] == "auto"
    assert body["tools"][0] == {
        "type": "function",
        "function": {"name": "exec", "description": "Run a shell command", "parameters": EXEC_TOOL.parameters},
    }
    assert body["messages"][2]["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "exec", "arguments": '{"command": "ls"}'}}
    ]
    assert body["messages"][3] == {"role": "tool", "tool_call_id": "call_1", "content": "a.txt\nb.txt"}

    run(stub, "openai", stream(ask()))
    streamed = stub.requests(CHAT_PATHS["openai"])[-1]["body"]
    assert streamed["stream"] is True and streamed["stream_options"] == {"include_usage": True}


def test_openai_reasoning_models_use_max_completion_tokens(stub: Stub) -> None:
    req = ChatRequest("o3-mini", [Message("user", "hi")], max_tokens=5, temperature=0.2)
    run(stub, "openai", chat(req))
    body = stub.requests(CHAT_PATHS["openai"])[-1]["body"]
    assert body["max_completion_tokens"] == 5
    assert "max_tokens" not in body and "temperature" not in body


# -- pure helpers ---------------------------------------------------------------------


def test_parse_retry_after() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("3600") == MAX_DELAY
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    from_date = parse_retry_after(formatdate(time.time() + 10, usegmt=True))
    assert from_date is not None and 0 < from_date <= 10
    assert parse_retry_after(formatdate(time.time() - 10, usegmt=True)) == 0.0


def test_clean_schema_inlines_refs_and_keeps_property_names() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "default": {"type": "string", "default": "x"},
            "item": {"$ref": "#/$defs/Item"},
            "choice": {"anyOf": [{"type": "string", "examples": ["a"]}, {"$ref": "#/$defs/Item"}]},
        },
        "$defs": {"Item": {"type": "object", "properties": {"n": {"type": "integer"}}, "additionalProperties": False}},
    }
    item = {"type": "object", "properties": {"n": {"type": "integer"}}}
    assert clean_schema(schema) == {
        "type": "object",
        "properties": {"default": {"type": "string"}, "item": item, "choice": {"anyOf": [{"type": "string"}, item]}},
    }
    recursive = {"$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}}}
    assert clean_schema({**recursive, "$ref": "#/$defs/Node"})["type"] == "object"


GEMINI_OPENAI_SHIM = "https://generativelanguage.googleapis.com/v1beta/openai"


def test_make_client_bases() -> None:
    async def build() -> list[str]:
        async with httpx.AsyncClient() as http:
            return [
                make_client("groq", None, "k", http).base_url,
                make_client("ollama", "http://gpu-box:11434", None, http).base_url,
                make_client("gemini_native", GEMINI_OPENAI_SHIM, "k", http).base_url,
                make_client("anthropic_native", "", "k", http).base_url,
            ]

    assert asyncio.run(build()) == [
        "https://api.groq.com/openai/v1",
        "http://gpu-box:11434/v1",
        "https://generativelanguage.googleapis.com/v1beta",
        "https://api.anthropic.com/v1",
    ]
    with pytest.raises(ValueError):
        make_client("nope", None, "k", httpx.AsyncClient())
