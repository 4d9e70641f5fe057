"""The active-run registry: which agent runs are going on, on this process and on its peers.

* One run per session key: `claim(..., exclusive=True)` (WebSocket `chat.send`) is refused with
  409 `error.session_busy` while any run — local, or announced by a peer — holds the key. HTTP
  runs (completions, wake) register non-exclusively: they are visible and abortable, but the
  stateless OpenAI API never refuses a request because another one is going on.
* Abort by run id or session key cancels the asyncio task running the loop (the upstream call
  and the tool in flight with it). The caller must be the run's user or an admin.
* Lifecycle and intermediate events of a run go to the registered sinks (`add_sink`; the
  WebSocket router is one), in emission order.

Cross-process (several gateway processes on one database), all over PostgreSQL NOTIFY through
`db.bus`, best-effort:
* every process says hello every HELLO_INTERVAL s (with its count of authenticated WebSocket
  connections); peers unheard of for PEER_TTL s are forgotten. With no peer, nothing else is sent.
* with peers, runs are announced (`runs` start/end) so each process keeps a mirror of its peers'
  active runs (for the busy check and `isRunning`); a newcomer asks, and everyone re-announces.
* abort and inject are commands (`runs.cmd`) every peer executes on its own runs and answers
  (`runs.ack`); the caller waits for every live peer's answer (at most COMMAND_TIMEOUT s).
* everything is published by one `Relay` task per process, in order, many notifications per
  round trip; a payload over the 8000-byte NOTIFY limit is split into fragments (`relay.frag`)
  and put back together by the receivers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import db
from auth import Principal
from db import bus
from gateway.errors import ApiError

log = logging.getLogger("goclaw.runs")

PROCESS_ID = uuid.uuid4().hex[:12]
MAX_INBOX = 5  # injected messages waiting for the next turn of one run
HELLO_INTERVAL = 10.0
PEER_TTL = 3.5 * HELLO_INTERVAL
COMMAND_TIMEOUT = 3.0
ABORT_WAIT = 5.0  # how long an abort waits for the cancelled runs to wind down
NOTIFY_LIMIT = 7800  # PostgreSQL refuses NOTIFY payloads of 8000 bytes or more
FRAGMENT_RAW = 5600  # bytes of payload per fragment (base64 → ~7470 bytes)
RELAY_MAX_ITEMS = 10_000
RELAY_BATCH = 200
NOTIFY_MANY = "SELECT pg_notify(%s, x) FROM unnest(%s::text[]) AS x"

Sink = Callable[["ActiveRun", str, dict[str, Any]], None]


@dataclass(eq=False)
class ActiveRun:
    """One run in progress on this process."""

    session_key: str
    user_id: str
    agent_key: str
    agent_id: str
    channel: str
    exclusive: bool
    origin: str | None = None  # the WebSocket connection that started it
    message: str = ""
    run_id: str = ""  # known once the run is bound (its trace's run id)
    task: asyncio.Task | None = None
    abort_reason: str | None = None
    inbox: deque[str] = field(default_factory=lambda: deque(maxlen=MAX_INBOX))
    done: asyncio.Event = field(default_factory=asyncio.Event)
    started: float = field(default_factory=time.monotonic)

    def entitled(self, user_id: str, admin: bool) -> bool:
        return admin or (bool(user_id) and user_id == self.user_id)


# ---- local registry ---------------------------------------------------------------------------

_local: set[ActiveRun] = set()
_by_run: dict[str, ActiveRun] = {}
_by_session: dict[str, set[ActiveRun]] = {}
_remote: dict[str, dict[str, Any]] = {}  # run id → {session, user, agent, process}
_sinks: list[Sink] = []


def add_sink(sink: Sink) -> None:
    if sink not in _sinks:
        _sinks.append(sink)


def remove_sink(sink: Sink) -> None:
    if sink in _sinks:
        _sinks.remove(sink)


def emit(entry: ActiveRun, kind: str, payload: dict[str, Any]) -> None:
    """Hand one event of a run to every sink (synchronously, so order is kept)."""
    for sink in list(_sinks):
        try:
            sink(entry, kind, payload)
        except Exception:  # a faulty sink must not break the run
            log.exception("run event sink failed")


def busy(session_key: str) -> str | None:
    """The id of a run holding `session_key` ('' while it is starting), or None."""
    for entry in _by_session.get(session_key, ()):
        return entry.run_id
    for run_id, info in _remote.items():
        if info["session"] == session_key:
            return run_id
    return None


def local_runs() -> list[ActiveRun]:
    return list(_local)


def running_agents() -> set[str]:
    """Agent keys with a run in progress here or on a peer."""
    return {e.agent_key for e in _local} | {info["agent"] for info in _remote.values()}


def claim(
    principal: Principal, agent: dict, session_key: str, channel: str, *, exclusive: bool,
    origin: str | None = None, message: str = "",
) -> ActiveRun:
    """Register a run about to start. Exclusive claims refuse a session that is busy."""
    if exclusive:
        holder = busy(session_key)
        if holder is not None:
            raise ApiError(409, "error.session_busy", session_key, holder or "starting")
    entry = ActiveRun(
        session_key=session_key, user_id=principal.user_id, agent_key=agent["agent_key"], agent_id=str(agent["id"]),
        channel=channel, exclusive=exclusive, origin=origin, message=message,
    )
    _local.add(entry)
    _by_session.setdefault(session_key, set()).add(entry)
    return entry


def bind(entry: ActiveRun, run_id: str) -> None:
    """The run has its id: index it, announce it to peers, emit `run.started`."""
    entry.run_id = run_id
    _by_run[run_id] = entry
    _announce(entry, "start")
    emit(entry, "run.started", {"message": entry.message})


def release(entry: ActiveRun, outcome: str | None = None, payload: dict[str, Any] | None = None) -> None:
    """The run is over: emit its terminal event (`run.completed|failed|aborted`) and forget it."""
    if entry not in _local:
        return
    _local.discard(entry)
    holders = _by_session.get(entry.session_key)
    if holders is not None:
        holders.discard(entry)
        if not holders:
            del _by_session[entry.session_key]
    if entry.run_id:
        _by_run.pop(entry.run_id, None)
        if outcome:
            emit(entry, outcome, payload or {})
        _announce(entry, "end")
    entry.done.set()


def completed_payload(content: str, usage: Any) -> dict[str, Any]:
    """`run.completed` as the reference shapes it."""
    return {"content": content, "usage": {
        "prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens, "total_tokens": usage.total,
        "cache_creation_tokens": usage.cache_creation_tokens, "cache_read_tokens": usage.cache_read_tokens,
    }}


@contextlib.asynccontextmanager
async def tracked(run: Any, principal: Principal, agent: dict, channel: str):
    """Register an HTTP run (completions, wake) for its whole duration. Aborting it cancels the
    request's task; the abort surfaces as 409 `error.run_aborted` (a client disconnect stays a
    plain cancellation)."""
    recorder = run.recorder
    entry = claim(principal, agent, recorder.session_key, channel, exclusive=False, message=recorder.input_text)
    entry.task = asyncio.current_task()
    bind(entry, str(recorder.run_id))
    outcome, payload = "run.failed", {"error": "internal error"}
    try:
        yield entry
        outcome, payload = "run.completed", completed_payload(run.content, run.usage)
    except asyncio.CancelledError:
        outcome, payload = "run.aborted", {"reason": entry.abort_reason or "disconnected"}
        if entry.abort_reason is not None and entry.task is not None and entry.task.uncancel() == 0:
            raise ApiError(409, "error.run_aborted", entry.run_id) from None
        raise
    except ApiError as exc:
        payload = {"error": exc.message()}
        raise
    finally:
        release(entry, outcome, payload)


# ---- abort and inject (local part) ------------------------------------------------------------

def _targets(run_id: str | None, session_key: str | None) -> list[ActiveRun]:
    if run_id:
        entry = _by_run.get(run_id)
        if entry is None or (session_key and entry.session_key != session_key):
            return []
        return [entry]
    return list(_by_session.get(session_key or "", ()))


def _abort_local(user_id: str, admin: bool, run_id: str | None, session_key: str | None,
                 reason: str) -> list[ActiveRun]:
    aborted = []
    for entry in _targets(run_id, session_key):
        if not entry.entitled(user_id, admin) or entry.task is None or entry.task.done():
            continue
        if entry.abort_reason is None:
            entry.abort_reason = reason
            entry.task.cancel()
        aborted.append(entry)
    return aborted


async def _wait_done(entries: list[ActiveRun], within: float) -> None:
    if entries:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                for entry in entries:
                    await entry.done.wait()


def abort_origin(origin: str, reason: str = "disconnected") -> list[ActiveRun]:
    """Cancel every run a (now closed) WebSocket connection started."""
    aborted = []
    for entry in list(_local):
        if entry.origin == origin and entry.task is not None and not entry.task.done():
            entry.abort_reason = entry.abort_reason or reason
            entry.task.cancel()
            aborted.append(entry)
    return aborted


async def abort(principal: Principal, *, run_id: str | None = None, session_key: str | None = None,
                reason: str = "aborted") -> dict:
    """Abort the run `run_id`, or every run of `session_key`, wherever it runs. Returns
    `{aborted, runIds}` once the runs have wound down (or ABORT_WAIT s have passed)."""
    if not run_id and not session_key:
        raise ApiError(400, "error.required", "runId or sessionKey")
    local = _abort_local(principal.user_id, principal.is_admin, run_id, session_key, reason)
    args = {"run": run_id, "session": session_key, "user": principal.user_id, "admin": principal.is_admin,
            "reason": reason}
    remote, _ = await asyncio.gather(_command("abort", args), _wait_done(local, ABORT_WAIT))
    ids = [e.run_id for e in local if e.run_id] + [r for r in remote if r]
    return {"aborted": bool(local) or bool(remote), "runIds": ids}


def _inject_local(user_id: str, admin: bool, session_key: str, message: str) -> str | None:
    for entry in _by_session.get(session_key, ()):
        if not entry.entitled(user_id, admin) or entry.channel != "ws":
            continue  # only the WebSocket driver reads the inbox
        if len(entry.inbox) >= MAX_INBOX:
            raise ApiError(429, "error.inbox_full", session_key, MAX_INBOX)
        entry.inbox.append(message)
        return entry.run_id
    return None


async def inject(principal: Principal, session_key: str, message: str) -> str | None:
    """Queue a user message for the next turn of the session's run; its run id ('' while the run
    is starting), or None when the session has no run (here or on a peer) the caller may add to."""
    run_id = _inject_local(principal.user_id, principal.is_admin, session_key, message)
    if run_id is not None:
        return run_id
    if not any(info["session"] == session_key for info in _remote.values()):
        return None
    args = {"session": session_key, "user": principal.user_id, "admin": principal.is_admin, "message": message}
    answers = await _command("inject", args)
    for answer in answers:
        if isinstance(answer, dict) and answer.get("error") == "inbox_full":
            raise ApiError(429, "error.inbox_full", session_key, MAX_INBOX)
        if isinstance(answer, str):
            return answer  # '' while the run is starting
    return None


# ---- peers, announcements and commands --------------------------------------------------------

@dataclass
class Peer:
    conns: int
    seen: float


_peers: dict[str, Peer] = {}
_pending: dict[str, tuple[set[str], list, asyncio.Event]] = {}
_connection_count: Callable[[], int] = lambda: 0  # noqa: E731 - replaced by the WebSocket server
_tasks: list[asyncio.Task] = []
_acks: set[asyncio.Task] = set()
_started = False


def set_connection_counter(counter: Callable[[], int]) -> None:
    global _connection_count
    _connection_count = counter


def live_peers() -> list[str]:
    now = time.monotonic()
    for process in [p for p, peer in _peers.items() if now - peer.seen > PEER_TTL]:
        _forget_peer(process)
    return list(_peers)


def peers() -> list[dict[str, Any]]:
    """The live peer processes and their authenticated WebSocket connection counts."""
    live_peers()
    return [{"process": process, "conns": peer.conns} for process, peer in _peers.items()]


def peers_listening() -> bool:
    """True when some live peer holds authenticated WebSocket connections (events may matter)."""
    return any(peer.conns > 0 for peer in _peers.values()) and bool(live_peers())


def _forget_peer(process: str) -> None:
    _peers.pop(process, None)
    for run_id in [r for r, info in _remote.items() if info["process"] == process]:
        del _remote[run_id]
    for waiter_expected, _, event in _pending.values():
        waiter_expected.discard(process)
        if not waiter_expected:
            event.set()


def _announce(entry: ActiveRun, action: str) -> None:
    if _peers:
        relay.send("runs", {"action": action, "process": PROCESS_ID, "run": entry.run_id,
                            "session": entry.session_key, "user": entry.user_id, "agent": entry.agent_key})


def hello(ask: bool = False) -> None:
    """Tell peers we exist (and how many WebSocket clients we hold); `ask` asks them to answer."""
    if _started:
        relay.send("gw.hello", {"process": PROCESS_ID, "conns": _connection_count(), "ask": ask})


async def _command(op: str, args: dict[str, Any]) -> list:
    peers = live_peers()
    if not peers:
        return []
    req = uuid.uuid4().hex
    expected, results, event = set(peers), [], asyncio.Event()
    _pending[req] = (expected, results, event)
    try:
        relay.send("runs.cmd", {"op": op, "req": req, "from": PROCESS_ID, **args})
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(COMMAND_TIMEOUT):
                await event.wait()
    finally:
        _pending.pop(req, None)
    return results


async def _on_hello(event: dict) -> None:
    if event.get("resync"):
        _peers.clear()
        _remote.clear()
        hello(ask=True)
        return
    process = event.get("process")
    if not process or process == PROCESS_ID:
        return
    if event.get("bye"):
        _forget_peer(process)
        return
    new = process not in _peers
    _peers[process] = Peer(int(event.get("conns") or 0), time.monotonic())
    if event.get("ask") or new:
        if event.get("ask"):
            hello()
        for entry in list(_local):
            if entry.run_id:
                _announce(entry, "start")


async def _on_runs(event: dict) -> None:
    if event.get("resync") or event.get("process") == PROCESS_ID:
        return
    run_id = event.get("run")
    if not run_id:
        return
    if event.get("action") == "start":
        _remote[run_id] = {"session": event.get("session") or "", "user": event.get("user") or "",
                           "agent": event.get("agent") or "", "process": event.get("process")}
    else:
        _remote.pop(run_id, None)


def _on_command(event: dict) -> None:
    """Execute a peer's command on our runs now; answer from a task (the bus listener must not
    wait for runs to wind down)."""
    if event.get("resync") or event.get("from") == PROCESS_ID:
        return
    user, admin = event.get("user") or "", bool(event.get("admin"))
    entries: list[ActiveRun] = []
    results: list = []
    if event.get("op") == "abort":
        entries = _abort_local(user, admin, event.get("run"), event.get("session"), event.get("reason") or "aborted")
        results = [e.run_id for e in entries]
    elif event.get("op") == "inject":
        try:
            run_id = _inject_local(user, admin, event.get("session") or "", event.get("message") or "")
            results = [] if run_id is None else [run_id]
        except ApiError:
            results = [{"error": "inbox_full"}]
    ack = {"req": event.get("req"), "to": event.get("from"), "process": PROCESS_ID, "results": results}
    if not entries:
        relay.send("runs.ack", ack)
        return

    async def answer_when_done() -> None:
        await _wait_done(entries, COMMAND_TIMEOUT / 2)  # within the caller's wait
        relay.send("runs.ack", ack)

    task = asyncio.get_running_loop().create_task(answer_when_done())
    _acks.add(task)
    task.add_done_callback(_acks.discard)


async def _on_ack(event: dict) -> None:
    if event.get("resync") or event.get("to") != PROCESS_ID:
        return
    waiter = _pending.get(event.get("req") or "")
    if waiter is None:
        return
    expected, results, done = waiter
    results.extend(event.get("results") or [])
    expected.discard(event.get("process"))
    if not expected:
        done.set()


# ---- the relay: ordered, batched, fragmenting NOTIFY publisher --------------------------------

class Relay:
    """Publishes bus events in the order they were sent, many per round trip (one statement).
    Items marked `droppable` (streaming chunks) are dropped when the queue is full; a batch the
    database refuses is dropped with a warning (cross-process delivery is best-effort)."""

    def __init__(self) -> None:
        self._items: deque[tuple[str, dict[str, Any], bool]] = deque()
        self._wake = asyncio.Event()
        self._seq = itertools.count(1)
        self._task: asyncio.Task | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.dropped = 0

    def send(self, kind: str, payload: dict[str, Any], *, droppable: bool = False,
             merge: Callable[[dict, dict], dict | None] | None = None) -> None:
        if droppable:
            if len(self._items) >= RELAY_MAX_ITEMS:
                self.dropped += 1
                return
            if merge is not None and self._items:
                last_kind, last, last_droppable = self._items[-1]
                if last_kind == kind and last_droppable:
                    merged = merge(last, payload)
                    if merged is not None:
                        self._items[-1] = (kind, merged, True)
                        return
        self._items.append((kind, payload, droppable))
        self._idle.clear()
        self._wake.set()

    def encode(self, kind: str, payload: dict[str, Any]) -> list[str]:
        body = json.dumps({"kind": kind, "n": next(self._seq), **payload}, separators=(",", ":"), default=str)
        if len(body) <= NOTIFY_LIMIT:
            return [body]
        raw = body.encode()
        ident = uuid.uuid4().hex[:16]
        pieces = [raw[i:i + FRAGMENT_RAW] for i in range(0, len(raw), FRAGMENT_RAW)]
        return [
            json.dumps({"kind": "relay.frag", "p": PROCESS_ID, "id": ident, "i": i, "c": len(pieces),
                        "d": base64.b64encode(piece).decode()}, separators=(",", ":"))
            for i, piece in enumerate(pieces)
        ]

    async def run(self) -> None:
        while True:
            self._idle.set()
            await self._wake.wait()
            self._wake.clear()
            while self._items:
                batch = [self._items.popleft() for _ in range(min(RELAY_BATCH, len(self._items)))]
                bodies = [body for kind, payload, _ in batch for body in self.encode(kind, payload)]
                try:
                    await db.execute(NOTIFY_MANY, (bus.CHANNEL, bodies))
                except Exception as exc:  # best effort: a peer that misses a command times out
                    self.dropped += len(batch)
                    log.warning("relay: publishing %d event(s) failed (%s)", len(batch), exc.__class__.__name__)
                    await asyncio.sleep(0.5)

    async def drain(self, within: float = 2.0) -> None:
        """Wait until everything sent so far is published (at most `within` seconds)."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._idle.wait()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="goclaw-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._items.clear()


