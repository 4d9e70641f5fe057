"""SSRF guard for every outbound URL we are told to call (provider bases, web_fetch, MCP).

Two layers, one rule:

* `check_url(url)` — at configuration time and before each call: the URL must be http(s) and every
  address its host resolves to must be allowed (400 otherwise). Friendly, early errors.
* `GuardedTransport` / `guarded_backend(...)` — at connect time, authoritative: the host is resolved
  once more, the connection is refused when *any* address is not allowed, and the socket is opened
  to exactly an address that was checked. A name that resolves to a public address when checked and
  to 127.0.0.1 a moment later (DNS rebinding) therefore never reaches 127.0.0.1. TLS SNI, certificate
  checks and the Host header still use the host name (the HTTP connection takes them from the URL,
  not from the socket). The shared outbound client (`gateway.state.http`) and MCP's HTTP clients use it.

Not allowed: loopback, RFC 1918 / unique-local, link-local (cloud metadata 169.254.169.254,
fd00:ec2::254), CGNAT, multicast, reserved, unspecified (0.0.0.0, ::), 6to4, and the IPv4 address
inside IPv4-mapped (::ffff:a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) forms; whatever notation the URL
used (decimal `2130706433`, hex `0x7f000001`, octal `0177.0.0.1`), only the resolved address counts.
GOCLAW_ALLOW_PRIVATE_NETWORKS allows more: `1` for all, or a comma list of CIDRs and host names.
Unix sockets are never allowed. An explicit transport disables proxies from the environment.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx
from httpcore._utils import is_socket_readable

from gateway.errors import ApiError
from llm.netstream import AsyncioBackend
from llm.pool import LifoPool

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
NAT64 = ipaddress.ip_network("64:ff9b::/96")
Resolver = Callable[[str, int], Awaitable[list[str]]]


class AddressRefused(httpx.TransportError):
    """The connect-time check refused the host: not retryable, never reached the network."""


def _allowances() -> tuple[bool, list, set[str]]:
    raw = os.environ.get("GOCLAW_ALLOW_PRIVATE_NETWORKS", "").strip()
    if raw.lower() in ("1", "true", "yes", "all"):
        return True, [], set()
    networks, hosts = [], set()
    for item in filter(None, (part.strip() for part in raw.split(","))):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            hosts.add(item.lower())
    return False, networks, hosts


def _embedded_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 form carries to the same host (mapped, NAT64), else the address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def is_public(address: IPAddress) -> bool:
    address = _embedded_ipv4(address)
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or (isinstance(address, ipaddress.IPv6Address) and address.sixtofour is not None)
    )


def _allowed(address: IPAddress, host: str) -> bool:
    allow_all, networks, hosts = _allowances()
    if allow_all or host.lower().rstrip(".") in hosts:
        return True
    return is_public(address) or any(address in net or _embedded_ipv4(address) in net for net in networks)


def _parse(raw: str) -> IPAddress:
    return ipaddress.ip_address(raw.split("%", 1)[0])


async def _system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


resolve: Resolver = _system_resolve  # module attribute so tests can simulate DNS (rebinding) in-process


class Refused(Exception):
    """`checked_addresses` refused the host; the message says why (never a secret)."""


async def checked_addresses(host: str, port: int) -> list[str]:
    """Resolve `host` and return its addresses when *every* one is allowed; raise Refused otherwise
    (OSError/UnicodeError when it does not resolve)."""
    host = host.strip("[]")
    addresses = await resolve(host, port)
    if not addresses:
        raise OSError(f"{host} has no address")
    for raw in addresses:
        if not _allowed(_parse(raw), host):
            raise Refused(f"{host} resolves to a private or reserved address")
    return addresses


async def check_url(url: str, what: str = "URL") -> None:
    """Raise ApiError(400) unless `url` is http(s) and every address its host resolves to is allowed."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ApiError(400, "error.invalid_request", f"{what} must be an http(s) URL") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiError(400, "error.invalid_request", f"{what} must be an http(s) URL")
    host = parts.hostname
    try:
        await checked_addresses(host, port or (443 if parts.scheme == "https" else 80))
    except Refused:
        raise ApiError(400, "error.invalid_request", f"{what} points to a private or reserved address") from None
    except (OSError, UnicodeError) as exc:
        raise ApiError(400, "error.invalid_request", f"{what} host does not resolve: {host}") from exc


# --- connect time ---------------------------------------------------------------------------------


