"""`chat.*` over the socket: a run per `chat.send`, streamed as `agent` events.

A run is the same as an HTTP one (domain.chat.start_run → agent.loop.run_loop → transcript and
trace through the write-behind writer), plus: it is registered in domain.runs (one run per
session key, abortable from anywhere), it reads the session's history first, it takes injected
messages at turn boundaries, and it emits the reference's event sequence:

    run.started · activity{thinking} · chunk* · tool.call* · tool.result* · activity{injected_message}
    · … · run.completed | run.failed | run.aborted

followed by the `res` of the `chat.send` (not when the socket that sent it is gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from agent.loop import Run, run_loop
from auth import Principal
from db import bus
from domain import chat, runs, sessions
from domain.ratelimit import credential_key
from gateway import state
from gateway.errors import ApiError, bad_request, not_found
from llm import Message, UpstreamError
from ws import protocol
from ws.connection import Connection
from ws.protocol import text_param

log = logging.getLogger("goclaw.ws")

MAX_MESSAGE_CHARS = 32_000
TRUNCATED_NOTE = "\n\n[System: the message was truncated to {n} characters]"
HISTORY_LIMIT = 100  # past messages fed to the model
MAX_CONTINUATIONS = 5  # extra turns for messages injected after the model's last answer
ARG_CUT = 500
RESULT_CUT = 1000
ERROR_CUT = 2000
DEFERRED = object()  # a method result meaning "the response is sent later"


def agent_ref(params: dict) -> str:
    """agentId (or agent), else the agent named by an `agent:<id>:…` session key, else default."""
    ref = text_param(params, "agentId", limit=100) or text_param(params, "agent", limit=100)
    if ref:
        return ref
    key = text_param(params, "sessionKey", limit=sessions.MAX_KEY)
    if key and key.startswith("agent:"):
        parts = key.split(":", 2)
        if len(parts) == 3 and parts[1]:
            return parts[1]
    return "default"


def default_key(agent_key: str, conn: Connection) -> str:
    return f"agent:{agent_key}:ws-{conn.id}"


def _cut(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        raw = value.encode()
        return value if len(raw) <= limit else raw[:limit].decode(errors="ignore") + "..."
    if isinstance(value, dict):
        return {k: _cut(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [_cut(v, limit) for v in value]
    return value


def usage_json(run: Run) -> dict:
    usage = chat.usage_json(run)
    if run.usage.cache_creation_tokens:
        usage["cache_creation_input_tokens"] = run.usage.cache_creation_tokens
    if run.usage.cache_read_tokens:
        usage["cache_read_input_tokens"] = run.usage.cache_read_tokens
    return usage


# ---- the history of recent sessions -------------------------------------------------------------

@dataclass
class Cached:
    owner: str  # the session's user id
    agent_id: Any
    messages: list[Message]
    chars: int


class HistoryCache:
    """The last HISTORY_LIMIT messages of sessions that ran here recently, so the next turn of a
    conversation needs neither a write-behind flush nor a history query. Bounded by sessions and
    characters (LRU). Dropped when anything else touches the session: another process's run
    (bus `runs` end), an HTTP run here, sessions.delete/reset or a note (bus `sessions`), and
    everything on a bus reconnect."""

    def __init__(self, max_sessions: int = 2048, max_chars: int = 16_000_000) -> None:
        self.max_sessions = max_sessions
        self.max_chars = max_chars
        self._entries: OrderedDict[str, Cached] = OrderedDict()
        self._chars = 0

    def get(self, key: str) -> Cached | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: str, owner: str, agent_id: Any, messages: list[Message]) -> None:
        self.drop(key)
        messages = messages[-HISTORY_LIMIT:]
        entry = Cached(owner, agent_id, messages, sum(len(m.content) for m in messages))
        self._entries[key] = entry
        self._chars += entry.chars
        while self._entries and (len(self._entries) > self.max_sessions or self._chars > self.max_chars):
            self._chars -= self._entries.popitem(last=False)[1].chars

    def drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._chars -= entry.chars

    def clear(self) -> None:
        self._entries.clear()
        self._chars = 0

    def __len__(self) -> int:
        return len(self._entries)


histories = HistoryCache()
_written: OrderedDict[str, None] = OrderedDict()  # sessions this process queued transcript writes for
MAX_WRITTEN = 50_000


def wrote(key: str) -> None:
    _written[key] = None
    _written.move_to_end(key)
    if len(_written) > MAX_WRITTEN:
        _written.popitem(last=False)


async def settle(key: str | None = None) -> None:
    """Read-your-writes before reading a session (`key`) or the session list (None): transcripts
    are written behind, so flush the writer — but only when this process has queued writes that
    matter. A session this process never wrote to needs no flush (and no wait on a busy writer)."""
    if state.writer.pending == 0:
        _written.clear()
        return
    if (key is None and _written) or (key is not None and key in _written):
        await state.writer.flush()


async def _on_session_changed(event: dict) -> None:
    if event.get("resync"):
        histories.clear()
    elif isinstance(event.get("key"), str):
        histories.drop(event["key"])


async def _on_peer_run(event: dict) -> None:
    if event.get("resync"):
        histories.clear()
    elif event.get("process") != runs.PROCESS_ID and isinstance(event.get("session"), str):
        histories.drop(event["session"])  # a turn written by another process


def _on_local_run(entry: runs.ActiveRun, kind: str, payload: dict) -> None:
    if kind in ("run.completed", "run.failed", "run.aborted"):
        wrote(entry.session_key)
        if entry.channel != "ws":
            histories.drop(entry.session_key)  # an HTTP run wrote to this session


_subscribed = False


def start() -> None:
    global _subscribed
    runs.add_sink(_on_local_run)
    if not _subscribed:
        _subscribed = True
        bus.subscribe("sessions", _on_session_changed)
        bus.subscribe("runs", _on_peer_run)


def stop() -> None:
    runs.remove_sink(_on_local_run)
    histories.clear()


def _history_of(past: list[Message], user_message: Message, run: Run) -> list[Message]:
    said = [m for m in run.produced if m.role in ("user", "assistant") and m.content]
    return [*past, user_message, *said]


# ---- chat.send --------------------------------------------------------------------------------

async def send(conn: Connection, req_id: str, params: dict) -> Any:
    principal = conn.principal
    assert principal is not None
    state.chat_limiter.check(credential_key(principal))
    message = params.get("message")
    if not isinstance(message, str) or not message.strip():
        raise ApiError(400, "error.required", "message")
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + TRUNCATED_NOTE.format(n=MAX_MESSAGE_CHARS)
    stream = params.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("stream must be a boolean")
    if params.get("media"):
        raise bad_request("media is not supported over WebSocket: upload with POST /v1/media/upload and link it")
    if not principal.user_id:
        raise ApiError(400, "error.ws_user_required")
    if len(conn.runs) >= conn.limits.max_runs:
        raise ApiError(429, "error.ws_too_many_runs", conn.limits.max_runs)
    agent = await chat.cached_agent(principal, agent_ref(params))
    key = text_param(params, "sessionKey", limit=sessions.MAX_KEY) or default_key(agent["agent_key"], conn)
    sessions.check_key(key)
    cached = histories.get(key)
    existing = {"user_id": cached.owner, "agent_id": cached.agent_id} if cached else await sessions.owner(key)
    if existing is not None:
        if not principal.is_admin and existing["user_id"] != principal.user_id:
            raise not_found("session", key)
        if existing["agent_id"] is not None and existing["agent_id"] != agent["id"]:
            raise bad_request(f"session {key} belongs to another agent")
    owner = existing["user_id"] if existing is not None else principal.user_id
    entry = runs.claim(principal, agent, key, "ws", exclusive=True, origin=conn.id, message=message)
    entry.task = asyncio.get_running_loop().create_task(
        _drive(conn, req_id, principal, agent, entry, message, stream, owner), name=f"ws-run-{conn.id[:8]}",
    )
    conn.runs.add(entry)
    entry.task.add_done_callback(lambda _task: _forget(conn, entry))  # also when cancelled before it ran
    return DEFERRED


def _forget(conn: Connection, entry: runs.ActiveRun) -> None:
    runs.release(entry)  # no-op once _drive released it with its outcome
    conn.runs.discard(entry)


async def _drive(conn: Connection, req_id: str, principal: Principal, agent: dict, entry: runs.ActiveRun,
                 message: str, stream: bool, owner: str) -> None:
    run: Run | None = None
    past: list[Message] = []
    partial: list[str] = []
    user_message = Message("user", message)
    status, error = "error", "internal error"
    outcome: tuple[str, dict] = ("run.failed", {"error": "internal error"})
    reply: str | None = None
    try:
        cached = histories.get(entry.session_key)
        if cached is not None:
            past = list(cached.messages)
        else:
            await settle(entry.session_key)  # its previous turn, if still queued here
            past = [Message(r["role"], r["content"])
                    for r in await sessions.history(entry.session_key, HISTORY_LIMIT)
                    if r["role"] in ("user", "assistant") and r["content"]]
        run = await chat.start_run(principal, agent, [*past, user_message], channel="ws",
                                   session_key=entry.session_key, stream=stream)
        runs.bind(entry, str(run.recorder.run_id))
        await _loop(entry, run, partial)
        status, error = "completed", None
        outcome = ("run.completed", runs.completed_payload(run.content, run.usage))
        reply = protocol.response(req_id, {"runId": entry.run_id, "content": run.content, "usage": usage_json(run)})
    except asyncio.CancelledError:
        reason = entry.abort_reason or "cancelled"
        status, error = "cancelled", ("aborted" if reason == "aborted" else "client disconnected")
        content = "".join(partial)
        outcome = ("run.aborted", {"reason": reason, "content": content})
        if reason == "aborted":
            payload: dict[str, Any] = {"runId": entry.run_id, "content": content, "aborted": True}
            if run is not None:
                payload["usage"] = usage_json(run)
            reply = protocol.response(req_id, payload)
    except UpstreamError as exc:
        failure = chat.upstream_error(exc)
        status, error = "error", exc.message
        outcome = ("run.failed", {"error": failure.message()})
        reply = _error(req_id, failure, conn.locale)
    except ApiError as exc:
        status, error = "error", exc.message()
        outcome = ("run.failed", {"error": exc.message()})
        reply = _error(req_id, exc, conn.locale)
    except Exception:
        log.exception("ws run failed")
        reply = protocol.error_response(req_id, protocol.INTERNAL, "internal error")
    finally:
        if run is not None:
            _record(run, principal, agent, entry, user_message, status, error, "".join(partial))
            wrote(entry.session_key)
            histories.put(entry.session_key, owner, agent["id"], _history_of(past, user_message, run))
        runs.release(entry, *outcome)
        conn.runs.discard(entry)
    if reply is not None:
        conn.push(reply)


def _error(req_id: str, exc: ApiError, locale: str) -> str:
    return protocol.error_response(req_id, protocol.error_code(exc), exc.message(locale),
                                   retry_after_ms=protocol.retry_after_ms(exc))


def _record(run: Run, principal: Principal, agent: dict, entry: runs.ActiveRun, user_message: Message,
            status: str, error: str | None, partial: str) -> None:
    """Transcript (the user's message always, then what the run produced, injected messages in
    place) and trace, through the write-behind writer (as domain.chat.finish_run)."""
    writer = state.writer
    sessions.record_turn(
        writer, agent=agent, user_id=principal.user_id, key=entry.session_key, channel="ws",
        messages=[user_message, *run.produced], run_id=run.recorder.run_id, usage=run.usage, model=run.model,
        provider=run.provider,
    )
    run.recorder.finish(writer, status=status, error=error, output=run.content or partial)


async def _loop(entry: runs.ActiveRun, run: Run, partial: list[str]) -> None:
    iteration = 1
    runs.emit(entry, "activity", {"phase": "thinking", "iteration": iteration})
    for continuation in range(MAX_CONTINUATIONS + 1):
        calls_open = 0
        async with contextlib.aclosing(run_loop(run)) as events:
            async for event in events:
                if event.kind == "text":
                    partial.append(event.text)
                    runs.emit(entry, "chunk", {"content": event.text})
                elif event.kind == "tool_call" and event.tool_call is not None:
                    calls_open += 1
                    call = event.tool_call
                    runs.emit(entry, "tool.call", {"name": call.name, "id": call.id,
                                                   "arguments": _cut(call.arguments, ARG_CUT)})
                elif event.kind == "tool_result" and event.tool_call is not None:
                    calls_open -= 1
                    call = event.tool_call
                    result: dict[str, Any] = {"name": call.name, "id": call.id, "is_error": event.is_error,
                                              "arguments": _cut(call.arguments, ARG_CUT),
                                              "result": _cut(event.text, RESULT_CUT)}
                    if event.is_error:
                        result["content"] = _cut(event.text, ERROR_CUT)
                    runs.emit(entry, "tool.result", result)
                    if calls_open == 0:  # a turn boundary: the next model call follows
                        partial.clear()
                        _drain_inbox(entry, run)
                        iteration += 1
                        runs.emit(entry, "activity", {"phase": "thinking", "iteration": iteration})
        if not entry.inbox or continuation == MAX_CONTINUATIONS:
            return
        # messages injected while the model was giving its final answer: keep going
        run.messages.append(Message("assistant", run.content))
        partial.clear()
        _drain_inbox(entry, run)
        iteration += 1
        runs.emit(entry, "activity", {"phase": "thinking", "iteration": iteration})


def _drain_inbox(entry: runs.ActiveRun, run: Run) -> None:
    while entry.inbox:
        text = entry.inbox.popleft()
        message = Message("user", text)
        run.messages.append(message)
        run.produced.append(message)
        runs.emit(entry, "activity", {"phase": "injected_message", "content": text[:200]})


# ---- chat.history, chat.abort, chat.inject ----------------------------------------------------

async def history(conn: Connection, params: dict) -> dict:
    principal = conn.principal
    assert principal is not None
    key = text_param(params, "sessionKey", limit=sessions.MAX_KEY) or default_key(agent_ref(params), conn)
    limit = params.get("limit", 200)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
        raise bad_request("limit must be an integer between 1 and 1000")
    await settle(key)
    return {"sessionKey": key, "messages": await sessions.visible_history(principal, key, limit)}


async def abort(conn: Connection, params: dict) -> dict:
    principal = conn.principal
    assert principal is not None
    run_id = text_param(params, "runId", limit=100)
    key = text_param(params, "sessionKey", limit=sessions.MAX_KEY)
    if not run_id and not key:
        raise ApiError(400, "error.required", "runId or sessionKey")
    result = await runs.abort(principal, run_id=run_id, session_key=key)
    return {"ok": True, **result}


async def inject(conn: Connection, params: dict) -> dict:
    principal = conn.principal
    assert principal is not None
    key = sessions.check_key(params.get("sessionKey"))
    message = params.get("message")
    if not isinstance(message, str) or not message.strip():
        raise ApiError(400, "error.required", "message")
    if len(message) > MAX_MESSAGE_CHARS:
        raise bad_request(f"message must be at most {MAX_MESSAGE_CHARS} characters")
    label = text_param(params, "label", limit=100)
    run_id = await runs.inject(principal, key, message)
    if run_id is not None:
        return {"ok": True, "injected": True, "runId": run_id, "messageId": str(uuid.uuid4())}
    await settle(key)  # the session's last turn may still be queued
    return {**await sessions.add_note(principal, key, message, label), "injected": False}
