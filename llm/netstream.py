"""httpcore's network layer on plain asyncio streams, for the upstream LLM client.

httpcore's default backend goes through anyio, which yields to the event loop and enters a
cancel scope on every read and write: about a fifth of the CPU an upstream call costs here.
asyncio's own streams do the same job (TCP, TLS upgrade, timeouts via `asyncio.timeout`) and
write without a round trip through the loop when the socket can take the bytes.

Used through `gateway.netguard.guarded_backend`, which checks every address before connecting.
It raises httpcore's exceptions (the interface it implements); `llm.h1`, its one caller, raises
httpx's in their place."""

from __future__ import annotations

import asyncio
import select
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore

READ_LIMIT = 1 << 16
WRITE_HIGH_WATER = 1 << 16  # beyond this many unsent bytes, a write waits for the socket to drain


class AsyncioStream(httpcore.AsyncNetworkStream):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        # asks the kernel whether the socket has something to read, without reading it
        self._poll = select.poll()
        sock = writer.get_extra_info("socket")
        if sock is not None:
            self._poll.register(sock.fileno(), select.POLLIN)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109 (the interface)
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError:
            raise httpcore.ReadTimeout(f"no data from the server for {timeout} s") from None
        except OSError as exc:
            raise httpcore.ReadError(str(exc) or type(exc).__name__) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109 (the interface)
        if not buffer:
            return
        transport = self._writer.transport
        if transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        try:
            self._writer.write(buffer)
            if transport.get_write_buffer_size() > WRITE_HIGH_WATER:
                async with asyncio.timeout(timeout):
                    await self._writer.drain()
        except TimeoutError:
            raise httpcore.WriteTimeout(f"the server took no data for {timeout} s") from None
        except OSError as exc:
            raise httpcore.WriteError(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        self._writer.close()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> AsyncioStream:  # noqa: ASYNC109 (the interface)
        try:
            await self._writer.start_tls(ssl_context, server_hostname=server_hostname, ssl_handshake_timeout=timeout)
        except TimeoutError:
            raise httpcore.ConnectTimeout("the TLS handshake timed out") from None
        except (OSError, ssl.SSLError) as exc:
            self._writer.close()
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # whether an idle connection was closed or written to by the server: what the event
            # loop has already read (end of stream, a closing transport, bytes in the reader's
            # buffer), or what the kernel holds and the loop has not read yet (a FIN that came
            # in since the loop last looked: the next request would otherwise go out on it)
            reader = self._reader
            return bool(reader.at_eof() or self._writer.transport.is_closing() or reader._buffer
                        or self._poll.poll(0))
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info in ("ssl_object", "socket"):
            return self._writer.get_extra_info(info)
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109 (the interface)
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> AsyncioStream:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, limit=READ_LIMIT, local_addr=(local_address, 0) if local_address else None,
                )
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        sock = writer.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return AsyncioStream(reader, writer)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,  # noqa: ASYNC109 (the interface)
                                  socket_options: Iterable[Any] | None = None) -> AsyncioStream:
        raise httpcore.ConnectError("unix sockets are not used for upstream calls")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
