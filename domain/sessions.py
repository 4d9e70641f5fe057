"""Conversations: a session (agent, user, key) and its messages, one row per message.

Turns are appended through the write-behind writer; readers that need every turn so far
(history over the WebSocket API) call `writer.flush()` first."""

from __future__ import annotations

import json

import db
from db.ids import uuid7
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
