"""The upstream connection pool: keep-alive HTTP/1.1 connections per origin, reused last-in first-out.

httpcore's own pool re-examines every pooled connection (and every waiting request) on each
request and each response close, under one lock; with a few dozen keep-alive connections to one
LLM provider that scan was the largest cost of a chat completion. This pool does the same job
with a stack per origin: a request pops the most recently used idle connection (one readability
check to spot a connection the server closed), or opens a new one while fewer than
`max_connections` exist; a closed response pushes its connection back if it can be reused.

Each connection is an `llm.h1.H1Connection` (HTTP/1.1 parsed by llhttp, in C), on the network
backend the pool is given: the SSRF-checking one over `llm.netstream`. The pool takes an
`httpx.Request` and returns an `httpx.Response`, raising httpx's exceptions, so the transport
over it (`gateway.netguard.GuardedTransport`) only hands requests through: nothing is converted
to httpcore's types and back."""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import TYPE_CHECKING

import httpx

from llm.h1 import ConnectionNotAvailable, H1Connection, Origin

if TYPE_CHECKING:
    import httpcore

DEFAULT_PORTS = {b"http": 80, b"https": 443}


class LifoPool:
    """Answers httpx requests (`handle_async_request`, `aclose`), as an httpx transport would.

    At most `max_connections` connections are open (idle or busy). A request that finds none
    free waits in line (at most the pool timeout); a connection freed by a finished response goes
    straight to the first waiter for its origin, or makes room for a waiter for another origin."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None,
        max_connections: int,
        max_keepalive_connections: int,
        keepalive_expiry: float | None,
        network_backend: httpcore.AsyncNetworkBackend,
    ) -> None:
        # one TLS context for every connection, offering HTTP/1.1 only (set once, not per connect)
        self._ssl_context = ssl_context or ssl.create_default_context()
        if ssl.HAS_ALPN:
            self._ssl_context.set_alpn_protocols(["http/1.1"])
        self._keepalive_expiry = keepalive_expiry
        self._max_open = max_connections
        self._max_idle = max_keepalive_connections
        self._backend = network_backend
        self._open = 0  # connections counted against max_connections, idle or busy
        self._idle: dict[Origin, list[H1Connection]] = {}  # by (scheme, host, port)
        self._idle_count = 0
        # requests waiting for room, first come first served; each future gets the connection
        # handed over, or None for "room for one new connection is yours"
        self._waiters: deque[tuple[Origin, asyncio.Future]] = deque()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """The response to `request` on a pooled connection; its body hands the connection back
        when it is read to its end or closed (`llm.h1`)."""
        url = request.url
        scheme = url.raw_scheme
        default_port = DEFAULT_PORTS.get(scheme)
        if default_port is None:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}", request=request)
        origin = (scheme, url.raw_host, url.port or default_port)
        timeouts = request.extensions.get("timeout")
        wait = timeouts.get("pool") if timeouts else None
        while True:
            connection = await self._acquire(origin, wait, request)
            try:
                return await connection.handle_async_request(request)
            except ConnectionNotAvailable:
                await self._discard(connection)  # closed under us: try another one
            except BaseException:
                await self._discard(connection)
                raise

    async def _acquire(self, origin: Origin, wait: float | None, request: httpx.Request) -> H1Connection:
        connection = self._reuse(origin)
        if connection is not None:
            return connection
        if self._open >= self._max_open:
            self._evict_one()  # an idle connection to another origin gives its room up
        if self._open < self._max_open:
            self._open += 1
            return self._new(origin)
        handed = await self._wait_in_line(origin, wait, request)
        return handed if handed is not None else self._new(origin)

    async def _wait_in_line(self, key: Origin, wait: float | None, request: httpx.Request) -> H1Connection | None:
        future = asyncio.get_running_loop().create_future()
        entry = (key, future)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(wait):
                return await future
        except BaseException as exc:
            if entry in self._waiters:
                self._waiters.remove(entry)
            elif future.done() and not future.cancelled():  # served just as we gave up: pass it on
                handed = future.result()
                if handed is not None:
                    self._release(handed)
                else:
                    self._free_room()
            if isinstance(exc, TimeoutError):
                raise httpx.PoolTimeout("no upstream connection became free in time", request=request) from None
            raise

    def _new(self, origin: Origin) -> H1Connection:
        return H1Connection(origin, self._ssl_context, self._keepalive_expiry, self._backend, self._release)

    def _reuse(self, key: Origin) -> H1Connection | None:
        stack = self._idle.get(key)
        while stack:
            connection = stack.pop()
            self._idle_count -= 1
            if connection.is_available() and not connection.has_expired():
                return connection
            self._forget(connection)
        return None

    def _evict_one(self) -> None:
        for stack in self._idle.values():
            if stack:
                self._idle_count -= 1
                self._forget(stack.pop(0))
                return

    def _next_waiter(self, key: Origin | None = None) -> asyncio.Future | None:
        """The first waiter still waiting (for `key` only, when given)."""
        for entry in self._waiters:
            if entry[1].done():
                continue
            if key is None or entry[0] == key:
                self._waiters.remove(entry)
                return entry[1]
        return None

    def _release(self, connection: H1Connection) -> None:
        """A response is done with (the connection calls this): hand its connection on, keep it
        for later, or let it go."""
        if not connection.is_idle() or connection.has_expired():
            self._forget(connection)
            return
        key = connection.origin
        waiter = self._next_waiter(key)
        if waiter is not None:
            waiter.set_result(connection)
            return
        if self._waiters:  # someone waits for another origin: this connection makes room
            self._forget(connection)
            return
        stack = self._idle.setdefault(key, [])
        stack.append(connection)
        self._idle_count += 1
        if self._idle_count > self._max_idle or stack[0].has_expired():
            self._idle_count -= 1
            self._forget(stack.pop(0))  # the least recently used one

    def _free_room(self) -> None:
        """One connection fewer: its room goes to the first waiter, if any."""
        waiter = self._next_waiter()
        if waiter is not None:
            waiter.set_result(None)
        else:
            self._open -= 1

    def _forget(self, connection: H1Connection) -> None:
        """Make room now and close the connection in the background (closing a socket does not
        wait on the network, and must not be interrupted by a cancellation)."""
        self._free_room()
        task = asyncio.get_running_loop().create_task(connection.aclose())
        task.add_done_callback(_ignore_result)

    async def _discard(self, connection: H1Connection) -> None:
        self._free_room()
        try:
            await connection.aclose()
        except Exception:  # already failed: the socket is gone either way
            pass

    async def aclose(self) -> None:
        for stack in self._idle.values():
            while stack:
                await self._discard(stack.pop())
        self._idle_count = 0

    async def __aenter__(self) -> LifoPool:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()


def _ignore_result(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()
