"""SSRF guard for every outbound URL we are told to call (provider bases, web_fetch, MCP).

Refuses loopback, private, link-local (cloud metadata), multicast and reserved addresses —
including IPv4-mapped IPv6 forms — unless the operator allows them with
GOCLAW_ALLOW_PRIVATE_NETWORKS (`1` for all, or a comma list of CIDRs/hosts)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from urllib.parse import urlsplit

from gateway.errors import ApiError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


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


def is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not (
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
    if allow_all or host.lower() in hosts:
        return True
    return is_public(address) or any(address in net for net in networks)


async def check_url(url: str, what: str = "URL") -> None:
    """Raise ApiError(400) unless `url` is http(s) and every address its host resolves to is allowed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiError(400, "error.invalid_request", f"{what} must be an http(s) URL")
    host = parts.hostname
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ApiError(400, "error.invalid_request", f"{what} host does not resolve: {host}") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if not _allowed(address, host):
            raise ApiError(400, "error.invalid_request", f"{what} points to a private or reserved address")
