"""Small conversions several adapters need."""

from __future__ import annotations

import json
import uuid
from typing import Any

from llm.types import ChatRequest, FinishReason


def system_texts(req: ChatRequest) -> list[str]:
    """The request's system prompt followed by any role="system" messages,
    for formats that carry the system prompt outside the message list."""
    texts = [req.system] if req.system else []
    texts += [m.content for m in req.messages if m.role == "system" and m.content]
    return texts


def parse_arguments(raw: Any) -> dict[str, Any]:
    """Decode tool-call arguments sent as a JSON string.

    Models occasionally emit broken JSON; rather than failing the whole turn
    the raw text is kept under "_raw" so the tool layer can report it back.
    """
    if isinstance(raw, dict):
        return raw
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return {"_raw": str(raw)}
    return value if isinstance(value, dict) else {"_raw": str(raw)}


def finish_reason(raw_length: bool, has_tool_calls: bool) -> FinishReason:
    """Tool calls win over whatever the provider said (some say "stop")."""
    if has_tool_calls:
        return "tool_calls"
    return "length" if raw_length else "stop"


def new_call_id() -> str:
    """An id for tool calls whose provider gives none (Gemini)."""
    return f"call_{uuid.uuid4().hex[:16]}"
