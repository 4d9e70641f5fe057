"""HTTP plumbing outside the handlers: JSON error responses and the request-body limit."""

from __future__ import annotations

import asyncio
import json
import logging

from connexion.exceptions import ProblemException
from connexion.lifecycle import ConnexionResponse
from starlette.exceptions import HTTPException
from starlette.responses import StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway import state
from gateway.errors import ApiError
from gateway.i18n import parse_accept_language, translate

log = logging.getLogger("goclaw.http")


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> ConnexionResponse:
    return ConnexionResponse(
        status_code=status,
        body=json.dumps({"error": message}, ensure_ascii=False),
        content_type="application/json",
        headers=headers or {},
    )


def _locale(request) -> str:
    return parse_accept_language(request.headers.get("accept-language"))


def on_api_error(request, exc: ApiError) -> ConnexionResponse:
    return json_error(exc.status, exc.message(_locale(request)), exc.headers)


def _routing_error(request, status: int, detail: str, headers: dict[str, str]) -> ConnexionResponse:
    if status == 404:
        return json_error(404, f"no such route: {request.url.path}")
    if status == 405:
        allow = next((m for rx, m in state.allow_table if rx.match(request.url.path)), headers.get("allow", ""))
        return json_error(405, translate(_locale(request), "error.method_not_allowed"), {"Allow": allow})
    return json_error(status, detail, headers)


def on_problem(request, exc: ProblemException) -> ConnexionResponse:
    """Connexion's own errors (validation, routing, content type) in our error shape."""
    detail = str(exc.detail or exc.title or "error").split("\n", 1)[0]
    if (exc.status or 400) >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, detail)
    return _routing_error(request, exc.status or 400, detail, dict(exc.headers or {}))


def on_http_exception(request, exc: HTTPException) -> ConnexionResponse:
    headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
    return _routing_error(request, exc.status_code, str(exc.detail), headers)


def on_unexpected(request, exc: Exception) -> ConnexionResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return json_error(500, "internal error")


ERROR_HANDLERS = (
    (ApiError, on_api_error),
    (ProblemException, on_problem),
    (HTTPException, on_http_exception),
    (Exception, on_unexpected),
)


MULTIPART_OVERHEAD = 64 * 1024
UPLOAD_TIMEOUT_FACTOR = 10  # uploads may take 10x the body timeout (50 MiB in 300 s ≈ 170 KB/s)


class BodyLimit:
    """Refuse request bodies over the limit with 413, by Content-Length or by counting the stream.
    Uploads (multipart) get their own, larger limit. Chunked bodies (no Content-Length) are read
    up to the limit and replayed with a Content-Length, since Connexion's validators treat a body
    without one as absent.

    The whole body must also arrive within `body_timeout` seconds (uploads: 10x), else 408 and the
    connection is closed: a client trickling a body (slowloris) cannot hold a request forever.
    The application then sees a disconnect, so whatever was waiting for the body stops."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_upload_bytes: int, body_timeout: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_upload_bytes = max_upload_bytes
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        is_upload = headers.get(b"content-type", b"").startswith(b"multipart/")
        # the upload limit is on the file; multipart framing (boundaries, part headers) gets headroom,
        # and the media handler enforces the exact file size while streaming
        limit = self.max_upload_bytes + MULTIPART_OVERHEAD if is_upload else self.max_bytes
        timeout = self.body_timeout * (UPLOAD_TIMEOUT_FACTOR if is_upload else 1)
        receive, send = _BodyDeadline(receive, send, timeout).wrap()
        declared = headers.get(b"content-length")
        if declared is None and b"chunked" in headers.get(b"transfer-encoding", b""):
            await self._buffer_chunked(scope, receive, send, limit)
            return
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                await _send_json(send, 400, "invalid Content-Length")
                return
            if too_big:
                await _send_json(send, 413, f"request body too large (limit {limit} bytes)")
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)

    async def _buffer_chunked(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            size += len(message.get("body", b""))
            if size > limit:
                await _send_json(send, 413, f"request body too large (limit {limit} bytes)")
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        headers = [(k, v) for k, v in scope["headers"] if k != b"transfer-encoding"]
        headers.append((b"content-length", str(len(body)).encode()))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app({**scope, "headers": headers}, replay, send)


class _BodyDeadline:
    """`receive` with a deadline for the request body. When it passes, a 408 is sent (if nothing
    was answered yet) with `Connection: close`, the app's own messages are dropped from then on,
    and the app receives `http.disconnect`. After the last body chunk, `receive` is unchanged (it
    then only waits for the client to go away, which may take as long as the response)."""

    def __init__(self, receive: Receive, send: Send, timeout: float) -> None:
        self.receive, self.send, self.timeout = receive, send, timeout
        self.deadline: float | None = None
        self.body_done = False
        self.started = False
        self.timed_out = False

    def wrap(self) -> tuple[Receive, Send]:
        return self._receive, self._send

    async def _receive(self) -> Message:
        if self.timed_out:
            return {"type": "http.disconnect"}
        if self.body_done:
            return await self.receive()
        loop = asyncio.get_running_loop()
        if self.deadline is None:
            self.deadline = loop.time() + self.timeout
        try:
            async with asyncio.timeout_at(self.deadline):
                message = await self.receive()
        except TimeoutError:
            self.timed_out = True
            if not self.started:
                self.started = True
                await _send_json(self.send, 408, f"request body not received within {self.timeout:g} s",
                                 [(b"connection", b"close")])
            return {"type": "http.disconnect"}
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.body_done = True
        return message

    async def _send(self, message: Message) -> None:
        if self.timed_out:
            return  # the 408 has been sent; the app's late answer has nowhere to go
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)


class BodyTooLarge(ApiError):
    """Raised from `receive` mid-stream; Connexion's error handling turns it into a 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, "error.body_too_large", limit)


