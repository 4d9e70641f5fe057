"""Conversations: a session (agent, user, key) and its messages, one row per message.

Turns are appended through the write-behind writer; readers that need every turn so far
(history over the WebSocket API) call `writer.flush()` first."""

from __future__ import annotations

import json

import db
from db import bus
from db.ids import uuid7
from domain import activity
from domain.paging import page
from gateway.errors import ApiError, bad_request, not_found
from llm import Message, Usage

UPSERT_SESSION = """
INSERT INTO sessions AS s (id, session_key, agent_id, user_id, channel, model, provider, input_tokens, output_tokens)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (session_key) DO UPDATE SET
    updated_at = now(), model = EXCLUDED.model, provider = EXCLUDED.provider,
    input_tokens = s.input_tokens + EXCLUDED.input_tokens,
    output_tokens = s.output_tokens + EXCLUDED.output_tokens
"""
INSERT_MESSAGE = """
INSERT INTO session_messages (session_id, role, content, tool_calls, tool_call_id, run_id)
SELECT id, %s, %s, %s, %s, %s FROM sessions WHERE session_key = %s
"""
HISTORY_SQL = """
SELECT m.role, m.content, m.tool_calls, m.tool_call_id, m.run_id, m.created_at
FROM session_messages m JOIN sessions s ON s.id = m.session_id
WHERE s.session_key = %s
ORDER BY m.id DESC LIMIT %s
"""


def session_key(agent_key: str, channel: str, user_id: str) -> str:
    return f"agent:{agent_key}:{channel}:direct:{user_id or 'anonymous'}"


def record_turn(
    writer, *, agent: dict, user_id: str, key: str, channel: str, messages: list[Message],
    run_id, usage: Usage, model: str, provider: str,
) -> None:
    """Queue the session upsert and this turn's messages (user message, tool rounds, reply)."""
    writer.add(UPSERT_SESSION, (
        uuid7(), key, agent["id"], user_id or None, channel, model, provider, usage.input_tokens, usage.output_tokens,
    ))
    for message in messages:
        calls = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in message.tool_calls]
        writer.add(INSERT_MESSAGE, (
            message.role, message.content, json.dumps(calls) if calls else None, message.tool_call_id, run_id, key,
        ))


async def history(key: str, limit: int = 200) -> list[dict]:
    """The last `limit` messages of a session, oldest first."""
    rows = await db.fetch_all(HISTORY_SQL, (key, limit))
    return list(reversed(rows))


# ---- sessions as objects: list, preview, patch, delete, reset (tenancy applied) -------------------
# A caller sees its own sessions (same user id; '' owns the sessions recorded without one), admins
# and owners see all. Anyone else's session is "not found", never "forbidden". Changes to a
# session's messages (delete, reset, note) are published as bus events of kind `sessions`, so
# processes caching a session's history drop it.

VISIBLE = "(%(admin)s OR coalesce(s.user_id, '') = %(user)s)"
SESSION_COLUMNS = """
s.id, s.session_key, coalesce(a.agent_key, '') AS agent_key, a.display_name AS agent_name, s.agent_id,
coalesce(s.user_id, '') AS user_id, s.channel, s.label, coalesce(s.summary, '') AS summary, s.model, s.provider,
s.input_tokens, s.output_tokens, s.metadata, s.created_at, s.updated_at,
(SELECT count(*) FROM session_messages m WHERE m.session_id = s.id) AS message_count
"""
AGENT_FILTER = "(%(agent)s::text IS NULL OR a.agent_key = %(agent)s OR a.id::text = %(agent)s)"
LIST_SESSIONS_SQL = f"""
SELECT {SESSION_COLUMNS}, count(*) OVER () AS total
FROM sessions s LEFT JOIN agents a ON a.id = s.agent_id
WHERE {VISIBLE} AND {AGENT_FILTER}
ORDER BY s.updated_at DESC, s.id DESC
LIMIT %(limit)s OFFSET %(offset)s
"""
COUNT_SESSIONS_SQL = f"""
SELECT count(*) AS n FROM sessions s LEFT JOIN agents a ON a.id = s.agent_id WHERE {VISIBLE} AND {AGENT_FILTER}
"""
GET_SESSION_SQL = f"""
SELECT {SESSION_COLUMNS} FROM sessions s LEFT JOIN agents a ON a.id = s.agent_id
WHERE s.session_key = %(key)s AND {VISIBLE}
"""
LOCK_SESSION_SQL = f"SELECT s.id FROM sessions s WHERE s.session_key = %(key)s AND {VISIBLE} FOR UPDATE"
OWNER_SQL = "SELECT id, agent_id, coalesce(user_id, '') AS user_id FROM sessions WHERE session_key = %s"
PATCH_SQL = """
UPDATE sessions SET
    label = CASE WHEN %(label_set)s THEN %(label)s ELSE label END,
    model = CASE WHEN %(model_set)s THEN %(model)s ELSE model END,
    metadata = (metadata || %(meta_set)s::jsonb) - %(meta_unset)s::text[],
    updated_at = now()
WHERE id = %(id)s
"""
DELETE_SESSION_SQL = "DELETE FROM sessions WHERE id = %s"
RESET_MESSAGES_SQL = "DELETE FROM session_messages WHERE session_id = %s"
RESET_SESSION_SQL = "UPDATE sessions SET summary = NULL, updated_at = now() WHERE id = %s"
NOTE_SQL = """
INSERT INTO session_messages (session_id, role, content) VALUES (%s, 'assistant', %s) RETURNING id
"""
TOUCH_SQL = "UPDATE sessions SET updated_at = now() WHERE id = %s"

