"""A scriptable fake LLM upstream speaking the three real wire formats.

Run it:  python -m tests.stubs.llm_stub --port 8765
Bases:   OpenAI    http://127.0.0.1:8765/v1
         Anthropic http://127.0.0.1:8765/anthropic/v1
         Gemini    http://127.0.0.1:8765/gemini/v1beta

Scripting (all JSON over HTTP):
  POST /_script   a step object or a list of them, appended to a FIFO queue.
                  A step's "wire" ("openai" | "anthropic" | "gemini") picks that
                  format's queue; without it the step goes to a shared queue that
                  any format uses once its own queue is empty. Every upstream
                  request (chat, models, embeddings) consumes one step; with no
                  step queued the stub answers a deterministic default:
                  "echo: <last user text>", streamed in several chunks.
  GET  /_requests received requests: [{method, path, query, headers, body}]
                  (the last 1000, oldest first; header names lower-case)
  POST /_reset    clear queues and the request log
  GET  /_stats    {"open_streams": n, "queued": {wire: n}}

Step fields (all optional; combine freely):
  wire          which queue, as above
  delay         seconds to wait before answering (headers included)
  status        answer with this HTTP error status instead ...
  message       ... and this reason, wrapped in the format's error JSON
  body          ... or exactly this body (object or string)
  retry_after   Retry-After header value to send with the error
  text          reply text (default: the echo)
  chunks        explicit list of text pieces for streaming
  tool_calls    [{"name": ..., "arguments": {...}, "id"?: ...}] (or "tool_call": {...})
  usage         {"input_tokens", "output_tokens", "cache_read_tokens",
                 "cache_creation_tokens"}, emitted in the format's own fields
  finish        "stop" | "length" (tool calls imply "tool_calls")
  drop_after    send this many stream frames, then drop the connection
                (non-streaming: send half the body, then drop)
  hang_after    send this many stream frames, then stall until the client leaves
                (non-streaming: never answer)
Like the real APIs, Anthropic routes answer 401/400 without x-api-key,
anthropic-version or max_tokens, and Gemini answers 403 without a key (the
step is still consumed). Gemini streams only as SSE (alt=sse).
Embeddings are pseudo-vectors derived from a hash of each text: unit length,
dimension from the request ("dimensions" / "outputDimensionality"), default 384.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import struct
import time
from collections import deque
from itertools import count
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

WIRES = ("openai", "anthropic", "gemini")
DEFAULT_DIMENSIONS = 384
REQUEST_LOG_SIZE = 1000
STREAM_PIECES = 4

OPENAI_MODELS = ["stub-gpt", "stub-gpt-mini", "text-embedding-stub"]
ANTHROPIC_MODELS = [("claude-stub-1", "Claude Stub 1"), ("claude-stub-2", "Claude Stub 2")]
GEMINI_MODELS = [("gemini-stub", "Gemini Stub"), ("gemini-embedding-stub", "Gemini Embedding Stub")]

_FINISH = {
    "openai": {"stop": "stop", "length": "length", "tool_calls": "tool_calls"},
    "anthropic": {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"},
    "gemini": {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"},
}


class StubState:
    """Script queues, request log and live-stream counter for one app."""

    def __init__(self) -> None:
        self.queues: dict[str, deque[dict[str, Any]]] = {w: deque() for w in (*WIRES, "any")}
        self.requests: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_SIZE)
        self.open_streams = 0
        self.ids = count(1)

    def next_step(self, wire: str) -> dict[str, Any]:
        for queue in (self.queues[wire], self.queues["any"]):
            if queue:
                return queue.popleft()
        return {}

    def reset(self) -> None:
        for queue in self.queues.values():
            queue.clear()
        self.requests.clear()


# -- helpers ------------------------------------------------------------------


def _state(request: Request) -> StubState:
    return request.app.state.stub


async def _receive(request: Request) -> tuple[dict[str, Any], dict[str, Any]]:
    """Parse the JSON body, log the request and take the next script step."""
    raw = await request.body()
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = {}
    state = _state(request)
    state.requests.append(
        {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "headers": dict(request.headers),
            "body": body,
        }
    )
    wire = _wire_of(request.url.path)
    step = state.next_step(wire)
    if step.get("delay"):
        await asyncio.sleep(float(step["delay"]))
    return body, step


def _wire_of(path: str) -> str:
    if path.startswith("/anthropic/"):
        return "anthropic"
    if path.startswith("/gemini/"):
        return "gemini"
    return "openai"


def _error(wire: str, status: int, message: str, retry_after: Any = None, body: Any = None) -> Response:
    if body is None:
        if wire == "anthropic":
            body = {"type": "error", "error": {"type": _anthropic_error_type(status), "message": message}}
        elif wire == "gemini":
            body = {"error": {"code": status, "message": message, "status": _gemini_status(status)}}
        else:
            body = {"error": {"message": message, "type": "stub_error", "code": status}}
    headers = {"retry-after": str(retry_after)} if retry_after is not None else None
    if isinstance(body, str):
        return Response(body, status_code=status, headers=headers, media_type="text/plain")
    return JSONResponse(body, status_code=status, headers=headers)


def _anthropic_error_type(status: int) -> str:
    return {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        429: "rate_limit_error",
        529: "overloaded_error",
    }.get(status, "api_error")


def _gemini_status(status: int) -> str:
    return {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        429: "RESOURCE_EXHAUSTED",
        503: "UNAVAILABLE",
    }.get(status, "INTERNAL")


def _step_error(wire: str, step: dict[str, Any]) -> Response | None:
    if not step.get("status"):
        return None
    status = int(step["status"])
    return _error(wire, status, step.get("message", "scripted error"), step.get("retry_after"), step.get("body"))


def _split(text: str) -> list[str]:
    if not text:
        return []
    size = max(1, math.ceil(len(text) / STREAM_PIECES))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _vector(text: str, dim: int) -> list[float]:
    raw = hashlib.shake_256(text.encode()).digest(dim * 2)
    values = [v / 32767.5 - 1.0 for v in struct.unpack(f"<{dim}H", raw)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


class Reply:
    """A wire-neutral answer built from a step (or the echo default)."""

    def __init__(self, step: dict[str, Any], last_user_text: str, raw_size: int) -> None:
        calls = step.get("tool_calls") or ([step["tool_call"]] if step.get("tool_call") else [])
        self.tool_calls = [
            {"id": c.get("id") or f"call_stub_{i}", "name": c["name"], "arguments": c.get("arguments") or {}}
            for i, c in enumerate(calls)
        ]
        default_text = "" if self.tool_calls else f"echo: {last_user_text}"
        self.text: str = step.get("text", default_text)
        self.chunks: list[str] = step.get("chunks") or _split(self.text)
        usage = step.get("usage") or {}
        self.input_tokens = int(usage.get("input_tokens", max(1, raw_size // 4)))
        self.output_tokens = int(usage.get("output_tokens", max(1, len(self.text.split()))))
        self.cache_read = int(usage.get("cache_read_tokens", 0))
        self.cache_creation = int(usage.get("cache_creation_tokens", 0))
        self.finish = "tool_calls" if self.tool_calls else step.get("finish", "stop")

    def native_finish(self, wire: str) -> str:
        return _FINISH[wire][self.finish]


# -- streaming / faulty responses ---------------------------------------------


class FramedResponse:
    """Sends pre-rendered frames one by one, optionally dropping the connection
    or stalling part-way; counts itself in `open_streams` while alive."""

    def __init__(
        self,
        state: StubState,
        frames: list[bytes],
        media_type: str,
        drop_after: int | None = None,
        hang_after: int | None = None,
        content_length: int | None = None,
    ) -> None:
        self.state = state
        self.frames = frames
        self.media_type = media_type
        self.drop_after = drop_after
        self.hang_after = hang_after
        self.content_length = content_length

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.state.open_streams += 1
        try:
            headers = [(b"content-type", self.media_type.encode()), (b"cache-control", b"no-cache")]
            if self.content_length is not None:
                headers.append((b"content-length", str(self.content_length).encode()))
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            for i, frame in enumerate(self.frames):
                if self.drop_after is not None and i >= self.drop_after:
                    return  # incomplete response: the server closes the connection
                if self.hang_after is not None and i >= self.hang_after:
                    await _wait_for_disconnect(receive)
                    return
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # client went away
        finally:
            self.state.open_streams -= 1


class HangResponse:
    """Never answers; returns once the client disconnects."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _wait_for_disconnect(receive)


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _json_reply(request: Request, step: dict[str, Any], payload: dict[str, Any]) -> Any:
    """A JSON answer, or its faulty variant when the step asks for one."""
    if step.get("hang_after") is not None:
        return HangResponse()
    if step.get("drop_after") is not None:
        data = json.dumps(payload).encode()
        half = data[: len(data) // 2]
        return FramedResponse(_state(request), [half, b""], "application/json", drop_after=1, content_length=len(data))
    return JSONResponse(payload)


def _stream_reply(request: Request, step: dict[str, Any], frames: list[bytes]) -> FramedResponse:
    return FramedResponse(
        _state(request),
        frames,
        "text/event-stream",
        drop_after=step.get("drop_after"),
        hang_after=step.get("hang_after"),
    )


# -- OpenAI -------------------------------------------------------------------


def _openai_last_user(body: dict[str, Any]) -> str:
    for m in reversed(body.get("messages") or []):
        if m.get("role") in ("user", "tool"):
            content = m.get("content")
            if isinstance(content, list):
                return "".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def _openai_usage(r: Reply) -> dict[str, Any]:
    return {
        "prompt_tokens": r.input_tokens,
        "completion_tokens": r.output_tokens,
        "total_tokens": r.input_tokens + r.output_tokens,
        "prompt_tokens_details": {"cached_tokens": r.cache_read},
    }


def _openai_call(c: dict[str, Any]) -> dict[str, Any]:
    return {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}}