relay = Relay()
_fragments: dict[str, tuple[float, dict[int, bytes], int]] = {}
MAX_FRAGMENT_SETS = 256


async def _on_fragment(event: dict) -> None:
    if event.get("resync"):
        _fragments.clear()
        return
    if event.get("p") == PROCESS_ID:
        return
    ident, index, count = event.get("id"), event.get("i"), event.get("c")
    if not isinstance(ident, str) or not isinstance(index, int) or not isinstance(count, int):
        return
    now = time.monotonic()
    for stale in [k for k, (t, _, _) in _fragments.items() if now - t > 30.0]:
        del _fragments[stale]
    if ident not in _fragments and len(_fragments) >= MAX_FRAGMENT_SETS:
        return
    _, parts, _ = _fragments.setdefault(ident, (now, {}, count))
    try:
        parts[index] = base64.b64decode(event.get("d") or "")
    except ValueError:
        return
    if len(parts) == count:
        del _fragments[ident]
        try:
            whole = json.loads(b"".join(parts[i] for i in range(count)))
        except (ValueError, KeyError):
            return
        await bus.dispatch(whole)


async def _heartbeat() -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10.0):
            await bus.connected.wait()
    hello(ask=True)
    while True:
        await asyncio.sleep(HELLO_INTERVAL)
        hello()
        live_peers()  # expire the silent ones


_subscribed = False


def start() -> None:
    """Start the relay and the heartbeat (from the app lifespan, after the bus)."""
    global _started, _subscribed
    if _started:
        return
    _started = True
    if not _subscribed:
        _subscribed = True
        bus.subscribe("gw.hello", _on_hello)
        bus.subscribe("runs", _on_runs)
        bus.subscribe("runs.cmd", _on_command)
        bus.subscribe("runs.ack", _on_ack)
        bus.subscribe("relay.frag", _on_fragment)
    relay.start()
    _tasks.append(asyncio.get_running_loop().create_task(_heartbeat(), name="goclaw-peers"))


async def stop() -> None:
    global _started
    if not _started:
        return
    relay.send("gw.hello", {"process": PROCESS_ID, "bye": True})
    await relay.drain()
    _started = False
    for task in _tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    _tasks.clear()
    await relay.stop()
    _peers.clear()
    _remote.clear()
