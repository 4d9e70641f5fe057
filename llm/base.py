"""Shared HTTP plumbing for every adapter: one connection pool, timeouts,
retries with backoff, error normalisation and SSE parsing.

Adapters only build bodies and parse answers; everything that decides how a
call behaves under failure lives here, once.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, TypeVar

import httpx
from httpx import USE_CLIENT_DEFAULT

from llm.errors import UpstreamError, UpstreamTimeout, message_from_body, redact

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_ATTEMPTS = 3
BASE_DELAY = 0.3  # seconds; doubled per attempt
MAX_DELAY = 30.0  # cap for both computed backoff and Retry-After

# Failures where the request most likely never reached the model (or the
# connection broke), so sending it again is safe and usually succeeds. Read
# timeouts are deliberately absent: a slow model stays slow, and retrying would
# multiply the caller's wait far beyond the timeout it configured.
_RETRYABLE_TRANSPORT = (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ConnectTimeout)

DRAIN_SECONDS = 0.25  # how long a finished stream may take to end its body before we hang up
DRAIN_LINES = 32

DEFAULT_HEADERS = {"Accept": "*/*", "Accept-Encoding": "gzip, deflate", "User-Agent": "goclaw-py"}

T = TypeVar("T")
RetryHook = Callable[[int, float, UpstreamError], None]
"""Called before each retry with (failed attempt number, delay in s, error);
e.g. to emit a `run.retrying` event. It must not raise."""


class UpstreamClient(httpx.AsyncClient):
    """The shared client, sending prepared requests straight to its transport.

    Every caller sends a built request with no auth and without following redirects (web_fetch
    follows them itself, checking each hop), and the client must keep no cookies (it serves every
    tenant). httpx's `send` would still run its auth flow, redirect loop and cookie extraction on
    every call — about a seventh of a chat completion's CPU, for nothing here. Anything else
    (auth, redirects) goes through httpx's own `send`."""

    def __init__(self, *, transport: httpx.AsyncBaseTransport, **kwargs: Any) -> None:
        super().__init__(transport=transport, **kwargs)
        self._direct = transport

    async def send(self, request: httpx.Request, *, stream: bool = False, auth: Any = USE_CLIENT_DEFAULT,
                   follow_redirects: Any = USE_CLIENT_DEFAULT) -> httpx.Response:
        if auth not in (USE_CLIENT_DEFAULT, None) or follow_redirects is True or self._mounts:
            return await super().send(request, stream=stream, auth=auth, follow_redirects=follow_redirects)
        response = await self._direct.handle_async_request(request)
        response.request = request
        if not stream:
            try:
                await response.aread()
            finally:
                await response.aclose()
        return response


def create_http_client(
    *,
    connect_timeout: float = 10.0,
    read_timeout: float = 300.0,
    max_connections: int = 200,
    max_keepalive_connections: int = 50,
    transport: Callable[[httpx.Limits], httpx.AsyncBaseTransport] | None = None,
) -> httpx.AsyncClient:
    """Create the process-wide client whose pool all adapters share.

    One pool means keep-alive connections are reused across tenants and
    providers instead of a TLS handshake per call. `read_timeout` bounds the
    gap between bytes, so long streams are fine as long as data keeps flowing.
    `transport(limits)` may supply the transport (the gateway's SSRF-checking one).
    """
    timeout = httpx.Timeout(connect=connect_timeout, read=read_timeout, write=connect_timeout, pool=connect_timeout)
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_keepalive_connections,
    )
    # one client serves every tenant: a cookie one provider sets must never travel with another
    # tenant's call, so the jar keeps nothing (for the calls that take httpx's own `send`)
    cookies = httpx.Cookies(CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])))
    chosen = transport(limits) if transport is not None else httpx.AsyncHTTPTransport(limits=limits)
    return UpstreamClient(timeout=timeout, transport=chosen, cookies=cookies)


async def close_http_client(client: httpx.AsyncClient) -> None:
    """Close the shared client (at application shutdown)."""
    await client.aclose()


