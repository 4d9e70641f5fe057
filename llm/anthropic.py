"""Anthropic Messages API wire format."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from typing import Any

from llm.base import BaseClient, encoded_once
from llm.convert import finish_reason, parse_arguments, system_texts
from llm.errors import UpstreamError
from llm.types import (
    ChatRequest,
    ChatResponse,
    Message,
    Model,
    StreamEvent,
    ToolCall,
    ToolSpec,
    Usage,
)

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096  # the API requires max_tokens on every call
_MAX_MODEL_PAGES = 10


def _blocks(m: Message) -> list[dict[str, Any]]:
    """Content blocks for one message. Empty text blocks are left out because
    the API rejects them."""
    if m.role == "tool":
        return [{"type": "tool_result", "tool_use_id": m.tool_call_id or "", "content": m.content}]
    blocks: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
    if m.role == "assistant":
        blocks += [{"type": "tool_use", "id": tc.id, "name": tc.name, "input": tc.arguments} for tc in m.tool_calls]
    return blocks


def _messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Tool results travel as user messages; consecutive same-role messages
    are merged so all results for one assistant turn sit in the next user
    message, as the API requires."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue  # carried in the top-level `system` field
        role = "assistant" if m.role == "assistant" else "user"
        blocks = _blocks(m)
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return out


def _tool_specs(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    return [{"name": t.name, "description": t.description, "input_schema": t.parameters} for t in tools]


def build_body(req: ChatRequest, *, stream: bool) -> dict[str, Any]:
    """Translate a ChatRequest into a /messages body.

    The system prompt is the large, stable prefix of every agent turn, so its
    last block carries an ephemeral cache breakpoint: tools + system are then
    served from Anthropic's prompt cache on later turns.
    """
    body: dict[str, Any] = {
        "model": req.model,
        "max_tokens": req.max_tokens or DEFAULT_MAX_TOKENS,
        "messages": _messages(req.messages),
    }
    system = [{"type": "text", "text": t} for t in system_texts(req)]
    if system:
        system[-1]["cache_control"] = {"type": "ephemeral"}
        body["system"] = system
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.tools:
        body["tools"] = encoded_once(req.tools, _tool_specs)
    if stream:
        body["stream"] = True
    return body


def parse_usage(raw: dict[str, Any] | None) -> Usage:
    """Anthropic's input_tokens excludes cache reads/writes; add them back."""
    raw = raw or {}
    read = raw.get("cache_read_input_tokens") or 0
    created = raw.get("cache_creation_input_tokens") or 0
    return Usage(
        input_tokens=(raw.get("input_tokens") or 0) + read + created,
        output_tokens=raw.get("output_tokens") or 0,
        cache_read_tokens=read,
        cache_creation_tokens=created,
    )


def parse_response(data: dict[str, Any]) -> ChatResponse:
    blocks = data.get("content") or []
    calls = [
        ToolCall(id=b.get("id", ""), name=b.get("name", "").strip(), arguments=b.get("input") or {})
        for b in blocks
        if b.get("type") == "tool_use"
    ]
    return ChatResponse(
        content="".join(b.get("text", "") for b in blocks if b.get("type") == "text"),
        tool_calls=calls,
        finish_reason=finish_reason(data.get("stop_reason") == "max_tokens", bool(calls)),
        usage=parse_usage(data.get("usage")),
        model=data.get("model") or "",
    )


class AnthropicClient(BaseClient):
    """Adapter for the Anthropic Messages API."""

    def auth_headers(self) -> dict[str, str]:
        return {"x-api-key": self.api_key, "anthropic-version": API_VERSION}

    async def chat(self, req: ChatRequest) -> ChatResponse:
        data = await self.request_json("POST", "messages", json_body=build_body(req, stream=False))
        if not isinstance(data, dict):
            raise UpstreamError(None, "unexpected response shape")
        response = parse_response(data)
        response.model = response.model or req.model
        return response

    async def stream(self, req: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Yield text deltas as they arrive; each tool call is emitted when its
        content block closes (its JSON input arrives in fragments)."""
        open_blocks: dict[int, dict[str, str]] = {}
        raw_usage: dict[str, Any] = {}
        stop_reason: str | None = None
        stopped = False
        has_calls = False
        events = self.stream_sse("POST", "messages", json_body=build_body(req, stream=True))
        async with aclosing(events):
            async for ev in events:
                try:
                    data = json.loads(ev.data)
                except ValueError:
                    continue
                kind = data.get("type") or ev.event
                index = data.get("index", 0)
                if kind == "message_start":
                    raw_usage.update((data.get("message") or {}).get("usage") or {})
                elif kind == "content_block_start":
                    block = data.get("content_block") or {}
                    open_blocks[index] = {
                        "type": block.get("type", ""),
                        "id": block.get("id", ""),
                        "name": block.get("name", ""),
                        "json": "",
                    }
                    if block.get("type") == "text" and block.get("text"):
                        yield StreamEvent("text", text=block["text"])
                elif kind == "content_block_delta":
                    delta = data.get("delta") or {}
                    if delta.get("type") == "text_delta" and delta.get("text"):
                        yield StreamEvent("text", text=delta["text"])
                    elif delta.get("type") == "input_json_delta" and index in open_blocks:
                        open_blocks[index]["json"] += delta.get("partial_json") or ""
                elif kind == "content_block_stop":
                    block = open_blocks.pop(index, None)
                    if block and block["type"] == "tool_use":
                        has_calls = True
                        call = ToolCall(
                            id=block["id"],
                            name=block["name"].strip(),
                            arguments=parse_arguments(block["json"]),
                        )
                        yield StreamEvent("tool_call", tool_call=call)
                elif kind == "message_delta":
                    stop_reason = (data.get("delta") or {}).get("stop_reason") or stop_reason
                    usage = data.get("usage") or {}
                    raw_usage.update({k: v for k, v in usage.items() if v is not None})
                elif kind == "message_stop":
                    stopped = True
                    break
                elif kind == "error":
                    err = data.get("error") or {}
                    raise UpstreamError(None, f"{err.get('type', 'error')}: {err.get('message', 'stream error')}")
        if not stopped and stop_reason is None:
            raise UpstreamError(None, "stream ended before message_stop")
        yield StreamEvent(
            "done",
            usage=parse_usage(raw_usage),
            finish_reason=finish_reason(stop_reason == "max_tokens", has_calls),
        )

    async def list_models(self) -> list[Model]:
        models: list[Model] = []
        params: dict[str, Any] = {"limit": 1000}
        for _ in range(_MAX_MODEL_PAGES):
            data = await self.request_json("GET", "models", params=params) or {}
            items = data.get("data") or []
            models += [Model(id=m["id"], name=m.get("display_name") or m["id"]) for m in items if m.get("id")]
            if not data.get("has_more") or not items:
                break
            params = {"limit": 1000, "after_id": data.get("last_id") or items[-1]["id"]}
        return models

    async def embed(self, texts: list[str], model: str, dimensions: int | None = None) -> list[list[float]]:
        raise UpstreamError(None, "embeddings are not supported by the Anthropic API")
