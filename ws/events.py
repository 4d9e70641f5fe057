"""Who receives which event.

Only authenticated connections receive events, and only those they are entitled to:
* `agent` (run events): the run's own user (every connection authenticated with that user id)
  and admins (gateway token, admin keys, GOCLAW_OWNER_IDS). A run without a user id: admins only.
* `log`: connections that started `logs.tail` (admin scope), from this process's buffer.
* `shutdown`: every authenticated connection of the stopping process.

Cross-process: the process running a run delivers to its own connections directly (every
chunk, no database involved). When some peer process holds authenticated connections
(`runs.peers_listening()`), the event is also published through the relay (`ws.event`):
consecutive chunks of one run are merged while they wait, payloads over the NOTIFY limit are
fragmented, and chunks are the first thing dropped under pressure. Each peer delivers to its own
entitled connections. With a single process nothing goes through the database.
"""

from __future__ import annotations

import logging
from typing import Any

from db import bus
from domain import logs, runs
from ws import protocol
from ws.connection import Connection

log = logging.getLogger("goclaw.ws")

DROPPABLE = frozenset({"chunk", "thinking", "activity", "tool.call", "tool.result", "block.reply"})

_conns: set[Connection] = set()  # authenticated
_admins: set[Connection] = set()
_by_user: dict[str, set[Connection]] = {}
_tails: set[Connection] = set()


def attach(conn: Connection) -> None:
    """`conn` has just authenticated (again): index it by user id and admin-ness."""
    detach(conn, announce=False)
    principal = conn.principal
    if principal is None:
        return
    was_empty = not _conns
    _conns.add(conn)
    if principal.is_admin:
        _admins.add(conn)
    if principal.user_id:
        _by_user.setdefault(principal.user_id, set()).add(conn)
    if was_empty:
        runs.hello()  # peers now have a reason to send us events


def detach(conn: Connection, *, announce: bool = True) -> None:
    if conn not in _conns:
        _tails.discard(conn)
        return
    _conns.discard(conn)
    _admins.discard(conn)
    _tails.discard(conn)
    for user, members in list(_by_user.items()):
        if conn in members:
            members.discard(conn)
            if not members:
                del _by_user[user]
    if announce and not _conns:
        runs.hello()


def count() -> int:
    return len(_conns)


def connections() -> list[Connection]:
    return list(_conns)


def _deliver(user_id: str, frame: str, droppable: bool) -> None:
    for conn in _admins:
        conn.push(frame, droppable=droppable)
    if user_id:
        for conn in _by_user.get(user_id, ()):
            if conn not in _admins:
                conn.push(frame, droppable=droppable)


def broadcast(frame: str) -> None:
    for conn in list(_conns):
        conn.push(frame)


# ---- run events ----------------------------------------------------------------------------------

def envelope(entry: runs.ActiveRun, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The reference's AgentEvent: {type, agentId, runId, payload, userId, channel, chatId}."""
    body: dict[str, Any] = {"type": kind, "agentId": entry.agent_key, "runId": entry.run_id,
                            "sessionKey": entry.session_key, "userId": entry.user_id, "channel": entry.channel,
                            "payload": payload}
    if entry.origin:
        body["chatId"] = entry.origin
    return body


def on_run_event(entry: runs.ActiveRun, kind: str, payload: dict[str, Any]) -> None:
    """The sink registered with domain.runs: local delivery now, peers through the relay.
    Nothing is built when no connection here or on a peer could receive it (plain HTTP traffic)."""
    local = bool(_admins) or bool(entry.user_id and _by_user.get(entry.user_id))
    remote = runs.peers_listening()
    if not (local or remote):
        return
    body = envelope(entry, kind, payload)
    droppable = kind in DROPPABLE
    if local:
        _deliver(entry.user_id, protocol.event("agent", body), droppable)
    if remote:
        runs.relay.send("ws.event", {"o": runs.PROCESS_ID, "u": entry.user_id, "d": droppable, "e": body},
                        droppable=droppable, merge=_merge_chunks)


def _merge_chunks(older: dict, newer: dict) -> dict | None:
    a, b = older["e"], newer["e"]
    if a["type"] != "chunk" or b["type"] != "chunk" or a["runId"] != b["runId"]:
        return None
    merged = dict(a, payload={"content": a["payload"].get("content", "") + b["payload"].get("content", "")})
    return {**older, "e": merged}


async def _on_remote_event(event: dict) -> None:
    if event.get("resync") or event.get("o") == runs.PROCESS_ID:
        return
    body = event.get("e")
    if not isinstance(body, dict) or not _conns:
        return
    _deliver(str(event.get("u") or ""), protocol.event("agent", body), bool(event.get("d")))


# ---- logs ------------------------------------------------------------------------------------

def tail(conn: Connection, level: int | None) -> None:
    """Start (level) or stop (None) the `log` events of a connection."""
    conn.log_level = level
    if level is None:
        _tails.discard(conn)
    else:
        _tails.add(conn)


def _on_log(record: dict[str, Any]) -> None:
    if not _tails:
        return
    frame = None
    for conn in list(_tails):
        if conn.log_level is not None and record["levelno"] >= conn.log_level:
            frame = frame or protocol.event("log", logs.public(record))
            conn.push(frame, droppable=True)


_started = False
_subscribed = False


def start() -> None:
    global _started, _subscribed
    if _started:
        return
    _started = True
    runs.add_sink(on_run_event)
    runs.set_connection_counter(count)
    logs.subscribe(_on_log)
    if not _subscribed:  # bus subscriptions live as long as the process
        _subscribed = True
        bus.subscribe("ws.event", _on_remote_event)


def stop() -> None:
    global _started
    _started = False
    runs.remove_sink(on_run_event)
    logs.unsubscribe(_on_log)