def backoff_delay(attempt: int) -> float:
    """Delay after failed attempt `attempt` (1-based): 300ms * 2^(n-1), ±10%."""
    delay = min(BASE_DELAY * 2 ** (attempt - 1), MAX_DELAY)
    return delay * random.uniform(0.9, 1.1)


def parse_retry_after(value: str | None) -> float | None:
    """Parse a Retry-After header (delta seconds or HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_DELAY)


@dataclass
class SSEEvent:
    """One server-sent event: the `event:` name in force and one `data:` line."""

    event: str
    data: str


async def drain(lines: AsyncIterator[str]) -> None:
    """Read the little that follows a stream's last event (the end of the chunked body), so the
    connection goes back to the pool instead of being closed: for a TLS upstream, a handshake
    saved on the next call. Bounded: an upstream that keeps talking is simply hung up on; and
    never while the call is being cancelled (client gone): then the connection just closes."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        return
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            for _ in range(DRAIN_LINES):
                if await anext(lines, None) is None:
                    return
    except (TimeoutError, httpx.HTTPError):
        pass


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


class EncodedJSON(bytes):
    """A value already encoded as JSON; `encode_json` puts it in as it is (as the value of a
    top-level key of a request body)."""


def encode_json(body: Any) -> bytes:
    """Compact UTF-8 JSON, as httpx would send it (NaN refused: no provider parses it), with the
    EncodedJSON values of a top-level object spliced in."""
    if not isinstance(body, dict) or not any(isinstance(v, EncodedJSON) for v in body.values()):
        return _dumps(body)
    head = _dumps({k: v for k, v in body.items() if not isinstance(v, EncodedJSON)})
    tail = b",".join(_dumps(k) + b":" + v for k, v in body.items() if isinstance(v, EncodedJSON))
    return head[:-1] + (b"," if len(head) > 2 else b"") + tail + b"}"


_encoded: dict[tuple[int, Callable], tuple[Any, EncodedJSON]] = {}
MAX_ENCODED = 256


def encoded_once(source: Any, convert: Callable[[Any], Any]) -> EncodedJSON:
    """`convert(source)` as JSON, remembered for as long as the same `source` object comes back.
    An agent's tool list (a ToolSet's specs tuple) is the same object on every call and encoding
    it was the largest part of building an upstream request. The entry keeps `source` alive, so
    its id cannot be reused by another object while cached."""
    key = (id(source), convert)
    hit = _encoded.get(key)
    if hit is not None and hit[0] is source:
        return hit[1]
    value = EncodedJSON(_dumps(convert(source)))
    if len(_encoded) >= MAX_ENCODED:
        del _encoded[next(iter(_encoded))]
    _encoded[key] = (source, value)
    return value


