"""SSRF: provider `api_base`, `web_fetch` URLs and MCP server URLs never reach loopback, private,
link-local/metadata, CGNAT, multicast or reserved addresses, whatever the notation (IPv6, IPv4-mapped,
NAT64, 6to4, decimal/hex/short IPv4, userinfo tricks) — and DNS rebinding does not help: the
connect-time check in `gateway.netguard` resolves once more and connects to exactly the address it
checked (TLS SNI, certificate check and Host header still use the name).

The transport is our own code, so the rebinding cases run it in-process with a scripted resolver;
the gateway cases run real processes: one with the strict default (`GOCLAW_ALLOW_PRIVATE_NETWORKS=""`)
and one whose resolver answers a public address first and loopback afterwards (a `sitecustomize`
on its PYTHONPATH: no /etc/hosts, no DNS server)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import ssl
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pytest

from gateway import netguard
from gateway.errors import ApiError
from tests.support.client import ApiClient
from tests.support.processes import TEST_TOKEN, start_gateway

PUBLIC = "93.184.216.34"

REFUSED_URLS = [
    "http://127.0.0.1/",
    "http://127.0.0.1:5432/",
    "http://localhost:8080/",
    "http://127.1/",
    "http://2130706433/",  # decimal 127.0.0.1
    "http://0x7f000001/",  # hex
    "http://0177.0.0.1/",  # octal
    "http://0.0.0.0/",
    "http://10.0.0.7/v1",
    "http://172.16.3.4/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",  # CGNAT
    "http://198.18.0.1/",  # benchmarking
    "http://224.0.0.1/",  # multicast
    "http://255.255.255.255/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",  # AWS metadata over IPv6
    "http://[::1]/",
    "http://[::]/",
    "http://[fc00::1]/",
    "http://[fe80::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:a9fe:a9fe]/",  # IPv4-mapped 169.254.169.254
    "http://[0:0:0:0:0:ffff:7f00:1]/",
    "http://[::ffff:10.0.0.1]/",
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of the metadata address
    "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    "http://evil@127.0.0.1/",
    "http://user:pass@169.254.169.254/",
    "http://127.0.0.1#@example.com/",
    "http://127.0.0.1:80\\@example.com/",
    "https://127.0.0.1:443/",
]
BAD_SCHEMES = ["file:///etc/passwd", "gopher://127.0.0.1:6379/_INFO", "ftp://example.com/", "dict://127.0.0.1:11211/",
               "http:///nohost", "javascript:alert(1)"]


@pytest.fixture
def strict(monkeypatch):
    """This process's guard with the strict default, and DNS restored afterwards."""
    monkeypatch.setenv("GOCLAW_ALLOW_PRIVATE_NETWORKS", "")
    monkeypatch.setattr(netguard, "resolve", netguard._system_resolve)


# --- check_url: the early check ------------------------------------------------------------------


@pytest.mark.parametrize("url", REFUSED_URLS + BAD_SCHEMES)
def test_check_url_refuses_every_private_form(strict, url):
    with pytest.raises(ApiError) as refused:
        asyncio.run(netguard.check_url(url, "api_base"))
    assert refused.value.status == 400


@pytest.mark.parametrize("url", ["http://93.184.216.34/", "https://93.184.216.34:8443/v1",
                                 "http://[2606:2800:220:1:248:1893:25c8:1946]/"])
def test_public_addresses_pass(strict, url):
    asyncio.run(netguard.check_url(url))


def test_the_allow_list_takes_networks_and_host_names(monkeypatch):
    monkeypatch.setenv("GOCLAW_ALLOW_PRIVATE_NETWORKS", "10.0.0.0/8, localhost")
    asyncio.run(netguard.check_url("http://10.1.2.3/"))
    asyncio.run(netguard.check_url("http://[::ffff:10.1.2.3]/"))  # the same host, mapped
    asyncio.run(netguard.check_url("http://localhost:9/"))
    with pytest.raises(ApiError):
        asyncio.run(netguard.check_url("http://127.0.0.1/"))  # the name is allowed, not its address
    with pytest.raises(ApiError):
        asyncio.run(netguard.check_url("http://192.168.0.1/"))


def test_a_name_with_any_private_address_is_refused(strict, monkeypatch):
    async def split_horizon(host: str, port: int) -> list[str]:
        return [PUBLIC, "10.0.0.5"]

    monkeypatch.setattr(netguard, "resolve", split_horizon)
    with pytest.raises(ApiError):
        asyncio.run(netguard.check_url("http://mixed.test/"))


