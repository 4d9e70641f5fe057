"""The upstream HTTP/1.1 connection (`llm.h1.H1Connection`, inside `llm.pool.LifoPool` under
`gateway.netguard.GuardedTransport`): how it frames requests, reads every kind of response body,
streams, keeps connections alive or lets them go, and which httpx error each failure becomes.

Real HTTP on loopback: each test starts an asyncio server that writes exact bytes (the test's
`handler`, run once per accepted connection) and talks to it through an `httpx.AsyncClient` over
the guarded transport, as the gateway does. Every scenario is bounded in time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import httpx
import pytest

from gateway import netguard
from gateway.netguard import GuardedTransport

BOUND = 15  # seconds: no scenario may hang past this

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
MakeHandler = Callable[["Server"], Handler]


@pytest.fixture(autouse=True)
def loopback_allowed(monkeypatch):
    """These servers live on 127.0.0.1: allow loopback through the SSRF guard, with real DNS."""
    monkeypatch.setenv("GOCLAW_ALLOW_PRIVATE_NETWORKS", "127.0.0.0/8")
    monkeypatch.setattr(netguard, "resolve", netguard._system_resolve)


class Server:
    """A loopback server running `make(server)(reader, writer)` for each TCP connection it
    accepts; counts the connections and, per connection, the requests `read_request` read on it."""

    def __init__(self, make: MakeHandler) -> None:
        self.handler = make(self)
        self.accepted = 0
        self.requests_per_connection: list[int] = []
        self.raw_requests: list[bytes] = []
        self.finished = 0  # connection handlers that have returned (and closed their connection)
        self._tasks: set[asyncio.Task] = set()
        self._changed = asyncio.Condition()

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.requests_per_connection.append(0)
        reader.number = self.accepted - 1  # which connection this is, for read_request
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:  # by __aexit__: this handler was still waiting
            pass
        finally:
            writer.close()
            self.finished += 1
            self._tasks.discard(task)
            await self._notify()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        """One whole request as sent (head and body, Content-Length or chunked), or None when
        the client closed the connection instead."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        lowered = head.lower()
        body = b""
        if b"\r\ntransfer-encoding: chunked\r\n" in lowered:
            while not body.endswith(b"0\r\n\r\n"):
                body += await reader.readuntil(b"\r\n")
        elif b"\r\ncontent-length: " in lowered:
            size = int(lowered.split(b"\r\ncontent-length: ", 1)[1].split(b"\r\n", 1)[0])
            body = await reader.readexactly(size)
        self.requests_per_connection[reader.number] += 1
        self.raw_requests.append(head + body)
        await self._notify()
        return head + body

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Wait until `predicate()` holds (checked whenever a request arrives or a connection ends)."""
        async with self._changed:
            await self._changed.wait_for(predicate)

    async def until_finished(self, count: int) -> None:
        await self.until(lambda: self.finished >= count)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()


def run(make: MakeHandler, scenario: Callable[..., Awaitable]):
    """Run `scenario(client, server)` against a fresh loopback server whose connections
    `make(server)` handles, bounded in time."""

    async def main():
        async with asyncio.timeout(BOUND), contextlib.AsyncExitStack() as stack:
            server = await stack.enter_async_context(Server(make))
            limits = httpx.Limits(max_connections=10, max_keepalive_connections=10)
            client = await stack.enter_async_context(httpx.AsyncClient(transport=GuardedTransport(limits=limits)))
            return await scenario(client, server)

    return asyncio.run(main())


def serving(*responses: bytes, close: bool = False) -> MakeHandler:
    """Answer the server's n-th request with `responses[n]` (the last one once they run out),
    closing the connection after each answer when `close`, else reading on until the client
    closes it."""

    def make(server: Server) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await server.read_request(reader) is not None:
                writer.write(responses[min(len(server.raw_requests), len(responses)) - 1])
                await writer.drain()
                if close:
                    return

        return handler

    return make


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


# --- response bodies -----------------------------------------------------------------------------


def test_a_content_length_body_is_read_whole_with_status_reason_version_and_headers_as_sent():
    response = b"HTTP/1.1 201 Made It\r\nX-Trace: a\r\ncontent-type: text/plain\r\nContent-Length: 5\r\n\r\nhello"

    async def scenario(client, server):
        answer = await client.get(server.url + "/x")
        return (answer.status_code, answer.reason_phrase, answer.http_version, answer.headers.raw, answer.content)

    assert run(serving(response), scenario) == (
        201, "Made It", "HTTP/1.1",
        [(b"X-Trace", b"a"), (b"content-type", b"text/plain"), (b"Content-Length", b"5")], b"hello",
    )


def test_a_chunked_body_is_decoded_and_its_extensions_and_trailers_are_not_headers():
    response = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: 42\r\n\r\n")

    async def scenario(client, server):
        first = await client.get(server.url)
        second = await client.get(server.url)  # the connection was left clean for the next one
        return first.content, first.headers.raw, second.content, server.accepted

    assert run(serving(response), scenario) == (
        b"hello world", [(b"Transfer-Encoding", b"chunked")], b"hello world", 1,
    )


def test_a_body_without_length_is_read_until_the_server_closes_and_the_connection_is_not_reused():
    response = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it, then the end"

    async def scenario(client, server):
        first = await client.get(server.url)
        second = await client.get(server.url)
        return first.http_version, first.text, second.text, server.accepted

    assert run(serving(response, close=True), scenario) == (
        "HTTP/1.0", "all of it, then the end", "all of it, then the end", 2,
    )


def test_head_204_and_304_responses_have_no_body_and_keep_the_connection():
    responses = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",  # HEAD: the length of the body not sent
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n",
        OK,
    )

    async def scenario(client, server):
        head = await client.head(server.url)
        empty = await client.get(server.url)
        same = await client.get(server.url, headers={"If-None-Match": '"v1"'})
        last = await client.get(server.url)
        return ([(r.status_code, r.content) for r in (head, empty, same, last)],
                server.accepted, server.requests_per_connection)

    assert run(serving(*responses), scenario) == (
        [(200, b""), (204, b""), (304, b""), (200, b"ok")], 1, [4],
    )


def test_interim_100_and_103_responses_are_skipped():
    async def scenario(client, server):
        answer = await client.get(server.url)
        return answer.status_code, answer.headers.raw, answer.text

    def make(server):
        async def handler(reader, writer):
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
            writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n" + OK)
            await writer.drain()
            await server.read_request(reader)

        return handler

    assert run(make, scenario) == (200, [(b"Content-Length", b"2")], "ok")


# --- requests ------------------------------------------------------------------------------------


def test_a_request_goes_out_as_its_head_then_its_body_exactly():
    async def scenario(client, server):
        answer = await client.post(server.url + "/v1/chat?x=1", content=b'{"a": 1}', headers={"X-Key": "k"})
        sent = answer.request
        head = b"".join(b"%s: %s\r\n" % pair for pair in sent.headers.raw)
        return server.raw_requests, [b"POST /v1/chat?x=1 HTTP/1.1\r\n" + head + b'\r\n{"a": 1}']

    sent, expected = run(serving(OK), scenario)
    assert sent == expected


def test_a_streamed_request_body_is_chunk_encoded():
    async def parts():
        yield b"abc"
        yield b""
        yield b"de"

    async def scenario(client, server):
        await client.post(server.url, content=parts())
        return server.raw_requests[0].split(b"\r\n\r\n", 1)[1]

    assert run(serving(OK), scenario) == b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"


def test_a_header_value_with_a_line_break_is_refused_before_anything_is_sent():
    async def scenario(client, server):
        with pytest.raises(httpx.LocalProtocolError):
            await client.get(server.url, headers={"X-Evil": "a\r\nX-Injected: 1"})
        await server.until_finished(1)
        return server.raw_requests

    assert run(serving(OK), scenario) == []


# --- keep-alive ----------------------------------------------------------------------------------


def test_keep_alive_responses_reuse_one_connection():
    async def scenario(client, server):
        texts = [(await client.get(server.url)).text for _ in range(5)]
        return texts, server.accepted, server.requests_per_connection

    assert run(serving(OK), scenario) == (["ok"] * 5, 1, [5])


def test_a_connection_close_response_is_not_reused():
    close = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"

    async def scenario(client, server):
        texts = [(await client.get(server.url)).text for _ in range(3)]
        return texts, server.accepted, server.requests_per_connection

    # the server keeps each connection open: the client alone decides not to send on it again
    assert run(serving(close), scenario) == (["ok"] * 3, 3, [1, 1, 1])


def test_an_http_1_0_response_without_keep_alive_is_not_reused():
    old = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"

    async def scenario(client, server):
        texts = [(await client.get(server.url)).text for _ in range(2)]
        return texts, server.accepted

    assert run(serving(old), scenario) == (["ok", "ok"], 2)


def test_a_keep_alive_connection_the_server_closed_while_idle_is_replaced_transparently():
    async def scenario(client, server):
        first = await client.get(server.url)
        await server.until_finished(1)  # closed by the server while idle in the pool
        second = await client.get(server.url)
        return first.text, second.text, server.accepted

    assert run(serving(OK, close=True), scenario) == ("ok", "ok", 2)


def test_a_connection_the_server_wrote_to_while_idle_is_not_reused():
    async def scenario(client, server):
        first = await client.get(server.url)
        stray.set()
        await wrote_stray.wait()  # bytes no request asked for, now waiting on the idle connection
        second = await client.get(server.url)
        return first.text, second.status_code, second.text, server.accepted

    stray, wrote_stray = asyncio.Event(), asyncio.Event()

    def make(server):
        async def handler(reader, writer):
            if await server.read_request(reader) is None:
                return
            writer.write(OK)
            await writer.drain()
            if server.accepted == 1:
                await stray.wait()
                writer.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                wrote_stray.set()
            await server.read_request(reader)

        return handler

    assert run(make, scenario) == ("ok", 200, "ok", 2)


def test_a_body_closed_before_its_end_closes_the_connection():
    async def scenario(client, server):
        async with client.stream("GET", server.url) as response:
            assert await anext(response.aiter_raw()) == b"ab"  # and "cd" is never read
        await server.until_finished(1)  # the client hung up on it
        after = await client.get(server.url)
        return after.text, server.accepted, server.requests_per_connection

    def make(server):
        async def handler(reader, writer):
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab" if server.accepted == 1 else OK)
            await writer.drain()
            await server.read_request(reader)

        return handler

    assert run(make, scenario) == ("ok", 2, [1, 1])


def test_a_request_cancelled_while_waiting_for_the_response_closes_the_connection():
    async def scenario(client, server):
        waiting = asyncio.create_task(client.get(server.url))
        await server.until(lambda: server.raw_requests)  # sent, and waiting for the answer
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await server.until_finished(1)  # the client hung up on it
        after = await client.get(server.url)
        return after.text, server.accepted

    def make(server):
        async def handler(reader, writer):
            await server.read_request(reader)
            if server.accepted > 1:
                writer.write(OK)
                await writer.drain()
            await server.read_request(reader)  # the first connection: until the client hangs up

        return handler

    assert run(make, scenario) == ("ok", 2)


# --- streaming -----------------------------------------------------------------------------------


def test_a_streamed_body_arrives_piece_by_piece_as_the_server_sends_it():
    received_first = asyncio.Event()

    async def scenario(client, server):
        async with client.stream("GET", server.url) as response:
            pieces = response.aiter_raw()
            first = await anext(pieces)
            received_first.set()  # the server sends the rest only now
            rest = [piece async for piece in pieces]
        return first, rest

    def make(server):
        async def handler(reader, writer):
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"d\r\ndata: first\n\n\r\n")
            await writer.drain()
            await received_first.wait()
            writer.write(b"e\r\ndata: second\n\n\r\n0\r\n\r\n")
            await writer.drain()
            await server.read_request(reader)

        return handler

    assert run(make, scenario) == (b"data: first\n\n", [b"data: second\n\n"])


# --- failures ------------------------------------------------------------------------------------


@pytest.mark.parametrize("response", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    b"HTTP/1.1 200 OK\r\nContent-Len",
    b"",
], ids=["mid-content-length-body", "mid-chunked-body", "mid-head", "no-response"])
def test_a_server_closing_before_the_response_is_complete_is_a_remote_protocol_error(response):
    async def scenario(client, server):
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(server.url)
        return server.accepted

    assert run(serving(response, close=True), scenario) == 1


@pytest.mark.parametrize("response", [
    b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTPT/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
], ids=["bad-status-code", "bad-protocol", "length-and-chunked", "garbage-after-response"])
def test_a_malformed_response_is_a_remote_protocol_error_or_ends_the_connection(response):
    async def scenario(client, server):
        try:
            answer = await client.get(server.url)
        except httpx.RemoteProtocolError:
            outcome = "RemoteProtocolError"
        else:
            outcome = answer.text
        after = await client.get(server.url)
        return outcome, after.text, server.accepted

    outcome, after, accepted = run(serving(response, OK), scenario)
    # a response followed by garbage is whole and is used; the connection is not
    expected = "ok" if response.endswith(b"Bad Header\r\n\r\n") else "RemoteProtocolError"
    assert (outcome, after, accepted) == (expected, "ok", 2)


def test_a_server_that_does_not_answer_in_time_is_a_read_timeout():
    async def scenario(client, server):
        with pytest.raises(httpx.ReadTimeout):
            await client.get(server.url, timeout=httpx.Timeout(5, read=0.2))
        return server.accepted

    def make(server):
        async def handler(reader, writer):
            await server.read_request(reader)
            await server.read_request(reader)  # never answers; returns when the client hangs up

        return handler

    assert run(make, scenario) == 1


@pytest.mark.parametrize("response", [
    b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 200_000,
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Long-Trailer: " + b"a" * 200_000,
], ids=["endless-head", "endless-trailer"])
def test_a_response_head_or_trailer_that_does_not_end_is_a_remote_protocol_error(response):
    async def scenario(client, server):
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(server.url)
        return server.accepted

    assert run(serving(response), scenario) == 1  # the server keeps the connection open meanwhile