async def openai_chat(request: Request) -> Any:
    body, step = await _receive(request)
    if (err := _step_error("openai", step)) is not None:
        return err
    r = Reply(step, _openai_last_user(body), len(json.dumps(body)))
    state = _state(request)
    cid = f"chatcmpl-stub-{next(state.ids)}"
    model = body.get("model", "stub-gpt")
    created = int(time.time())
    if not body.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": r.text or None}
        if r.tool_calls:
            message["tool_calls"] = [_openai_call(c) for c in r.tool_calls]
        payload = {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": r.native_finish("openai")}],
            "usage": _openai_usage(r),
        }
        return _json_reply(request, step, payload)

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        obj = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices}
        return b"data: " + json.dumps({**obj, **extra}).encode() + b"\n\n"

    def delta(d: dict[str, Any], finish: str | None = None) -> bytes:
        return chunk([{"index": 0, "delta": d, "finish_reason": finish}])

    frames = [delta({"role": "assistant", "content": ""})]
    frames += [delta({"content": piece}) for piece in r.chunks]
    for i, c in enumerate(r.tool_calls):
        args = json.dumps(c["arguments"])
        head = {"index": i, "id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": ""}}
        frames.append(delta({"tool_calls": [head]}))
        for part in (args[: len(args) // 2], args[len(args) // 2 :]):
            frames.append(delta({"tool_calls": [{"index": i, "function": {"arguments": part}}]}))
    frames.append(delta({}, r.native_finish("openai")))
    if (body.get("stream_options") or {}).get("include_usage"):
        frames.append(chunk([], usage=_openai_usage(r)))
    frames.append(b"data: [DONE]\n\n")
    return _stream_reply(request, step, frames)


async def openai_models(request: Request) -> Any:
    _, step = await _receive(request)
    if (err := _step_error("openai", step)) is not None:
        return err
    data = [{"id": m, "object": "model", "created": 0, "owned_by": "stub"} for m in OPENAI_MODELS]
    return JSONResponse({"object": "list", "data": data})


async def openai_embeddings(request: Request) -> Any:
    body, step = await _receive(request)
    if (err := _step_error("openai", step)) is not None:
        return err
    texts = body.get("input") or []
    if isinstance(texts, str):
        texts = [texts]
    dim = int(body.get("dimensions") or DEFAULT_DIMENSIONS)
    data = [{"object": "embedding", "index": i, "embedding": _vector(str(t), dim)} for i, t in enumerate(texts)]
    tokens = sum(len(str(t).split()) for t in texts)
    payload = {
        "object": "list",
        "data": data,
        "model": body.get("model", ""),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return _json_reply(request, step, payload)


# -- Anthropic ----------------------------------------------------------------


def _anthropic_last_user(body: dict[str, Any]) -> str:
    for m in reversed(body.get("messages") or []):
        if m.get("role") != "user":
            continue
        content = m.get("content")
        if isinstance(content, str):
            return content
        texts = []
        for block in content or []:
            if block.get("type") == "text":
                texts.append(block.get("text", ""))
            elif block.get("type") == "tool_result":
                inner = block.get("content")
                texts.append(inner if isinstance(inner, str) else json.dumps(inner))
        return "".join(texts)
    return ""


def _anthropic_usage(r: Reply, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": r.input_tokens,
        "output_tokens": output_tokens,
        "cache_read_input_tokens": r.cache_read,
        "cache_creation_input_tokens": r.cache_creation,
    }


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps({'type': event, **data})}\n\n".encode()


async def anthropic_messages(request: Request) -> Any:
    body, step = await _receive(request)
    if not request.headers.get("x-api-key"):
        return _error("anthropic", 401, "x-api-key header is required")
    if not request.headers.get("anthropic-version"):
        return _error("anthropic", 400, "anthropic-version: header is required")
    if (err := _step_error("anthropic", step)) is not None:
        return err
    if not isinstance(body.get("max_tokens"), int):
        return _error("anthropic", 400, "max_tokens: Field required")
    r = Reply(step, _anthropic_last_user(body), len(json.dumps(body)))
    mid = f"msg_stub_{next(_state(request).ids)}"
    model = body.get("model", "claude-stub-1")
    calls = [{"type": "tool_use", "id": c["id"], "name": c["name"], "input": c["arguments"]} for c in r.tool_calls]
    if not body.get("stream"):
        content = ([{"type": "text", "text": r.text}] if r.text else []) + calls
        payload = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": r.native_finish("anthropic"),
            "stop_sequence": None,
            "usage": _anthropic_usage(r, r.output_tokens),
        }
        return _json_reply(request, step, payload)

    start = {"id": mid, "type": "message", "role": "assistant", "model": model, "content": []}
    start["stop_reason"] = None
    start["usage"] = _anthropic_usage(r, 1)
    frames = [_sse("message_start", {"message": start}), _sse("ping", {})]
    index = 0
    if r.chunks:
        frames.append(_sse("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}))
        for piece in r.chunks:
            frames.append(_sse("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}}))
        frames.append(_sse("content_block_stop", {"index": 0}))
        index = 1
    for call in calls:
        frames.append(_sse("content_block_start", {"index": index, "content_block": {**call, "input": {}}}))
        args = json.dumps(call["input"])
        for part in (args[: len(args) // 2], args[len(args) // 2 :]):
            delta = {"type": "input_json_delta", "partial_json": part}
            frames.append(_sse("content_block_delta", {"index": index, "delta": delta}))
        frames.append(_sse("content_block_stop", {"index": index}))
        index += 1
    stop = {"stop_reason": r.native_finish("anthropic"), "stop_sequence": None}
    frames.append(_sse("message_delta", {"delta": stop, "usage": {"output_tokens": r.output_tokens}}))
    frames.append(_sse("message_stop", {}))
    return _stream_reply(request, step, frames)


async def anthropic_models(request: Request) -> Any:
    _, step = await _receive(request)
    if not request.headers.get("x-api-key"):
        return _error("anthropic", 401, "x-api-key header is required")
    if (err := _step_error("anthropic", step)) is not None:
        return err
    data = [
        {"type": "model", "id": mid, "display_name": name, "created_at": "2025-01-01T00:00:00Z"}
        for mid, name in ANTHROPIC_MODELS
    ]
    return JSONResponse({"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]})


# -- Gemini -------------------------------------------------------------------


def _gemini_last_user(body: dict[str, Any]) -> str:
    for content in reversed(body.get("contents") or []):
        if content.get("role", "user") != "user":
            continue
        texts = []
        for part in content.get("parts") or []:
            if "text" in part:
                texts.append(part["text"])
            elif "functionResponse" in part:
                texts.append(json.dumps(part["functionResponse"].get("response")))
        return "".join(texts)
    return ""


def _gemini_usage(r: Reply) -> dict[str, Any]:
    return {
        "promptTokenCount": r.input_tokens,
        "candidatesTokenCount": r.output_tokens,
        "totalTokenCount": r.input_tokens + r.output_tokens,
        "cachedContentTokenCount": r.cache_read,
    }


def _gemini_candidate(parts: list[dict[str, Any]], finish: str | None) -> dict[str, Any]:
    cand: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        cand["finishReason"] = finish
    return cand


async def gemini_models_call(request: Request) -> Any:
    """`POST models/{model}:{method}` for generateContent, streamGenerateContent
    and batchEmbedContents."""
    body, step = await _receive(request)
    if not request.headers.get("x-goog-api-key") and "key" not in request.query_params:
        return _error("gemini", 403, "Method doesn't allow unregistered callers. Please use an API key.")
    if (err := _step_error("gemini", step)) is not None:
        return err
    model, _, method = request.path_params["target"].rpartition(":")
    if method == "batchEmbedContents":
        return _gemini_embed(request, step, body)
    if method not in ("generateContent", "streamGenerateContent"):
        return _error("gemini", 404, f"method {method!r} not found")
    r = Reply(step, _gemini_last_user(body), len(json.dumps(body)))
    calls = [{"functionCall": {"name": c["name"], "args": c["arguments"]}} for c in r.tool_calls]
    finish = r.native_finish("gemini")
    if method == "generateContent":
        parts = ([{"text": r.text}] if r.text else []) + calls
        payload = {
            "candidates": [_gemini_candidate(parts, finish)],
            "usageMetadata": _gemini_usage(r),
            "modelVersion": model,
        }
        return _json_reply(request, step, payload)

    def frame(obj: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(obj).encode() + b"\r\n\r\n"

    partial_usage = {"promptTokenCount": r.input_tokens}
    frames = [
        frame({"candidates": [_gemini_candidate([{"text": p}], None)], "usageMetadata": partial_usage})
        for p in r.chunks
    ]
    last = {"candidates": [_gemini_candidate(calls, finish)], "usageMetadata": _gemini_usage(r), "modelVersion": model}
    frames.append(frame(last))
    return _stream_reply(request, step, frames)


def _gemini_embed(request: Request, step: dict[str, Any], body: dict[str, Any]) -> Any:
    embeddings = []
    for item in body.get("requests") or []:
        text = "".join(p.get("text", "") for p in (item.get("content") or {}).get("parts") or [])
        dim = int(item.get("outputDimensionality") or DEFAULT_DIMENSIONS)
        embeddings.append({"values": _vector(text, dim)})
    return _json_reply(request, step, {"embeddings": embeddings})


async def gemini_models(request: Request) -> Any:
    _, step = await _receive(request)
    if (err := _step_error("gemini", step)) is not None:
        return err
    models = [
        {"name": f"models/{mid}", "displayName": name, "supportedGenerationMethods": ["generateContent"]}
        for mid, name in GEMINI_MODELS
    ]
    return JSONResponse({"models": models})


# -- control ------------------------------------------------------------------


async def script(request: Request) -> JSONResponse:
    steps = await request.json()
    if isinstance(steps, dict):
        steps = [steps]
    state = _state(request)
    for step in steps:
        wire = step.get("wire", "any")
        if wire not in state.queues:
            return JSONResponse({"error": f"unknown wire {wire!r}"}, status_code=400)
        state.queues[wire].append(step)
    return JSONResponse({"queued": {w: len(q) for w, q in state.queues.items()}})


async def requests_log(request: Request) -> JSONResponse:
    return JSONResponse(list(_state(request).requests))


async def reset(request: Request) -> JSONResponse:
    _state(request).reset()
    return JSONResponse({"ok": True})


async def stats(request: Request) -> JSONResponse:
    state = _state(request)
    return JSONResponse({"open_streams": state.open_streams, "queued": {w: len(q) for w, q in state.queues.items()}})


def create_app() -> Starlette:
    """A fresh stub app with its own empty state."""
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", openai_chat, methods=["POST"]),
            Route("/v1/models", openai_models, methods=["GET"]),
            Route("/v1/embeddings", openai_embeddings, methods=["POST"]),
            Route("/anthropic/v1/messages", anthropic_messages, methods=["POST"]),
            Route("/anthropic/v1/models", anthropic_models, methods=["GET"]),
            Route("/gemini/v1beta/models", gemini_models, methods=["GET"]),
            Route("/gemini/v1beta/models/{target:path}", gemini_models_call, methods=["POST"]),
            Route("/_script", script, methods=["POST"]),
            Route("/_requests", requests_log, methods=["GET"]),
            Route("/_reset", reset, methods=["POST"]),
            Route("/_stats", stats, methods=["GET"]),
        ]
    )
    app.state.stub = StubState()
    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Scriptable fake LLM upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    uvicorn.run(
        create_app(),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        lifespan="off",
    )


if __name__ == "__main__":
    main()