def guarded_backend(core: Any, refused: Callable[[str], BaseException], inner: Any = None):
    """A network backend for `core` (the `httpcore` module, or a fork with the same API such as
    `httpcore2`) that checks every TCP connect, then opens it with `inner` (default: anyio).
    `refused(message)` builds the error raised for a refused host."""

    class GuardedBackend(core.AsyncNetworkBackend):
        def __init__(self, inner: Any = None) -> None:
            self._inner = inner if inner is not None else core.AnyIOBackend()
            self._quick = inner is None  # anyio's streams answer `is_readable` slowly (see below)

        async def connect_tcp(self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109 (the interface)
                              local_address: str | None = None,
                              socket_options: Iterable[Any] | None = None):
            try:
                addresses = await asyncio.wait_for(checked_addresses(host, port), timeout)
            except TimeoutError:
                raise core.ConnectTimeout(f"resolving {host} timed out") from None
            except Refused as exc:
                raise refused(f"connection refused by the SSRF guard: {exc}") from None
            except (OSError, UnicodeError) as exc:
                raise core.ConnectError(f"cannot resolve {host}: {exc}") from None
            failure: BaseException | None = None
            for address in addresses:  # exactly the addresses just checked, never a fresh lookup
                try:
                    stream = await self._inner.connect_tcp(address, port, timeout=timeout,
                                                           local_address=local_address, socket_options=socket_options)
                    return QuickReadableStream(stream) if self._quick else stream
                except (core.ConnectError, core.ConnectTimeout) as exc:
                    failure = exc
            raise failure  # type: ignore[misc]

        async def connect_unix_socket(self, path: str, timeout: float | None = None,  # noqa: ASYNC109
                                      socket_options: Iterable[Any] | None = None):
            raise refused("connection refused by the SSRF guard: unix sockets are not allowed")

        async def sleep(self, seconds: float) -> None:
            await self._inner.sleep(seconds)

    class QuickReadableStream(core.AsyncNetworkStream):
        """The connection pool asks every pooled connection `is_readable` on every request
        (to spot ones the server closed); anyio answers through a slow attribute lookup. This
        keeps the raw socket at hand and answers directly; everything else is the inner stream's."""

        def __init__(self, inner: Any) -> None:
            self._inner = inner
            self._socket = inner.get_extra_info("socket")

        async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
            return await self._inner.read(max_bytes, timeout)

        async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
            await self._inner.write(buffer, timeout)

        async def aclose(self) -> None:
            await self._inner.aclose()

        async def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                            timeout: float | None = None):  # noqa: ASYNC109
            return QuickReadableStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

        def get_extra_info(self, info: str) -> Any:
            if info == "is_readable" and self._socket is not None:
                return is_socket_readable(self._socket)
            return self._inner.get_extra_info(info)

    return GuardedBackend(inner)


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport with the SSRF check at connect time (see the module docstring), over
    the LIFO keep-alive pool of `llm.pool`, the HTTP/1.1 connections of `llm.h1` and the asyncio
    streams of `llm.netstream` (HTTP/1.1 only, no proxies).

    The pool works on httpx's request and response types and raises httpx's exceptions, so this
    transport hands requests straight through: `httpx.AsyncHTTPTransport` would convert each one
    to httpcore's types and back and map exceptions around the call and every body chunk."""

    def __init__(self, *, verify: Any = True, limits: httpx.Limits | None = None) -> None:
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        self._pool = LifoPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=limits.max_connections or 100,
            max_keepalive_connections=limits.max_keepalive_connections or 20,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=guarded_backend(httpcore, AddressRefused, AsyncioBackend()),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._pool.handle_async_request(request)

    async def aclose(self) -> None:
        await self._pool.aclose()


def upstream_http_client() -> httpx.AsyncClient:
    """The process-wide client for LLM providers: `llm.create_http_client` over GuardedTransport."""
    from llm import create_http_client

    return create_http_client(transport=lambda limits: GuardedTransport(limits=limits))


def guarded_httpx2_client(**kwargs: Any):
    """An `httpx2.AsyncClient` (the MCP SDK's HTTP library) whose connects pass the same check;
    keyword arguments as `mcp.shared._httpx_utils.create_mcp_http_client` (headers, timeout, auth)."""
    import httpcore2
    import httpx2

    transport = httpx2.AsyncHTTPTransport(trust_env=False)
    transport._pool = httpcore2.AsyncConnectionPool(
        ssl_context=httpx2.create_ssl_context(trust_env=False),
        max_connections=100,
        max_keepalive_connections=20,
        keepalive_expiry=5.0,
        network_backend=guarded_backend(httpcore2, httpcore2.ConnectError),
    )
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return httpx2.AsyncClient(transport=transport, trust_env=False, **kwargs)
