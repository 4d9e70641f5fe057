"""Provider-neutral request/response shapes shared by every adapter.

The agent loop speaks only these types; each adapter translates them to and
from one wire format, so nothing above `llm/` knows which provider it talks to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "tool_calls", "length"]
EventKind = Literal["text", "tool_call", "done"]


@dataclass
class ToolCall:
    """A function call requested by the model; `arguments` is already parsed.

    `thought_signature` is an opaque token some Gemini models attach to calls;
    it must be sent back unchanged with the call on the next turn.
    """

    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    thought_signature: str | None = None


@dataclass
class Message:
    """One conversation turn. Tool results use role="tool" plus `tool_call_id`
    (and `name`, which Gemini needs to match a result to its call)."""

    role: Role
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None


@dataclass
class ToolSpec:
    """A tool offered to the model; `parameters` is a JSON schema object."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass
class ChatRequest:
    """`system` is sent ahead of any role="system" messages in `messages`."""

    model: str
    messages: list[Message]
    tools: Sequence[ToolSpec] = ()
    max_tokens: int | None = None
    temperature: float | None = None
    system: str | None = None


@dataclass
class Usage:
    """Token counts normalised across providers.

    `input_tokens` counts every prompt token, cached or not; `cache_read_tokens`
    and `cache_creation_tokens` are the parts of it served from / written to
    the provider's prompt cache (Anthropic reports these separately; they are
    added back in so the meaning is the same for every provider).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass
class ChatResponse:
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: FinishReason = "stop"
    usage: Usage = field(default_factory=Usage)
    model: str = ""


@dataclass
class StreamEvent:
    """One streaming event: a text delta, a complete tool call, or the final
    'done' carrying usage and finish reason (always the last event)."""

    kind: EventKind
    text: str = ""
    tool_call: ToolCall | None = None
    usage: Usage | None = None
    finish_reason: FinishReason | None = None


@dataclass
class Model:
    """An entry from a provider's model listing."""

    id: str
    name: str