def test_is_public_agrees_with_the_embedded_ipv4_address():
    for mapped, plain in (("::ffff:8.8.8.8", True), ("::ffff:127.0.0.1", False), ("64:ff9b::808:808", True),
                          ("64:ff9b::a00:1", False)):
        assert netguard.is_public(ipaddress.ip_address(mapped)) is plain


# --- the transport: the authoritative check at connect time --------------------------------------


class Hits:
    """A local HTTP server (in this process) that counts requests and echoes the Host header."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> Hits:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=ssl_context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            writer.close()
            return
        host = next((line.split(":", 1)[1].strip() for line in head if line.lower().startswith("host:")), "")
        self.requests.append((head[0], host))
        body = json.dumps({"host": host}).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body))
        await writer.drain()
        writer.close()

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


def rebinding(first: str, then: str):
    """A resolver that answers `first` once, then `then` (what a rebinding DNS server does)."""
    calls: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return [first if len(calls) == 1 else then]

    resolve.calls = calls
    return resolve


def test_dns_rebinding_between_check_and_connect_is_refused(strict, monkeypatch):
    async def main():
        hits = await Hits().start()
        resolver = rebinding(PUBLIC, "127.0.0.1")
        monkeypatch.setattr(netguard, "resolve", resolver)
        url = f"http://rebind.test:{hits.port}/secret"
        try:
            await netguard.check_url(url)  # the name looks public when it is checked ...
            async with httpx.AsyncClient(transport=netguard.GuardedTransport()) as client:
                with pytest.raises(httpx.TransportError) as refused:
                    await client.get(url)  # ... and points at loopback when the socket opens
            return refused.value, hits.requests, resolver.calls
        finally:
            await hits.stop()

    error, requests, calls = asyncio.run(main())
    assert isinstance(error, netguard.AddressRefused) and "SSRF guard" in str(error)
    assert requests == [] and calls == ["rebind.test", "rebind.test"]


@pytest.mark.parametrize("url", [u for u in REFUSED_URLS if "0177" not in u and "\\" not in u])
def test_the_transport_refuses_every_private_form_without_a_prior_check(strict, url):
    async def main():
        async with httpx.AsyncClient(transport=netguard.GuardedTransport()) as client:
            with pytest.raises(httpx.TransportError) as refused:
                await client.get(url)
            return refused.value

    assert "SSRF guard" in str(asyncio.run(main()))


def test_the_socket_goes_to_the_checked_address_and_the_host_header_keeps_the_name(monkeypatch):
    monkeypatch.setenv("GOCLAW_ALLOW_PRIVATE_NETWORKS", "127.0.0.0/8")

    async def main():
        hits = await Hits().start()
        calls: list[str] = []

        async def resolve(host: str, port: int) -> list[str]:
            calls.append(host)
            return ["127.0.0.1"]

        monkeypatch.setattr(netguard, "resolve", resolve)
        try:
            async with httpx.AsyncClient(transport=netguard.GuardedTransport()) as client:
                first = (await client.get(f"http://api.rebind.test:{hits.port}/a")).json()
                second = (await client.get(f"http://api.rebind.test:{hits.port}/b")).json()
            return first, second, calls, hits.requests
        finally:
            await hits.stop()

    first, second, calls, requests = asyncio.run(main())
    assert first["host"].startswith("api.rebind.test:") and second == first
    assert [r[0] for r in requests] == ["GET /a HTTP/1.1", "GET /b HTTP/1.1"]
    assert calls == ["api.rebind.test"] * 2  # one lookup per connection, none by the socket layer


def _self_signed(host: str) -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def test_tls_uses_the_name_for_sni_and_certificate_checks(monkeypatch, tmp_path):
    monkeypatch.setenv("GOCLAW_ALLOW_PRIVATE_NETWORKS", "127.0.0.0/8")
    cert_pem, key_pem = _self_signed("secure.rebind.test")
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    seen_sni: list[str | None] = []
    server_ctx.sni_callback = lambda sock, name, ctx: seen_sni.append(name)
    client_ctx = ssl.create_default_context(cadata=cert_pem.decode())

    async def always_loopback(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    monkeypatch.setattr(netguard, "resolve", always_loopback)

    async def main():
        hits = await Hits().start(server_ctx)
        try:
            async with httpx.AsyncClient(transport=netguard.GuardedTransport(verify=client_ctx)) as client:
                good = (await client.get(f"https://secure.rebind.test:{hits.port}/")).json()
                with pytest.raises(httpx.ConnectError):  # a name the certificate does not cover
                    await client.get(f"https://other.rebind.test:{hits.port}/")
            return good
        finally:
            await hits.stop()

    good = asyncio.run(main())
    assert good["host"].startswith("secure.rebind.test:")
    assert seen_sni[0] == "secure.rebind.test"


def test_redirects_to_private_addresses_are_refused_at_connect(monkeypatch):
    """A client that follows redirects (as the MCP SDK does within an origin) cannot be bounced inward."""
    monkeypatch.setenv("GOCLAW_ALLOW_PRIVATE_NETWORKS", "public.rebind.test")

    async def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    monkeypatch.setattr(netguard, "resolve", resolve)

    async def main():
        target = await Hits().start()

        async def bounce(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(f"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{target.port}/inner\r\n"
                         "Content-Length: 0\r\n\r\n".encode())
            await writer.drain()
            writer.close()

        front = await asyncio.start_server(bounce, "127.0.0.1", 0)
        port = front.sockets[0].getsockname()[1]
        try:
            async with httpx.AsyncClient(transport=netguard.GuardedTransport(), follow_redirects=True) as client:
                with pytest.raises(httpx.TransportError) as refused:
                    await client.get(f"http://public.rebind.test:{port}/")
            return refused.value, target.requests
        finally:
            front.close()
            await target.stop()

    error, inner = asyncio.run(main())
    assert "SSRF guard" in str(error) and inner == []


def test_mcp_clients_get_the_same_connect_time_check(strict, monkeypatch):
    import httpx2

    async def main():
        hits = await Hits().start()
        resolver = rebinding(PUBLIC, "127.0.0.1")
        monkeypatch.setattr(netguard, "resolve", resolver)
        url = f"http://mcp.rebind.test:{hits.port}/mcp"
        try:
            await netguard.check_url(url)
            async with netguard.guarded_httpx2_client(headers={"Authorization": "Bearer mcp-secret"}) as client:
                with pytest.raises(httpx2.TransportError) as refused:
                    await client.post(url, json={})
            return refused.value, hits.requests
        finally:
            await hits.stop()

    error, requests = asyncio.run(main())
    assert "SSRF guard" in str(error) and requests == []


def test_web_fetch_refuses_a_rebinding_name_through_the_shared_client(strict, monkeypatch):
    from agent.builtin import BUILTINS, web_fetch
    from gateway import state

    async def main():
        hits = await Hits().start()
        monkeypatch.setattr(netguard, "resolve", rebinding(PUBLIC, "127.0.0.1"))
        client = httpx.AsyncClient(transport=netguard.GuardedTransport())
        monkeypatch.setattr(state, "http", client)
        try:
            settings = BUILTINS["web_fetch"].effective_settings(None)
            return await web_fetch({"url": f"http://www.rebind.test:{hits.port}/"}, None, settings), hits.requests
        finally:
            await client.aclose()
            await hits.stop()

    result, requests = asyncio.run(main())
    assert result.is_error and "SSRF guard" in result.content and requests == []


# --- real gateways ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def strict_gateway(database, openapi, tmp_path_factory):
    gw = start_gateway(database.dsn, tmp_path_factory.mktemp("strict"), GOCLAW_ALLOW_PRIVATE_NETWORKS="")
    client = ApiClient(gw.url, openapi, token=TEST_TOKEN).as_user("ssrf-tester")
    yield gw, client
    client.close()
    assert gw.stop() == 0


GATEWAY_URLS = ["http://127.0.0.1:9/v1", "http://localhost/v1", "http://2130706433/", "http://0x7f000001/",
                "http://[::ffff:127.0.0.1]/", "http://[::ffff:a9fe:a9fe]/", "http://169.254.169.254/",
                "http://[fd00:ec2::254]/", "http://[::1]:8080/", "http://[fd12:3456::1]/", "http://0.0.0.0/",
                "http://evil@127.0.0.1/", "http://10.1.2.3/", "http://[64:ff9b::a9fe:a9fe]/"]


def test_provider_api_base_is_refused_for_every_private_form(strict_gateway):
    _, client = strict_gateway
    created = client.post("/v1/providers", json={"name": f"ok-{uuid.uuid4().hex[:8]}", "provider_type": "openai_compat",
                                                 "api_base": f"http://{PUBLIC}/v1"})
    assert created.status_code == 201, created.text
    for url in GATEWAY_URLS:
        body = {"name": f"p-{uuid.uuid4().hex[:8]}", "provider_type": "openai_compat", "api_base": url}
        refused = client.post("/v1/providers", json=body)
        assert refused.status_code == 400, (url, refused.text)
        moved = client.put(f"/v1/providers/{created.json()['id']}", json={"api_base": url})
        assert moved.status_code == 400, (url, moved.text)
    assert client.get(f"/v1/providers/{created.json()['id']}").json()["api_base"] == f"http://{PUBLIC}/v1"
    client.delete(f"/v1/providers/{created.json()['id']}")


def test_mcp_server_urls_are_refused_for_every_private_form(strict_gateway):
    _, client = strict_gateway
    names = []
    for transport in ("streamable-http", "sse"):
        for url in GATEWAY_URLS:
            names.append(f"m{uuid.uuid4().hex[:8]}")
            response = client.post("/v1/mcp/servers", json={"name": names[-1], "transport": transport, "url": url})
            assert response.status_code in (400, 403), (url, response.text)
    assert not {s["name"] for s in client.get("/v1/mcp/servers").json()["servers"]} & set(names)


class Recorder(BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self):
        Recorder.hits.append(self.path)
        body = b"<html><title>inner</title><body>internal secret page</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


SITECUSTOMIZE = '''
import socket
import sys

sys.modules["uvloop"] = None  # uvicorn falls back to asyncio, whose resolver calls socket.getaddrinfo
_real = socket.getaddrinfo
_seen = {"n": 0}

def _rebinding(host, port, *args, **kwargs):
    if host in ("rebind.test", b"rebind.test"):
        _seen["n"] += 1  # public the first time (the check), loopback from then on (the connect)
        return _real("93.184.216.34" if _seen["n"] == 1 else "127.0.0.1", port, *args, **kwargs)
    return _real(host, port, *args, **kwargs)

socket.getaddrinfo = _rebinding
'''


def test_a_gateway_agent_cannot_be_rebound_to_loopback_through_web_fetch(database, openapi, llm_stub, tmp_path):
    """End to end: the agent calls web_fetch on a name that the gateway's resolver answers with a
    public address when checked and with 127.0.0.1 when connecting; the internal page is never hit,
    while the same page fetched by an allowed name is (the control)."""
    (tmp_path / "hooks").mkdir()
    (tmp_path / "hooks" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    stub_port = llm_stub.url.rsplit(":", 1)[1]
    gw = start_gateway(database.dsn, tmp_path / "gw", GOCLAW_ALLOW_PRIVATE_NETWORKS="localhost",
                       PYTHONPATH=str(tmp_path / "hooks"))
    client = ApiClient(gw.url, openapi, token=TEST_TOKEN).as_user("rebind-user")
    try:
        suffix = uuid.uuid4().hex[:8]
        provider = client.post("/v1/providers", json={"name": f"rb-{suffix}", "provider_type": "openai_compat",
                                                      "api_base": f"http://localhost:{stub_port}/v1",
                                                      "api_key": "sk-rebind"})
        assert provider.status_code == 201, provider.text
        agent = client.post("/v1/agents", json={"name": f"rb-{suffix}", "provider": f"rb-{suffix}", "model": "m",
                                                "tools_config": {"allow": ["web_fetch"]}})
        assert agent.status_code == 201, agent.text

        def fetch(url: str) -> str:
            llm_stub.reset()
            llm_stub.script([{"tool_calls": [{"name": "web_fetch", "arguments": {"url": url}}]}, {"text": "done"}])
            reply = client.post("/v1/chat/completions", json={
                "model": f"goclaw:rb-{suffix}", "messages": [{"role": "user", "content": "fetch it"}]})
            assert reply.status_code == 200, reply.text
            followup = llm_stub.requests()[-1]["body"]["messages"]
            return next(m["content"] for m in followup if m["role"] == "tool")

        Recorder.hits = []
        refused = fetch(f"http://rebind.test:{port}/internal")
        assert "SSRF guard" in refused and "internal secret page" not in refused
        assert Recorder.hits == []
        allowed = fetch(f"http://localhost:{port}/internal")  # the control: the page is reachable
        assert "internal secret page" in allowed and Recorder.hits == ["/internal"]
    finally:
        client.close()
        server.shutdown()
        assert gw.stop() == 0