class BaseClient:
    """What every adapter inherits: URL building, auth headers, retrying
    requests and streaming. Subclasses override `auth_headers`."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        api_key: str = "",
        *,
        timeout: httpx.Timeout | float | None = None,
        on_retry: RetryHook | None = None,
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout  # None = the shared client's timeouts
        self.on_retry = on_retry
        self._urls: dict[str, httpx.URL] = {}

    def auth_headers(self) -> dict[str, str]:
        return {}

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def _endpoint(self, path: str) -> httpx.URL:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(self.url(path))
        return url

    @functools.cached_property
    def _headers(self) -> list[tuple[bytes, bytes]]:
        return httpx.Headers({**DEFAULT_HEADERS, **self.auth_headers()}).raw

    @functools.cached_property
    def _json_headers(self) -> list[tuple[bytes, bytes]]:
        return [*self._headers, (b"Content-Type", b"application/json")]

    @functools.cached_property
    def _timeouts(self) -> dict[str, float | None]:
        timeout = self.timeout if self.timeout is not None else self.http.timeout
        return httpx.Timeout(timeout).as_dict()

    # -- public request helpers ------------------------------------------

    async def request_json(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """Send a request and decode its JSON answer; the whole call is
        retried on transient failures (see RETRY_STATUSES)."""

        async def attempt() -> Any:
            resp = await self._send(method, path, json_body, params)
            try:
                body = await resp.aread()
            except httpx.RequestError as exc:
                raise self._transport_error(exc, during="reading the response") from exc
            finally:
                await resp.aclose()
            if not body:
                return None
            try:
                return json.loads(body)
            except ValueError as exc:
                raise UpstreamError(resp.status_code, "upstream sent invalid JSON") from exc

        return await self._retrying(attempt)

    async def stream_lines(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
    ) -> AsyncIterator[str]:
        """Yield response lines as they arrive.

        Only opening the connection (up to a 2xx status) is retried: once
        bytes flow, the caller has seen partial output and a silent restart
        would duplicate it, so a break mid-body raises UpstreamError.
        Closing or cancelling the iterator closes the upstream response.
        """
        resp = await self._retrying(lambda: self._send(method, path, json_body, params))
        resp.encoding = "utf-8"  # event streams are UTF-8 (and httpx would parse Content-Type to find out)
        lines = resp.aiter_lines()
        try:
            async for line in lines:
                try:
                    yield line
                except GeneratorExit:  # the caller has what it wanted (`[DONE]`, `message_stop`)
                    await drain(lines)
                    raise
        except httpx.RequestError as exc:
            raise self._transport_error(exc, during="streaming", retryable=False) from exc
        finally:
            await resp.aclose()

    async def stream_sse(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
    ) -> AsyncIterator[SSEEvent]:
        """Yield server-sent events.

        Every `data:` line is dispatched on its own: LLM providers put one
        JSON document per line and some omit the blank separator lines, so
        joining multi-line data (as generic SSE would) only adds failure modes.
        """
        event = ""
        lines = self.stream_lines(method, path, json_body=json_body, params=params)
        async with aclosing(lines):
            async for line in lines:
                if not line:
                    event = ""
                    continue
                field, _, value = line.partition(":")
                if value.startswith(" "):
                    value = value[1:]
                if field == "data":
                    yield SSEEvent(event or "message", value)
                elif field == "event":
                    event = value

    # -- internals ---------------------------------------------------------

    async def _send(self, method: str, path: str, json_body: Any, params: dict[str, Any] | None) -> httpx.Response:
        """One attempt: returns an open 2xx response or raises UpstreamError.

        The request is built here rather than by `AsyncClient.build_request` (which re-parses
        the URL and merges client defaults and cookies on every call): the endpoint URL and the
        headers are computed once per adapter."""
        content = None if json_body is None else encode_json(json_body)
        request = httpx.Request(
            method,
            self._endpoint(path) if not params else self._endpoint(path).copy_merge_params(params),
            headers=self._headers if content is None else self._json_headers,
            content=content,
            extensions={"timeout": self._timeouts},
        )
        try:
            resp = await self.http.send(request, stream=True)
        except httpx.RequestError as exc:
            raise self._transport_error(exc, during="connecting") from exc
        if resp.is_success:
            return resp
        try:
            body = await resp.aread()
        except httpx.RequestError:
            body = b""
        finally:
            await resp.aclose()
        message = redact(message_from_body(body, resp.reason_phrase or "error"), self.api_key)
        raise UpstreamError(
            resp.status_code,
            message,
            parse_retry_after(resp.headers.get("retry-after")),
            retryable=resp.status_code in RETRY_STATUSES,
        )

    def _transport_error(self, exc: httpx.RequestError, *, during: str, retryable: bool | None = None) -> UpstreamError:
        if retryable is None:
            retryable = isinstance(exc, _RETRYABLE_TRANSPORT)
        detail = redact(str(exc) or type(exc).__name__, self.api_key)
        if isinstance(exc, httpx.TimeoutException):
            return UpstreamTimeout(None, f"timed out {during}: {detail}", retryable=retryable)
        return UpstreamError(None, f"network error {during}: {detail}", retryable=retryable)

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        for n in range(1, MAX_ATTEMPTS + 1):
            try:
                return await attempt()
            except UpstreamError as exc:
                if not exc.retryable or n == MAX_ATTEMPTS:
                    raise
                delay = exc.retry_after if exc.retry_after is not None else backoff_delay(n)
                if self.on_retry is not None:
                    self.on_retry(n, delay, exc)
                await asyncio.sleep(delay)  # cancellation aborts the wait
        raise AssertionError("unreachable")
