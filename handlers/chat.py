"""Chat: OpenAI-compatible completions."""

from connexion import request

from auth import Principal
from domain import chat
from gateway.http import CancellableStream

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
JSON = {"Content-Type": "application/json"}  # the operation documents JSON and SSE; say which


async def post_chat_completions(principal: Principal, body: dict):
    if body.get("stream"):
        frames = await chat.stream_completion(principal, body, request.headers)
        return CancellableStream(frames, media_type="text/event-stream", headers=SSE_HEADERS)
    return await chat.complete(principal, body, request.headers), 200, JSON