MAX_KEY = 500
MAX_LABEL = 500
MAX_MODEL = 200
MAX_META_KEYS = 50
MAX_META_KEY = 100
MAX_META_VALUE = 2000
MAX_NOTE = 32_000


def _tenancy(principal) -> dict:
    return {"admin": principal.is_admin, "user": principal.user_id}


def check_key(key) -> str:
    if not isinstance(key, str) or not key.strip():
        raise ApiError(400, "error.required", "key")
    if len(key) > MAX_KEY or any(ord(ch) < 32 or ord(ch) == 127 for ch in key):
        raise bad_request(f"session key must be at most {MAX_KEY} printable characters")
    return key


def message_json(row: dict) -> dict:
    """A stored message as the wire shows it (the reference's Message: no timestamp, no id)."""
    out = {"role": row["role"], "content": row["content"]}
    if row.get("tool_calls"):
        out["tool_calls"] = row["tool_calls"]
    if row.get("tool_call_id"):
        out["tool_call_id"] = row["tool_call_id"]
    return out


async def owner(key: str) -> dict | None:
    """Who a session key belongs to ({id, agent_id, user_id}), or None for a new key."""
    return await db.fetch_one(OWNER_SQL, (key,))


async def list_sessions(principal, agent: str | None = None, limit: int | None = None,
                        offset: int | None = None) -> dict:
    limit, offset = page(limit, offset, default=20, max_limit=200)
    params = {**_tenancy(principal), "agent": agent or None, "limit": limit, "offset": offset}
    rows = await db.fetch_all(LIST_SESSIONS_SQL, params)
    if rows:
        total = rows[0]["total"]
    else:
        total = (await db.fetch_one(COUNT_SESSIONS_SQL, params))["n"] if offset else 0
    for row in rows:
        row.pop("total")
    return {"sessions": rows, "total": total, "limit": limit, "offset": offset}


async def count_sessions(principal) -> int:
    return (await db.fetch_one(COUNT_SESSIONS_SQL, {**_tenancy(principal), "agent": None}))["n"]


async def get_session(principal, key: str) -> dict:
    row = await db.fetch_one(GET_SESSION_SQL, {**_tenancy(principal), "key": check_key(key)})
    if row is None:
        raise not_found("session", key)
    return row


async def visible_history(principal, key: str, limit: int = 200) -> list[dict]:
    """The session's last messages if the caller may see it; [] for an unknown or foreign key."""
    if await db.fetch_one(GET_SESSION_SQL, {**_tenancy(principal), "key": check_key(key)}) is None:
        return []
    return [message_json(r) for r in await history(key, limit)]


async def preview(principal, key: str, limit: int = 200) -> dict:
    session = await get_session(principal, key)
    return {"key": key, "messages": [message_json(r) for r in await history(key, limit)],
            "summary": session["summary"]}


