"""The upstream connection pool (`llm.pool.LifoPool`, under `gateway.netguard.GuardedTransport`):
keep-alive reuse, the `max_connections` bound, the pool timeout, connections the server closed,
`Connection: close`, abandoned response bodies, the idle limit and eviction across origins.

Real HTTP on loopback: each test starts a tiny asyncio HTTP/1.1 keep-alive server that counts the
TCP connections it accepts and sees end, and talks to it through an `httpx.AsyncClient` over the
guarded transport (loopback allowed for these tests). Every scenario is bounded in time."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest

from gateway import netguard
from gateway.netguard import GuardedTransport
from llm.base import BaseClient

BOUND = 15  # seconds: no scenario may hang past this


class Upstream:
    """A loopback HTTP/1.1 keep-alive server. GET paths:

    /            "ok" at once
    /hold        sends "ab", then "cd" only once `release` is set (a slow body, driven by the test)
    /close       "ok" with `Connection: close`, then closes the connection
    /hang-up     "ok" as keep-alive, then closes the connection anyway (as an idle timeout would)
    /sse         a chunked server-sent-event stream: one delta, `data: [DONE]`, then the body's end
    """

    def __init__(self) -> None:
        self.accepted = 0  # TCP connections accepted
        self.ended = 0  # connections gone (closed by either side)
        self.open = 0
        self.most_open = 0  # the most connections open at the same time
        self.requests = 0
        self.release = asyncio.Event()
        self._changed = asyncio.Condition()
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> Upstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self.release.set()
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()
        await self.until(lambda: self.open == 0)  # every connection handler has finished

    async def until(self, predicate) -> None:
        """Wait until `predicate()` holds (re-checked whenever a connection or request comes or goes)."""
        async with self._changed:
            await self._changed.wait_for(predicate)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        self._writers.add(writer)
        await self._notify()
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return  # the client hung up
                self.requests += 1
                await self._notify()
                if not await self._answer(head.split(b" ", 2)[1].decode(), writer):
                    return
        except ConnectionError:
            return
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self.open -= 1
            self.ended += 1
            await self._notify()

    async def _answer(self, path: str, writer: asyncio.StreamWriter) -> bool:
        """Respond; False when the connection is to be closed afterwards."""
        if path == "/hold":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
            await writer.drain()
            await self.release.wait()
            writer.write(b"cd")
            await writer.drain()
            return True
        if path == "/sse":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            for event in (b'data: {"delta": "hi"}\n\n', b"data: [DONE]\n\n"):
                writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        close = b"Connection: close\r\n" if path == "/close" else b""
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + close + b"\r\nok")
        await writer.drain()
        return path not in ("/close", "/hang-up")


@pytest.fixture(autouse=True)
def loopback_allowed(monkeypatch):
    """These upstreams live on 127.0.0.1: allow loopback through the SSRF guard, with real DNS."""
    monkeypatch.setenv("GOCLAW_ALLOW_PRIVATE_NETWORKS", "127.0.0.0/8")
    monkeypatch.setattr(netguard, "resolve", netguard._system_resolve)


def run(scenario, *, max_connections: int = 10, max_keepalive: int | None = None, upstreams: int = 1):
    """Run `scenario(client, *upstreams)` against fresh loopback servers, bounded in time."""

    async def main():
        async with asyncio.timeout(BOUND), contextlib.AsyncExitStack() as stack:
            servers = [await stack.enter_async_context(Upstream()) for _ in range(upstreams)]
            limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_keepalive)
            client = await stack.enter_async_context(httpx.AsyncClient(transport=GuardedTransport(limits=limits)))
            return await scenario(client, *servers)

    return asyncio.run(main())


async def ok(client: httpx.AsyncClient, url: str, **kwargs) -> str:
    response = await client.get(url, **kwargs)
    assert response.status_code == 200
    return response.text


async def queued(request) -> asyncio.Task:
    """Start `request` and let it run up to its first real wait (in line in the pool, when full)."""
    task = asyncio.create_task(request)
    for _ in range(3):
        await asyncio.sleep(0)
    return task


# --- keep-alive reuse ----------------------------------------------------------------------------


def test_sequential_requests_reuse_one_keep_alive_connection():
    async def scenario(client, upstream):
        assert [await ok(client, upstream.url) for _ in range(20)] == ["ok"] * 20
        return upstream.accepted, upstream.requests

    assert run(scenario) == (1, 20)


# --- the max_connections bound -------------------------------------------------------------------


def test_concurrent_requests_beyond_max_connections_queue_and_all_succeed():
    async def scenario(client, upstream):
        texts = await asyncio.gather(*(ok(client, upstream.url) for _ in range(10)))
        return texts, upstream.accepted

    texts, accepted = run(scenario, max_connections=3)
    assert texts == ["ok"] * 10 and accepted <= 3


def test_slow_concurrent_requests_never_hold_more_than_max_connections_open():
    async def scenario(client, upstream):
        requests = [asyncio.create_task(ok(client, f"{upstream.url}/hold")) for _ in range(6)]
        await upstream.until(lambda: upstream.requests == 2)  # two in flight, four queued in the pool
        upstream.release.set()
        return await asyncio.gather(*requests), upstream.most_open

    texts, most_open = run(scenario, max_connections=2)
    assert texts == ["abcd"] * 6 and most_open == 2


def test_a_request_waiting_longer_than_the_pool_timeout_gets_pool_timeout():
    async def scenario(client, upstream):
        async with client.stream("GET", f"{upstream.url}/hold"):  # holds the only connection
            with pytest.raises(httpx.PoolTimeout):
                await client.get(upstream.url, timeout=httpx.Timeout(5, pool=0.2))
        assert await ok(client, upstream.url) == "ok"  # the slot is free again once the first is closed
        return upstream.accepted

    assert run(scenario, max_connections=1) == 2  # the half-read connection is not reused


# --- connections that cannot be reused -----------------------------------------------------------


def test_a_keep_alive_connection_the_server_closed_while_idle_is_replaced_transparently():
    async def scenario(client, upstream):
        assert await ok(client, f"{upstream.url}/hang-up") == "ok"
        await upstream.until(lambda: upstream.ended == 1)  # closed while idle in the pool
        assert await ok(client, upstream.url) == "ok"
        return upstream.accepted, upstream.requests

    assert run(scenario) == (2, 2)


def test_a_connection_the_server_closed_is_not_handed_to_a_waiting_request():
    async def scenario(client, upstream):
        async with client.stream("GET", f"{upstream.url}/hang-up") as first:  # the only connection
            waiting = await queued(ok(client, upstream.url))
            await upstream.until(lambda: upstream.ended == 1)  # closed by the server before it comes back
            await first.aread()
        assert await waiting == "ok"
        return upstream.accepted

    assert run(scenario, max_connections=1) == 2


def test_a_connection_close_response_is_not_reused_and_later_requests_still_succeed():
    async def scenario(client, upstream):
        assert [await ok(client, f"{upstream.url}/close") for _ in range(3)] == ["ok"] * 3
        assert await ok(client, upstream.url) == "ok"
        return upstream.accepted

    assert run(scenario, max_connections=1) == 4


def test_a_response_closed_mid_body_gives_its_connection_slot_back():
    async def scenario(client, upstream):
        async with client.stream("GET", f"{upstream.url}/hold") as response:
            assert await anext(response.aiter_raw()) == b"ab"  # and the rest never read
        assert await ok(client, upstream.url, timeout=httpx.Timeout(5, pool=2)) == "ok"
        return upstream.accepted

    assert run(scenario, max_connections=1) == 2  # the half-read connection is not reused


def test_a_cancelled_reader_mid_body_gives_its_connection_slot_back():
    async def scenario(client, upstream):
        started = asyncio.Event()

        async def read_everything():
            async with client.stream("GET", f"{upstream.url}/hold") as response:
                async for _ in response.aiter_raw():
                    started.set()

        reader = asyncio.create_task(read_everything())
        await started.wait()
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        assert await ok(client, upstream.url, timeout=httpx.Timeout(5, pool=2)) == "ok"
        return upstream.accepted

    assert run(scenario, max_connections=1) == 2


# --- the idle limit ------------------------------------------------------------------------------


def test_idle_connections_beyond_max_keepalive_are_closed_and_the_rest_are_reused():
    async def scenario(client, upstream):
        async with contextlib.AsyncExitStack() as held:  # four connections busy at once
            responses = [await held.enter_async_context(client.stream("GET", upstream.url)) for _ in range(4)]
            for response in responses:
                await response.aread()  # each goes back to the pool in turn
        await upstream.until(lambda: upstream.ended == 2)  # two over the idle limit are closed
        assert await asyncio.gather(ok(client, upstream.url), ok(client, upstream.url)) == ["ok", "ok"]
        return upstream.accepted, upstream.ended

    assert run(scenario, max_connections=5, max_keepalive=2) == (4, 2)  # the two kept were reused


# --- origins -------------------------------------------------------------------------------------


def test_different_origins_do_not_share_connections():
    async def scenario(client, a, b):
        for _ in range(3):
            assert [await ok(client, a.url), await ok(client, b.url)] == ["ok", "ok"]
        return a.accepted, b.accepted, a.requests, b.requests

    assert run(scenario, upstreams=2) == (1, 1, 3, 3)


def test_at_max_connections_a_new_origin_evicts_an_idle_connection_instead_of_waiting():
    async def scenario(client, a, b):
        assert await ok(client, a.url) == "ok"  # the only slot, now idle to origin A
        assert await ok(client, b.url, timeout=httpx.Timeout(5, pool=0.2)) == "ok"
        await a.until(lambda: a.ended == 1)  # A's idle connection was closed to make room
        return a.accepted, b.accepted

    assert run(scenario, max_connections=1, upstreams=2) == (1, 1)


def test_a_request_waiting_for_another_origin_gets_the_room_of_a_finished_connection():
    async def scenario(client, a, b):
        async with client.stream("GET", f"{a.url}/hold") as busy:  # the only slot, busy with origin A
            waiting = await queued(ok(client, b.url))
            a.release.set()
            await busy.aread()
        assert await waiting == "ok"
        await a.until(lambda: a.ended == 1)  # A's connection was closed to make room for B
        return a.accepted, b.accepted

    assert run(scenario, max_connections=1, upstreams=2) == (1, 1)


# --- streams ---------------------------------------------------------------------------------------


def test_a_stream_the_caller_leaves_at_its_last_event_gives_its_connection_back():
    """Adapters stop reading at `[DONE]`; the end of the chunked body is still read, so the next
    stream reuses the connection (for a TLS provider: no new handshake per streamed chat)."""

    async def scenario(client, upstream):
        adapter = BaseClient(client, upstream.url)
        for _ in range(3):
            async with contextlib.aclosing(adapter.stream_sse("GET", "sse")) as events:
                async for event in events:
                    if event.data == "[DONE]":
                        break
        return upstream.accepted, upstream.requests

    assert run(scenario) == (1, 3)
