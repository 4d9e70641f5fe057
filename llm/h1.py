"""One keep-alive HTTP/1.1 connection to one origin, for the upstream pool (`llm.pool.LifoPool`).

httpcore's connection runs h11 (a pure-Python parser that re-scans its buffer with regexes),
wraps every request in anyio locks and tracks its state through several objects: about a fifth
of the gateway's CPU per chat request. This connection does the same job with llhttp, the C
parser behind uvicorn (`httptools`): the request head is built with one join and goes out with a
small body in one write, and each read is handed to the parser, whose callbacks fill in the
response. No locks: the pool never gives a connection a second request before the first one's
response is closed.

It works on httpx's own types: the method, URL, headers, body stream and timeouts come straight
from the `httpx.Request`, the answer is an `httpx.Response` whose stream is the body as it arrives,
and failures are httpx's exceptions, raised with the request attached. httpx's own transport would
convert each request to httpcore's types and each response back, and wrap the call and every body
chunk in an exception-mapping context manager: a sizeable share of an upstream call's CPU, for
nothing. The network layer under it (`llm.netstream` behind the SSRF guard) keeps httpcore's
interface; the few httpcore exceptions it raises become httpx's where this connection calls it."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from typing import Any

import httpcore
import httptools
import httpx

READ_SIZE = 1 << 16
# bytes a response may take to get its head across, or to make progress in its body (chunk
# framing, trailers): llhttp keeps reading forever, and the same client fetches arbitrary web pages
MAX_HEAD = 100 * 1024
ONE_WRITE = 1 << 16  # a whole body up to this size goes out in the same write as the head
LAST_CHUNK = b"0\r\n\r\n"
IN_MEMORY = httpx.ByteStream  # a request body that is one bytes object (any other is streamed)

_NEW, _ACTIVE, _IDLE, _CLOSED = range(4)
_VERSIONS = {"1.1": b"HTTP/1.1", "1.0": b"HTTP/1.0"}
# what the network layer raises (httpcore's interface), as httpx's exception of the same meaning
_NETWORK_ERRORS: dict[type[Exception], type[httpx.TransportError]] = {
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadError: httpx.ReadError,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteError: httpx.WriteError,
    httpcore.WriteTimeout: httpx.WriteTimeout,
}

Origin = tuple[bytes, bytes, int]  # (scheme, host, port): what a connection is for, and the pool's key


class ConnectionNotAvailable(Exception):
    """This connection cannot take the request (busy, or closed by the server while idle): the
    pool closes it and tries another, so the request itself never fails for it."""


class _Stop(Exception):
    """Raised from a parser callback to end parsing: a HEAD response ends with its head, and bytes
    after the final response mean the connection cannot be trusted for another request."""


class H1Connection:
    """HTTP/1.1 to `origin`, connected on the first request, reused while the server keeps it alive.

    One request at a time (the pool's guarantee). A response body is a `_Body`; the connection is
    idle again once that body was read to its end, or closed when it is closed early, on any
    error, and on cancellation (it is never reused mid-response). Either way, once the body is
    done with, `released(connection)` is called (exactly once per response): the pool takes it back
    or lets it go."""

    __slots__ = (
        "_backend",
        "_close_requested",
        "_complete",
        "_head_done",
        "_headers",
        "_idle_since",
        "_interim",
        "_is_head",
        "_keep_alive",
        "_keepalive_expiry",
        "_origin",
        "_parser",
        "_parts",
        "_read_timeout",
        "_reason",
        "_released",
        "_request",
        "_ssl_context",
        "_state",
        "_status",
        "_stream",
        "origin",
    )

    def __init__(self, origin: Origin, ssl_context: ssl.SSLContext, keepalive_expiry: float | None,
                 network_backend: httpcore.AsyncNetworkBackend, released: Callable[[H1Connection], None]) -> None:
        self.origin = origin
        self._ssl_context = ssl_context
        self._keepalive_expiry = keepalive_expiry
        self._backend = network_backend
        self._released = released
        self._request: httpx.Request | None = None  # the request being answered (for its errors)
        self._stream: Any = None
        self._state = _NEW
        self._idle_since = 0.0
        # the response being read, filled in by the parser's callbacks (the on_* methods)
        self._parser: httptools.HttpResponseParser | None = None
        self._is_head = False
        self._interim = False
        self._status = 0
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_done = False
        self._complete = False
        self._keep_alive = False
        self._parts: list[bytes] = []  # body bytes parsed and not yet handed out
        self._read_timeout: float | None = None
        self._close_requested = False  # the request said `Connection: close`

    # --- the pool's interface -------------------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` and read the response head; the body follows as the response's stream.
        Raises ConnectionNotAvailable when this connection cannot take it (the pool's cue to try
        another), else httpx's exceptions."""
        state = self._state
        if state == _IDLE:
            if self._stream.get_extra_info("is_readable"):  # closed by the server, or stray bytes
                await self.aclose()
                raise ConnectionNotAvailable
        elif state != _NEW:
            raise ConnectionNotAvailable
        self._state = _ACTIVE
        self._request = request
        timeouts = request.extensions.get("timeout") or {}
        try:
            stream = self._stream
            if stream is None:
                stream = await self._connect(request, timeouts.get("connect"))
            await self._send(stream, request, timeouts.get("write"))
            self._read_timeout = timeouts.get("read")
            await self._receive_head(stream, request.method == "HEAD")
        except BaseException as exc:
            self._request = None
            await self.aclose()
            error = _network_error(exc, request)
            if error is None:
                raise
            raise error from exc
        version = self._parser.get_http_version()
        return httpx.Response(self._status, headers=self._headers, stream=_Body(self), request=request, extensions={
            "http_version": _VERSIONS.get(version) or b"HTTP/" + version.encode(),
            "reason_phrase": self._reason,
            "network_stream": stream,
        })

    def is_available(self) -> bool:
        """Can take a request now: never connected yet, or idle. Whether the server closed an idle
        connection is asked once, when a request is handed to it (one poll per request, not one
        per check)."""
        return self._state in (_NEW, _IDLE)

    def is_idle(self) -> bool:
        return self._state == _IDLE

    def has_expired(self) -> bool:
        """Closed, or idle for longer than the keep-alive expiry (a connection the server closed
        while idle is found out when it is next used: `handle_async_request`)."""
        state = self._state
        if state == _IDLE:
            expiry = self._keepalive_expiry
            return expiry is not None and time.monotonic() - self._idle_since > expiry
        return state == _CLOSED

    async def aclose(self) -> None:
        self._state = _CLOSED
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.aclose()

    # --- one exchange ---------------------------------------------------------------------------

    async def _connect(self, request: httpx.Request, timeout: float | None) -> Any:  # noqa: ASYNC109
        scheme, host_bytes, port = self.origin
        host = host_bytes.decode("ascii")
        self._stream = await self._backend.connect_tcp(host, port, timeout=timeout)
        if scheme == b"https":  # the pool's context: certificates checked, ALPN offering HTTP/1.1
            sni = request.extensions.get("sni_hostname") or host
            self._stream = await self._stream.start_tls(self._ssl_context, server_hostname=sni, timeout=timeout)
        return self._stream

    async def _send(self, stream: Any, request: httpx.Request, timeout: float | None) -> None:  # noqa: ASYNC109
        headers = request.headers.raw  # (name as given, value) in bytes, as they go out
        try:
            method = request.method.encode("ascii")
        except UnicodeEncodeError:
            raise httpx.LocalProtocolError("a request method must be ASCII", request=request) from None
        lines = [b"%s %s HTTP/1.1" % (method, request.url.raw_path)]
        lines += [name + b": " + value for name, value in headers]
        lines.append(b"\r\n")
        head = b"\r\n".join(lines)
        # exactly one CRLF per line: a CR, LF or NUL inside a method, target or header would let
        # a value smuggle headers or a second request in
        if head.count(b"\n") != len(lines) or head.count(b"\r") != len(lines) or b"\0" in head:
            raise httpx.LocalProtocolError("CR, LF or NUL in the request method, target or headers", request=request)
        chunked, self._close_requested = _framing(headers)
        body = request.stream
        if type(body) is IN_MEMORY:
            data = b"".join(body)
            if chunked:
                data = (_chunk(data) if data else b"") + LAST_CHUNK
            if len(data) <= ONE_WRITE:
                await stream.write(head + data, timeout)
            else:
                await stream.write(head, timeout)
                await stream.write(data, timeout)
            return
        await stream.write(head, timeout)  # then the body as it comes
        if hasattr(body, "__aiter__"):
            async for part in body:
                if part:
                    await stream.write(_chunk(part) if chunked else part, timeout)
        else:
            for part in body:
                if part:
                    await stream.write(_chunk(part) if chunked else part, timeout)
        if chunked:
            await stream.write(LAST_CHUNK, timeout)

    async def _receive_head(self, stream: Any, is_head: bool) -> None:
        self._parser = httptools.HttpResponseParser(self)  # a fresh one per response costs < 1 µs
        self._is_head = is_head
        self._interim = self._head_done = self._complete = self._keep_alive = False
        self._status = 0
        self._reason = b""
        self._headers = []
        self._parts.clear()
        received = 0
        while not self._head_done:
            if received > MAX_HEAD:
                raise httpx.RemoteProtocolError(f"the response head is longer than {MAX_HEAD} bytes",
                                                request=self._request)
            data = await stream.read(READ_SIZE, self._read_timeout)
            if not data:
                raise httpx.RemoteProtocolError(
                    "Server disconnected in the middle of the response head" if received
                    else "Server disconnected without sending a response.", request=self._request)
            received += len(data)
            self._feed(data)

    def _feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            raise httpx.RemoteProtocolError("the server switched protocols unasked", request=self._request) from None
        except httptools.HttpParserError as exc:
            if not self._complete:
                raise httpx.RemoteProtocolError(f"malformed response: {exc}", request=self._request) from None
            # the response is whole, and parsing stopped after it: reusable only after a HEAD
            # response whose head ended this read (nothing followed it)
            self._keep_alive = self._keep_alive and self._is_head and data.endswith(b"\r\n\r\n")

    async def _next_part(self) -> bytes | None:
        """The next piece of the body as it arrives (what one read brought), or None at its end."""
        parts = self._parts
        if not parts and not self._complete:
            try:
                await self._read_body()
            except BaseException as exc:
                request = self._request
                await self.aclose()
                error = _network_error(exc, request)
                if error is None:
                    raise
                raise error from exc
        if parts:
            part = parts[0] if len(parts) == 1 else b"".join(parts)
            parts.clear()
            return part
        return None

    async def _read_body(self) -> None:
        parts = self._parts
        stream = self._stream
        received = 0  # bytes read that brought no body yet
        while not parts and not self._complete:
            if received > MAX_HEAD:
                raise httpx.RemoteProtocolError(f"more than {MAX_HEAD} bytes of chunk framing or trailers",
                                                request=self._request)
            data = await stream.read(READ_SIZE, self._read_timeout)
            if data:
                received += len(data)
                self._feed(data)
            elif self._reads_until_close():
                self._complete = True  # the end of the connection is the end of the body
                self._keep_alive = False
            else:
                raise httpx.RemoteProtocolError("Server disconnected before the end of the response body",
                                                request=self._request)

    def _reads_until_close(self) -> bool:
        """Whether the body is delimited by the end of the connection: neither a Content-Length
        nor a chunked Transfer-Encoding (looked up only at that end, never per response)."""
        for name, value in self._headers:
            name = name.lower()
            if name == b"content-length" or (name == b"transfer-encoding" and _ends_chunked(value)):
                return False
        return True

    async def _response_closed(self) -> None:
        """The response body is done with: keep the connection for the next request when the
        whole response was read and both sides keep it alive, else close it; then hand it back."""
        self._request = None
        try:
            if self._state != _ACTIVE:  # already closed by an error while reading the body
                return
            if self._complete and self._keep_alive:
                self._state = _IDLE
                self._idle_since = time.monotonic()
                self._parser = None
            else:
                await self.aclose()
        finally:
            self._released(self)

    # --- parser callbacks (httptools calls these from feed_data) ---------------------------------

    def on_message_begin(self) -> None:
        if self._complete:  # bytes after the final response
            raise _Stop

    def on_status(self, reason: bytes) -> None:
        self._reason += reason  # in pieces when a read ends inside the status line

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._head_done:  # after the head: trailers of a chunked body, not headers
            self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        if status < 200 and status != 101:  # interim (100 Continue, 103 Early Hints): skipped
            self._interim = True
            self._reason = b""
            self._headers = []
            return
        self._status = status
        self._head_done = True
        if self._is_head:  # llhttp would wait for the body Content-Length announces
            self._complete = True
            self._keep_alive = parser.should_keep_alive() and not self._close_requested
            raise _Stop

    def on_body(self, body: bytes) -> None:
        self._parts.append(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._complete = True
        # the response's HTTP version and Connection header, and the request's
        self._keep_alive = self._parser.should_keep_alive() and not self._close_requested


class _Body(httpx.AsyncByteStream):
    """A response body: async-iterable pieces of bytes, as they arrive, and `aclose`.

    Its end, an error while reading it or `aclose` (whichever comes first) is the end of the
    response for the connection, exactly once: a caller that stops at an error without closing
    the response still gives the connection back. Iterates itself (no async generator per body)."""

    __slots__ = ("_connection",)

    def __init__(self, connection: H1Connection) -> None:
        self._connection: H1Connection | None = connection

    def __aiter__(self) -> _Body:  # type: ignore[override]
        return self

    async def __anext__(self) -> bytes:
        connection = self._connection
        if connection is not None:
            try:
                part = await connection._next_part()
            except BaseException:
                await self.aclose()
                raise
            if part is not None:
                return part
            await self.aclose()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Closing before the end closes the connection (the rest of the body is never read)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection._response_closed()


def _network_error(exc: BaseException, request: httpx.Request | None) -> httpx.TransportError | None:
    """httpx's exception for an httpcore one the network layer raised (None for any other)."""
    kind = _NETWORK_ERRORS.get(type(exc))
    return None if kind is None else kind(str(exc), request=request)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _ends_chunked(value: bytes) -> bool:
    return value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"


def _framing(headers: list[tuple[bytes, bytes]]) -> tuple[bool, bool]:
    """(the body is chunk-encoded, the request asks to close the connection after the response)."""
    chunked = close = False
    for name, value in headers:
        size = len(name)
        if size == 17 and name.lower() == b"transfer-encoding":
            chunked = _ends_chunked(value)
        elif size == 10 and name.lower() == b"connection":
            close = b"close" in value.lower()
    return chunked, close
