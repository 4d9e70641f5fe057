"""Chat runs: OpenAI-compatible completions and agent wake-ups, on the agent loop.

One place decides how a request becomes a run: which agent (`goclaw:<agent>` / `agent:<agent>`
/ X-GoClaw-Agent-Id / `default`), which provider and model (the agent's), which messages (the
caller's, with the agent's system prompt first), which session records the turn, and how the run
is traced. HTTP and WebSocket callers share it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator

from agent import skills
from agent.loop import Run, RunEvent, run_loop
from agent.tools import ToolContext, tools_for_agent
from auth import Principal
from auth.principal import validate_user_id
from db import bus
from domain import agents, providers, runs, sessions
from domain.cache import TTLCache
from domain.ratelimit import credential_key
from domain.tracing import TraceRecorder
from domain.workspace import agent_root
from gateway import state
from gateway.errors import ApiError
from llm import Message, UpstreamError, UpstreamTimeout

AGENT_PREFIXES = ("goclaw:", "agent:")
_agents = TTLCache(ttl=5.0)
_toolsets = TTLCache(ttl=5.0)  # building a ToolSet reads several tables; reuse it between requests
bus.subscribe("agents", _agents.clear)
for _kind in ("agents", "builtin_tools", "custom_tools", "mcp_servers", "skills"):
    bus.subscribe(_kind, _toolsets.clear)


def agent_ref(model: str | None, header_agent: str | None) -> str:
    for prefix in AGENT_PREFIXES:
        if model and model.startswith(prefix) and len(model) > len(prefix):
            return model[len(prefix):]
    return header_agent or "default"


async def cached_agent(principal: Principal, ref: str) -> dict:
    key = (principal.is_admin, principal.user_id, ref)
    agent = await _agents.get_or_load(key, lambda: agents.resolve(principal, ref))
    if agent["status"] != "active":
        raise ApiError(409, "error.agent_inactive", agent["agent_key"], agent["status"])
    return agent


def upstream_error(exc: UpstreamError) -> ApiError:
    if isinstance(exc, UpstreamTimeout):
        return ApiError(504, "error.upstream_timeout")
    return ApiError(502, "error.upstream", exc.message)


async def _equipment(principal: Principal, agent: dict) -> tuple[object | None, object | None, str]:
    """The agent's ToolSet and its context ((None, None) without tools) and its skills prompt.
    Building them reads several tables, so they are cached briefly and dropped on any change."""
    async def build() -> tuple:
        return (await tools_for_agent(principal, agent), await skills.skills_prompt(principal, agent),
                agent_root(agent["agent_key"], principal.user_id))

    toolset, skills_prompt, workspace = await _toolsets.get_or_load(
        (agent["id"], agent["updated_at"], principal.user_id), build)
    if not len(toolset):
        return None, None, skills_prompt
    return toolset, ToolContext(principal=principal, agent=agent, workspace=workspace), skills_prompt


async def start_run(
    principal: Principal, agent: dict, messages: list[Message], *, channel: str, session_key: str | None,
    stream: bool, max_tokens: int | None = None, temperature: float | None = None,
) -> Run:
    adapter, provider = await providers.get_adapter(agent["provider"])
    tools, tool_context, skills_prompt = await _equipment(principal, agent)
    system_parts = [agent["system_prompt"]] if agent.get("system_prompt") else []
    system_parts += [skills_prompt] if skills_prompt else []
    system_parts += [m.content for m in messages if m.role == "system" and m.content]
    conversation = [m for m in messages if m.role != "system"]
    last_user = next((m.content for m in reversed(conversation) if m.role == "user"), "")
    key = session_key or sessions.session_key(agent["agent_key"], channel, principal.user_id)
    recorder = TraceRecorder(
        agent=agent, user_id=principal.user_id, session_key=key, channel=channel, input_text=last_user,
    )
    return Run(
        adapter=adapter, provider=provider["name"], model=agent["model"] or provider.get("default_model") or "",
        system="\n\n".join(system_parts) or None, messages=conversation, recorder=recorder, tools=tools,
        tool_context=tool_context, max_iterations=agent.get("max_tool_iterations") or 20, stream=stream,
        max_tokens=max_tokens, temperature=temperature,
    )


def finish_run(run: Run, principal: Principal, agent: dict, *, channel: str, status: str, error: str | None) -> None:
    """Queue the transcript and the trace (off the response path)."""
    writer = state.writer
    recorder = run.recorder
    user_turn = [m for m in run.messages if m.role == "user"][-1:]
    sessions.record_turn(
        writer, agent=agent, user_id=principal.user_id, key=recorder.session_key, channel=channel,
        messages=user_turn + run.produced, run_id=recorder.run_id, usage=run.usage, model=run.model,
        provider=run.provider,
    )
    recorder.finish(writer, status=status, error=error, output=run.content)


def outcome(exc: BaseException | None) -> tuple[str, str | None]:
    """The trace status for how a run ended."""
    if exc is None:
        return "completed", None
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "cancelled", "client disconnected"
    if isinstance(exc, UpstreamError):
        return "error", exc.message
    return "error", repr(exc)


@contextlib.asynccontextmanager
async def traced(run: Run, principal: Principal, agent: dict, channel: str):
    """Run the body; whatever happens (success, upstream failure, client gone) the run is recorded."""
    failure: BaseException | None = None
    try:
        yield
    except UpstreamError as exc:
        failure = exc
        raise upstream_error(exc) from exc
    except BaseException as exc:
        failure = exc
        raise
    finally:
        status, error = outcome(failure)
        finish_run(run, principal, agent, channel=channel, status=status, error=error)


# ---- OpenAI-compatible /v1/chat/completions -------------------------------------------------

def parse_messages(raw: list[dict]) -> list[Message]:
    return [Message(m["role"], m.get("content") or "") for m in raw]


def completion_id(run: Run) -> str:
    return "chatcmpl-" + run.recorder.run_id.hex[:24]


def usage_json(run: Run) -> dict:
    usage = run.usage
    return {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens, "total_tokens": usage.total}


async def prepare_completion(principal: Principal, body: dict, headers) -> tuple[Run, dict, Principal]:
    state.chat_limiter.check(credential_key(principal))
    user_id = principal.user_id or validate_user_id(body.get("user"))
    if user_id != principal.user_id:
        principal = dataclasses.replace(principal, user_id=user_id)
    messages = parse_messages(body["messages"])
    if not any(m.role == "user" and m.content.strip() for m in messages):
        raise ApiError(400, "error.no_user_message")
    agent = await cached_agent(principal, agent_ref(body.get("model"), headers.get("x-goclaw-agent-id")))
    session_key = headers.get("x-goclaw-session-key")
    if session_key:  # another tenant's session: 404, never append this turn to it (as chat.send)
        existing = await sessions.owner(session_key)
        if existing is not None and not principal.is_admin and existing["user_id"] != principal.user_id:
            raise ApiError(404, "error.not_found", "session", session_key)
    run = await start_run(
        principal, agent, messages, channel="http", session_key=session_key,
        stream=bool(body.get("stream")), max_tokens=body.get("max_tokens") or body.get("max_completion_tokens"),
        temperature=body.get("temperature"),
    )
    return run, agent, principal


async def complete(principal: Principal, body: dict, headers) -> dict:
    run, agent, principal = await prepare_completion(principal, body, headers)
    async with runs.tracked(run, principal, agent, "http"), traced(run, principal, agent, "http"):
        async for _ in run_loop(run):
            pass
    return {
        "id": completion_id(run),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model") or f"goclaw:{agent['agent_key']}",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": run.content},
                     "finish_reason": run.finish_reason}],
        "usage": usage_json(run),
    }


async def stream_completion(principal: Principal, body: dict, headers) -> AsyncIterator[bytes]:
    """SSE bytes. The first upstream event is awaited before returning, so an upstream that fails
    at once still gets a proper HTTP error status instead of a broken 200 stream."""
    run, agent, principal = await prepare_completion(principal, body, headers)
    model = body.get("model") or f"goclaw:{agent['agent_key']}"
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    events = run_loop(run)
    try:
        first = await anext(events)
    except BaseException as exc:
        await events.aclose()
        status, error = outcome(exc)
        finish_run(run, principal, agent, channel="http", status=status, error=error)
        if isinstance(exc, UpstreamError):
            raise upstream_error(exc) from exc
        raise
    return _sse(run, principal, agent, model, include_usage, first, events)


async def _sse(run: Run, principal: Principal, agent: dict, model: str, include_usage: bool,
               first: RunEvent, events: AsyncIterator[RunEvent]) -> AsyncIterator[bytes]:
    created = int(time.time())
    ident = completion_id(run)
    failure: BaseException | None = None

    def frame(payload: dict) -> bytes:
        return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"

    def chunk(delta: dict, finish: str | None = None) -> bytes:
        return frame({"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                      "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    # a text delta is most of a stream: the frame around it is the same every time, so it is
    # encoded once and only the text is encoded per chunk (bytes equal to `chunk({"content": t})`)
    before, after = chunk({"content": ""}).rsplit(b'"content": ""', 1)

    def text_chunk(text: str) -> bytes:
        return before + b'"content": ' + json.dumps(text, ensure_ascii=False).encode() + after

    try:
        yield chunk({"role": "assistant", "content": ""})
        event: RunEvent | None = first
        while event is not None:
            if event.kind == "text":
                yield text_chunk(event.text)
            elif event.kind == "tool_call" and event.tool_call is not None:
                # SSE comments: visible to curious clients, ignored by OpenAI SDKs
                yield f": tool_call {event.tool_call.name}\n\n".encode()
            elif event.kind == "tool_result" and event.tool_call is not None:
                yield f": tool_result {event.tool_call.name} {'error' if event.is_error else 'ok'}\n\n".encode()
            event = await anext(events, None)
        yield chunk({}, run.finish_reason)
        if include_usage:
            yield frame({"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                         "choices": [], "usage": usage_json(run)})
        yield b"data: [DONE]\n\n"
    except UpstreamError as exc:  # the upstream failed mid-stream: tell the client in-band
        failure = exc
        yield frame({"error": {"message": upstream_error(exc).message(), "type": "upstream_error"}})
        yield b"data: [DONE]\n\n"
    except BaseException as exc:
        failure = exc
        raise
    finally:
        await events.aclose()
        status, error = outcome(failure)
        finish_run(run, principal, agent, channel="http", status=status, error=error)


# ---- POST /v1/agents/{id}/wake --------------------------------------------------------------

async def wake(principal: Principal, ref: str, message: str, user_id: str | None) -> dict:
    """Run the agent on one message, continuing its wake session, and return the reply."""
    if not message:
        raise ApiError(400, "error.required", "message")
    if user_id and not principal.user_id:
        principal = dataclasses.replace(principal, user_id=validate_user_id(user_id))
    state.chat_limiter.check(credential_key(principal))
    agent = await cached_agent(principal, ref)
    key = sessions.session_key(agent["agent_key"], "wake", principal.user_id)
    await state.writer.flush()
    past = [Message(r["role"], r["content"]) for r in await sessions.history(key, 40)
            if r["role"] in ("user", "assistant")]
    run = await start_run(principal, agent, [*past, Message("user", message)], channel="wake", session_key=key,
                          stream=False)
    async with runs.tracked(run, principal, agent, "wake"), traced(run, principal, agent, "wake"):
        async for _ in run_loop(run):
            pass
    return {"content": run.content, "run_id": str(run.recorder.run_id), "trace_id": str(run.recorder.id),
            "usage": usage_json(run)}
