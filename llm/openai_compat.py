"""OpenAI Chat Completions wire format: OpenAI itself and every provider that
copies it (Groq, DeepSeek, Mistral, xAI, Ollama, ...)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from typing import Any

from llm.base import BaseClient, encoded_once
from llm.convert import finish_reason, new_call_id, parse_arguments
from llm.errors import UpstreamError, message_from_body
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

EMBED_BATCH = 256

# Reasoning models reject `max_tokens` (they want `max_completion_tokens`) and
# any non-default temperature.
_REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")


def _is_reasoning_model(model: str) -> bool:
    return model.lower().rsplit("/", 1)[-1].startswith(_REASONING_PREFIXES)


def _message(m: Message) -> dict[str, Any]:
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id or "", "content": m.content}
    if m.role == "assistant" and m.tool_calls:
        out: dict[str, Any] = {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": tc.id,
                    "type": "function",
                    "function": {"name": tc.name, "arguments": json.dumps(tc.arguments)},
                }
                for tc in m.tool_calls
            ],
        }
        if m.content:
            out["content"] = m.content
        return out
    return {"role": m.role, "content": m.content}


def _tool_specs(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
            for t in tools]


def build_body(req: ChatRequest, *, stream: bool) -> dict[str, Any]:
    """Translate a ChatRequest into a /chat/completions body."""
    messages = [{"role": "system", "content": req.system}] if req.system else []
    messages += [_message(m) for m in req.messages]
    body: dict[str, Any] = {"model": req.model, "messages": messages}
    if req.tools:
        body["tools"] = encoded_once(req.tools, _tool_specs)
        body["tool_choice"] = "auto"
    reasoning = _is_reasoning_model(req.model)
    if req.max_tokens is not None:
        body["max_completion_tokens" if reasoning else "max_tokens"] = req.max_tokens
    if req.temperature is not None and not reasoning:
        body["temperature"] = req.temperature
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def parse_usage(raw: dict[str, Any] | None) -> Usage:
    raw = raw or {}
    details = raw.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") or raw.get("prompt_cache_hit_tokens") or 0
    return Usage(
        input_tokens=raw.get("prompt_tokens") or 0,
        output_tokens=raw.get("completion_tokens") or 0,
        cache_read_tokens=cached,
    )


def _text(content: Any) -> str:
    """Content is usually a string; a few servers send a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def parse_response(data: dict[str, Any]) -> ChatResponse:
    choice = (data.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    calls = [
        ToolCall(
            id=tc.get("id") or new_call_id(),
            name=(tc.get("function") or {}).get("name", ""),
            arguments=parse_arguments((tc.get("function") or {}).get("arguments")),
        )
        for tc in msg.get("tool_calls") or []
    ]
    return ChatResponse(
        content=_text(msg.get("content")),
        tool_calls=calls,
        finish_reason=finish_reason(choice.get("finish_reason") == "length", bool(calls)),
        usage=parse_usage(data.get("usage")),
        model=data.get("model") or "",
    )


class OpenAICompatClient(BaseClient):
    """Adapter for the OpenAI-compatible wire format."""

    def auth_headers(self) -> dict[str, str]:
        # Ollama needs no key; sending "Bearer " with nothing would be odd.
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    async def chat(self, req: ChatRequest) -> ChatResponse:
        data = await self.request_json("POST", "chat/completions", json_body=build_body(req, stream=False))
        if not isinstance(data, dict):
            raise UpstreamError(None, "unexpected response shape")
        response = parse_response(data)
        response.model = response.model or req.model
        return response

    async def stream(self, req: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Yield text deltas as they arrive, then complete tool calls, then
        'done'. Fragments of a tool call arrive keyed by `index` and are
        stitched together before the call is emitted."""
        partial: dict[int, dict[str, str]] = {}
        usage = Usage()
        raw_finish: str | None = None
        saw_done = False
        events = self.stream_sse("POST", "chat/completions", json_body=build_body(req, stream=True))
        async with aclosing(events):
            async for ev in events:
                if ev.data == "[DONE]":
                    saw_done = True
                    break
                try:
                    chunk = json.loads(ev.data)
                except ValueError:
                    continue  # keep-alive noise some servers interleave
                if not isinstance(chunk, dict):
                    continue
                if chunk.get("error"):
                    raise UpstreamError(None, message_from_body(ev.data, "stream error"))
                if chunk.get("usage"):
                    usage = parse_usage(chunk["usage"])
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    text = _text(delta.get("content"))
                    if text:
                        yield StreamEvent("text", text=text)
                    for frag in delta.get("tool_calls") or []:
                        slot = partial.setdefault(frag.get("index", 0), {"id": "", "name": "", "arguments": ""})
                        fn = frag.get("function") or {}
                        slot["id"] = frag.get("id") or slot["id"]
                        slot["name"] = fn.get("name") or slot["name"]
                        slot["arguments"] += fn.get("arguments") or ""
                    if choice.get("finish_reason"):
                        raw_finish = choice["finish_reason"]
        if not saw_done and raw_finish is None:
            raise UpstreamError(None, "stream ended before the response was complete")
        calls = [
            ToolCall(
                id=slot["id"] or new_call_id(),
                name=slot["name"],
                arguments=parse_arguments(slot["arguments"]),
            )
            for _, slot in sorted(partial.items())
        ]
        for call in calls:
            yield StreamEvent("tool_call", tool_call=call)
        yield StreamEvent(
            "done",
            usage=usage,
            finish_reason=finish_reason(raw_finish == "length", bool(calls)),
        )

    async def list_models(self) -> list[Model]:
        data = await self.request_json("GET", "models")
        items = data.get("data") if isinstance(data, dict) else None
        return [Model(id=m["id"], name=m["id"]) for m in items or [] if m.get("id")]

    async def embed(self, texts: list[str], model: str, dimensions: int | None = None) -> list[list[float]]:
        """`POST /embeddings`, batched; vectors come back in input order."""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), EMBED_BATCH):
            body: dict[str, Any] = {"model": model, "input": texts[start : start + EMBED_BATCH]}
            if dimensions:
                body["dimensions"] = dimensions
            data = await self.request_json("POST", "embeddings", json_body=body)
            items = sorted((data or {}).get("data") or [], key=lambda d: d.get("index", 0))
            vectors += [item["embedding"] for item in items]
        if len(vectors) != len(texts):
            raise UpstreamError(None, f"expected {len(texts)} embeddings, got {len(vectors)}")
        return vectors