def _patch_values(label, model, metadata) -> dict:
    values = {"label_set": label is not None, "label": None, "model_set": model is not None, "model": None,
              "meta_set": "{}", "meta_unset": []}
    if label is not None:
        if not isinstance(label, str) or len(label) > MAX_LABEL:
            raise bad_request(f"label must be a string of at most {MAX_LABEL} characters")
        values["label"] = label.strip() or None
    if model is not None:
        if not isinstance(model, str) or len(model) > MAX_MODEL:
            raise bad_request(f"model must be a string of at most {MAX_MODEL} characters")
        values["model"] = model.strip() or None
    if metadata is not None:
        if not isinstance(metadata, dict) or len(metadata) > MAX_META_KEYS:
            raise bad_request(f"metadata must be an object of at most {MAX_META_KEYS} string values")
        for name, value in metadata.items():
            fits = value is None or (isinstance(value, str) and len(value) <= MAX_META_VALUE)
            if len(name) > MAX_META_KEY or not fits:
                raise bad_request(f"metadata values must be strings of at most {MAX_META_VALUE} characters"
                                  " (null removes an entry)")
        values["meta_set"] = json.dumps({k: v for k, v in metadata.items() if v is not None})
        values["meta_unset"] = [k for k, v in metadata.items() if v is None]
    return values


async def _locked(conn, principal, key: str) -> dict:
    row = await db.fetch_one(LOCK_SESSION_SQL, {**_tenancy(principal), "key": check_key(key)}, conn=conn)
    if row is None:
        raise not_found("session", key)
    return row


async def patch(principal, key: str, *, label=None, model=None, metadata=None) -> dict:
    """Set the label / model / metadata (a null metadata value removes that entry)."""
    values = _patch_values(label, model, metadata)
    async with db.transaction() as conn:
        row = await _locked(conn, principal, key)
        await db.execute(PATCH_SQL, {**values, "id": row["id"]}, conn=conn)
        fields = [f for f, given in (("label", label), ("model", model), ("metadata", metadata)) if given is not None]
        await activity.record(conn, principal, "session.updated", "session", str(row["id"]),
                              {"key": key, "fields": fields})
    return {"ok": True, "key": key}


async def delete(principal, key: str, writer=None) -> dict:
    """Delete the session and its messages (queued transcript writes are committed first, so
    they cannot bring it back)."""
    if writer is not None:
        await writer.flush()
    async with db.transaction() as conn:
        row = await _locked(conn, principal, key)
        await db.execute(DELETE_SESSION_SQL, (row["id"],), conn=conn)
        await activity.record(conn, principal, "session.deleted", "session", str(row["id"]), {"key": key})
        await bus.publish(conn, "sessions", key=key, action="deleted")
    return {"ok": True, "key": key}


async def reset(principal, key: str, writer=None) -> dict:
    """Forget the conversation (messages and summary); the session itself and its totals stay."""
    if writer is not None:
        await writer.flush()
    async with db.transaction() as conn:
        row = await _locked(conn, principal, key)
        removed = await db.execute(RESET_MESSAGES_SQL, (row["id"],), conn=conn)
        await db.execute(RESET_SESSION_SQL, (row["id"],), conn=conn)
        await activity.record(conn, principal, "session.reset", "session", str(row["id"]),
                              {"key": key, "messages": removed})
        await bus.publish(conn, "sessions", key=key, action="reset")
    return {"ok": True, "key": key}


async def add_note(principal, key: str, content: str, label: str | None = None) -> dict:
    """Append an assistant note to a session (`chat.inject` when no run is going on), written as
    the reference does: "[label]\\n\\ncontent" when labelled."""
    if not isinstance(content, str) or not content.strip():
        raise ApiError(400, "error.required", "message")
    if len(content) > MAX_NOTE:
        raise bad_request(f"message must be at most {MAX_NOTE} characters")
    if label is not None and (not isinstance(label, str) or len(label) > 100):
        raise bad_request("label must be a string of at most 100 characters")
    text = f"[{label.strip()}]\n\n{content}" if label and label.strip() else content
    async with db.transaction() as conn:
        row = await _locked(conn, principal, key)
        note = await db.fetch_one(NOTE_SQL, (row["id"], text), conn=conn)
        await db.execute(TOUCH_SQL, (row["id"],), conn=conn)
        await activity.record(conn, principal, "session.note_added", "session", str(row["id"]), {"key": key})
        await bus.publish(conn, "sessions", key=key, action="note_added")
    return {"ok": True, "messageId": str(note["id"])}