async def _send_json(send: Send, status: int, message: str, extra_headers: list | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        *(extra_headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})


MAX_HEAD_BYTES = 64 * 1024
_HEAD_TOO_LARGE_BODY = b'{"error": "request head too large"}'
HEAD_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                  b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_HEAD_TOO_LARGE_BODY),
                                                                         _HEAD_TOO_LARGE_BODY))


class HeadTimeoutHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol plus a deadline for each request head (GOCLAW_BODY_TIMEOUT_MS,
    like the body): uvicorn itself waits forever for a head that never ends (slowloris), and a
    trickled byte on a kept-alive connection even cancels its keep-alive timer. Selected in
    `goclaw serve`; httptools rather than h11 because it parses several times faster.

    The head is also bounded in size (MAX_HEAD_BYTES, as h11 would): httptools itself keeps
    collecting header bytes for as long as they come, so an endless head is a 431 and a hang-up."""

    _head_timer: asyncio.TimerHandle | None = None
    _head_bytes = 0  # bytes received since the current head began; -1 once it is complete

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(OneSendPerTurn(transport, self.loop))
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        counting = self._head_bytes >= 0
        super().data_received(data)
        if counting and self._head_bytes >= 0:  # still inside a head after this read
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
                self.transport.write(HEAD_TOO_LARGE)
                self.transport.close()

    def on_message_begin(self) -> None:
        self._head_bytes = 0  # a request starts: its head is counted until it is complete
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._head_bytes = -1
        super().on_headers_complete()
        if self._head_timer is not None:
            self._head_timer.cancel()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_timer()  # the next request's head gets its own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(state.settings.body_timeout_s, self._head_timed_out)

    def _head_timed_out(self) -> None:
        idle = self.cycle is None or self.cycle.response_complete
        if idle and not self.transport.is_closing():
            self.transport.close()  # still no complete request head: drop the connection


class OneSendPerTurn:
    """A transport whose writes made in one turn of the event loop leave in one send. uvicorn
    writes a response's head as soon as it starts and its body after: two syscalls and two
    wake-ups of the client for every response. Here they are joined and sent at the end of the
    turn (a streamed response's later chunks still go out as they come, one turn each)."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._pending is None:
            self._pending = [data]
            self._loop.call_soon(self._flush)
        else:
            self._pending.append(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending or ()))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = None
        self._transport.abort()

    def __getattr__(self, name: str):  # everything else is the real transport's
        return getattr(self._transport, name)


class ReplaceNul:
    """U+0000 in the path or query string becomes U+FFFD before routing: PostgreSQL text cannot
    hold it, and such a value can never match stored data anyway."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and ("\x00" in scope["path"] or b"%00" in scope["query_string"]):
            scope = {
                **scope,
                "path": scope["path"].replace("\x00", "\ufffd"),
                "raw_path": scope.get("raw_path", b"").replace(b"%00", b"%EF%BF%BD"),
                "query_string": scope["query_string"].replace(b"%00", b"%EF%BF%BD"),
            }
        await self.app(scope, receive, send)


class CancelOnDisconnect:
    """For long-running operations (chat, wake): when the client goes away before the response
    is complete, cancel the work, so the upstream LLM call stops too. One task owns the real
    `receive` and forwards messages; the app reads from a queue."""

    def __init__(self, app: ASGIApp, paths: tuple[str, ...], suffixes: tuple[str, ...]) -> None:
        self.app = app
        self.paths = paths
        self.suffixes = suffixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] != "POST" or not (
            path in self.paths or path.endswith(self.suffixes)
        ):
            await self.app(scope, receive, send)
            return
        queue: asyncio.Queue[Message] = asyncio.Queue()
        app_task = asyncio.current_task()
        finished = False

        async def pump() -> None:
            while True:
                message = await receive()
                await queue.put(message)
                if message["type"] == "http.disconnect":
                    if not finished and app_task is not None:
                        app_task.cancel()
                    return

        async def tracking_send(message: Message) -> None:
            nonlocal finished
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                finished = True
            await send(message)

        reader = asyncio.create_task(pump())
        try:
            await self.app(scope, queue.get, tracking_send)
        except asyncio.CancelledError:
            if not reader.done() or app_task is None:
                raise  # cancelled from elsewhere (shutdown): not ours to swallow
            app_task.uncancel()  # we cancelled it because the client left: nothing to answer
        finally:
            finished = True
            reader.cancel()


class CancellableStream(StreamingResponse):
    """A streaming response for routes under CancelOnDisconnect. Starlette's own runs a second
    task per response just to notice the client leaving; here the disconnect already cancels
    the request's task (and the stream with it), so the body is simply sent."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.stream_response(send)


class LiteralPathMethods:
    """A literal path beats a templated one (`/v1/media/upload` is not `/v1/media/{id}`): a
    method the literal path does not declare is 405 with its Allow header, before routing."""

    def __init__(self, app: ASGIApp, document: dict) -> None:
        self.app = app
        self.allowed: dict[str, set[str]] = {}
        for path, item in document.get("paths", {}).items():
            if "{" not in path:
                methods = {m.upper() for m in item if m in ("get", "put", "post", "delete", "patch")}
                self.allowed[path] = methods | ({"HEAD"} if "GET" in methods else set())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            methods = self.allowed.get(scope["path"])
            if methods is not None and scope["method"] not in methods:
                locale = parse_accept_language(dict(scope["headers"]).get(b"accept-language", b"").decode("latin-1"))
                body = json.dumps({"error": translate(locale, "error.method_not_allowed")}, ensure_ascii=False).encode()
                await send({"type": "http.response.start", "status": 405, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"allow", ", ".join(sorted(methods)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
