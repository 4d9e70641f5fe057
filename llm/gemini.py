"""Native Gemini API wire format (generateContent / streamGenerateContent).

The API key travels in the `x-goog-api-key` header, never in the URL, so it
cannot leak through access logs, proxies or error messages that echo URLs.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from typing import Any
from urllib.parse import quote

from llm.base import BaseClient, encoded_once
from llm.convert import finish_reason, new_call_id, system_texts
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

EMBED_BATCH = 100  # batchEmbedContents accepts at most 100 requests
_MAX_MODEL_PAGES = 10
_MAX_REF_DEPTH = 8

# JSON-schema keywords outside the OpenAPI subset Gemini accepts; sending any
# of them makes the whole request fail with 400.
_UNSUPPORTED_KEYS = frozenset(
    {"$ref", "$defs", "definitions", "$schema", "$id", "additionalProperties", "examples", "default"}
)


def clean_schema(schema: Any, defs: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """Make a JSON schema acceptable to Gemini.

    Local `$ref`s are inlined first (up to a depth, which also stops
    self-referencing schemas) so stripping them does not lose the shape;
    then unsupported keywords are removed recursively. Keys of `properties`
    are property names, not keywords, and are never removed.
    """
    if isinstance(schema, list):
        return [clean_schema(item, defs, depth) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if defs is None:
        defs = {**(schema.get("definitions") or {}), **(schema.get("$defs") or {})}
    ref = schema.get("$ref")
    if isinstance(ref, str) and depth < _MAX_REF_DEPTH:
        target = defs.get(ref.rsplit("/", 1)[-1])
        if isinstance(target, dict):
            merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
            return clean_schema(merged, defs, depth + 1)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _UNSUPPORTED_KEYS:
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: clean_schema(sub, defs, depth) for name, sub in value.items()}
        else:
            out[key] = clean_schema(value, defs, depth)
    return out


def _declaration(tool: ToolSpec) -> dict[str, Any]:
    decl: dict[str, Any] = {"name": tool.name, "description": tool.description}
    params = clean_schema(tool.parameters)
    # Gemini rejects an OBJECT schema with no properties; omit it instead.
    if params and (params.get("properties") or params.get("type") not in (None, "object")):
        decl["parameters"] = params
    return decl


def _contents(messages: list[Message]) -> list[dict[str, Any]]:
    """Map turns to Gemini contents (roles user/model). Tool results become
    functionResponse parts named after the call they answer; consecutive
    same-role turns merge so parallel results share one turn."""
    names_by_call: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue  # carried in systemInstruction
        parts: list[dict[str, Any]]
        if m.role == "assistant":
            role = "model"
            parts = [{"text": m.content}] if m.content else []
            for tc in m.tool_calls:
                names_by_call[tc.id] = tc.name
                part: dict[str, Any] = {"functionCall": {"name": tc.name, "args": tc.arguments}}
                if tc.thought_signature:
                    part["thoughtSignature"] = tc.thought_signature
                parts.append(part)
        elif m.role == "tool":
            role = "user"
            name = m.name or names_by_call.get(m.tool_call_id or "", "")
            parts = [{"functionResponse": {"name": name, "response": {"content": m.content}}}]
        else:
            role = "user"
            parts = [{"text": m.content}] if m.content else []
        if not parts:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["parts"].extend(parts)
        else:
            out.append({"role": role, "parts": parts})
    return out


def _tool_specs(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    return [{"functionDeclarations": [_declaration(t) for t in tools]}]


def build_body(req: ChatRequest) -> dict[str, Any]:
    """Translate a ChatRequest into a generateContent body (the same body
    serves streaming; the endpoint decides)."""
    body: dict[str, Any] = {"contents": _contents(req.messages)}
    system = system_texts(req)
    if system:
        body["systemInstruction"] = {"parts": [{"text": t} for t in system]}
    if req.tools:
        body["tools"] = encoded_once(req.tools, _tool_specs)
    config: dict[str, Any] = {}
    if req.max_tokens is not None:
        config["maxOutputTokens"] = req.max_tokens
    if req.temperature is not None:
        config["temperature"] = req.temperature
    if config:
        body["generationConfig"] = config
    return body


def parse_usage(raw: dict[str, Any] | None) -> Usage:
    """Thinking tokens are billed as output, so they count as output here."""
    raw = raw or {}
    return Usage(
        input_tokens=raw.get("promptTokenCount") or 0,
        output_tokens=(raw.get("candidatesTokenCount") or 0) + (raw.get("thoughtsTokenCount") or 0),
        cache_read_tokens=raw.get("cachedContentTokenCount") or 0,
    )


def _candidate(data: dict[str, Any]) -> tuple[str, list[ToolCall], str | None]:
    """Text, tool calls and raw finishReason of the first candidate."""
    if "error" in data:
        raise UpstreamError(None, message_from_body(json.dumps(data), "upstream error"))
    candidates = data.get("candidates") or []
    if not candidates:
        blocked = (data.get("promptFeedback") or {}).get("blockReason")
        if blocked:
            raise UpstreamError(None, f"prompt blocked: {blocked}")
        return "", [], None
    cand = candidates[0]
    text, calls = "", []
    for part in (cand.get("content") or {}).get("parts") or []:
        if part.get("thought"):
            continue  # thinking summaries are not part of the answer
        if "text" in part:
            text += part["text"]
        elif "functionCall" in part:
            fc = part["functionCall"]
            calls.append(
                ToolCall(
                    id=fc.get("id") or new_call_id(),
                    name=fc.get("name", ""),
                    arguments=fc.get("args") or {},
                    thought_signature=part.get("thoughtSignature"),
                )
            )
    return text, calls, cand.get("finishReason")


def _model_path(model: str) -> str:
    """`models/{id}`, quoted so a model id can never alter the URL path."""
    return "models/" + quote(model.removeprefix("models/"), safe="")


class GeminiClient(BaseClient):
    """Adapter for the native Gemini API."""

    def auth_headers(self) -> dict[str, str]:
        return {"x-goog-api-key": self.api_key}

    async def chat(self, req: ChatRequest) -> ChatResponse:
        data = await self.request_json("POST", f"{_model_path(req.model)}:generateContent", json_body=build_body(req))
        if not isinstance(data, dict):
            raise UpstreamError(None, "unexpected response shape")
        text, calls, raw_finish = _candidate(data)
        return ChatResponse(
            content=text,
            tool_calls=calls,
            finish_reason=finish_reason(raw_finish == "MAX_TOKENS", bool(calls)),
            usage=parse_usage(data.get("usageMetadata")),
            model=data.get("modelVersion") or req.model,
        )

    async def stream(self, req: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Each SSE chunk is a partial response; function calls arrive whole.
        The stream has no end marker, so a finishReason is required to tell
        completion from a dropped connection."""
        usage = Usage()
        raw_finish: str | None = None
        has_calls = False
        events = self.stream_sse(
            "POST",
            f"{_model_path(req.model)}:streamGenerateContent",
            params={"alt": "sse"},
            json_body=build_body(req),
        )
        async with aclosing(events):
            async for ev in events:
                try:
                    data = json.loads(ev.data)
                except ValueError:
                    continue
                if not isinstance(data, dict):
                    continue
                text, calls, finish = _candidate(data)
                if text:
                    yield StreamEvent("text", text=text)
                for call in calls:
                    has_calls = True
                    yield StreamEvent("tool_call", tool_call=call)
                if data.get("usageMetadata"):
                    usage = parse_usage(data["usageMetadata"])
                raw_finish = finish or raw_finish
        if raw_finish is None:
            raise UpstreamError(None, "stream ended before a finishReason")
        yield StreamEvent(
            "done",
            usage=usage,
            finish_reason=finish_reason(raw_finish == "MAX_TOKENS", has_calls),
        )

    async def list_models(self) -> list[Model]:
        models: list[Model] = []
        params: dict[str, Any] = {"pageSize": 1000}
        for _ in range(_MAX_MODEL_PAGES):
            data = await self.request_json("GET", "models", params=params) or {}
            for m in data.get("models") or []:
                model_id = (m.get("name") or "").removeprefix("models/")
                if model_id:
                    models.append(Model(id=model_id, name=m.get("displayName") or model_id))
            token = data.get("nextPageToken")
            if not token:
                break
            params = {"pageSize": 1000, "pageToken": token}
        return models

    async def embed(self, texts: list[str], model: str, dimensions: int | None = None) -> list[list[float]]:
        """`batchEmbedContents`, in batches of at most 100 texts."""
        path = _model_path(model)
        vectors: list[list[float]] = []
        for start in range(0, len(texts), EMBED_BATCH):
            requests = []
            for text in texts[start : start + EMBED_BATCH]:
                item: dict[str, Any] = {"model": path, "content": {"parts": [{"text": text}]}}
                if dimensions:
                    item["outputDimensionality"] = dimensions
                requests.append(item)
            data = await self.request_json("POST", f"{path}:batchEmbedContents", json_body={"requests": requests})
            vectors += [e.get("values") or [] for e in (data or {}).get("embeddings") or []]
        if len(vectors) != len(texts):
            raise UpstreamError(None, f"expected {len(texts)} embeddings, got {len(vectors)}")
        return vectors
