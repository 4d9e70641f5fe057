"""Hostile input: header injection, oversized and deeply nested JSON, slowloris-style slow bodies,
huge header counts, invalid UTF-8 in paths and queries. Every answer is a clean 4xx JSON error
(never a 500, never a reflected raw value in a header), and the gateway keeps serving others."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.processes import TEST_TOKEN, start_gateway

AUTH = f"Authorization: Bearer {TEST_TOKEN}\r\n"


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port


def parse_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def raw(url: str, request: bytes, timeout: float = 20.0) -> tuple[int, dict[str, str], bytes]:
    """Send bytes exactly as given; read until the server closes or a full response has arrived."""
    with socket.create_connection(address(url), timeout=timeout) as sock:
        sock.sendall(request)
        return read_response(sock)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = next((int(v) for k, v in (ln.split(b":", 1) for ln in head.split(b"\r\n")[1:] if b":" in ln)
                           if k.strip().lower() == b"content-length"), None)
            if length is not None and len(body) >= length:
                break
    assert data, "no response at all"
    return parse_response(data)


def assert_clean_error(status: int, headers: dict[str, str], body: bytes, allowed=(400, 404, 405, 413, 414, 431)):
    assert status in allowed, (status, body[:300])
    if body and headers.get("content-type", "").startswith("application/json"):
        assert set(json.loads(body)) == {"error"}


def served(url: str) -> bool:
    headers = {"Authorization": f"Bearer {TEST_TOKEN}", "X-GoClaw-User-Id": "ok"}
    return httpx.get(url + "/v1/agents", headers=headers, timeout=10).status_code == 200


# --- slow bodies (slowloris) -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def impatient(database, tmp_path_factory):
    """A gateway that waits at most 1.5 s for a request body (uploads: 15 s)."""
    gw = start_gateway(database.dsn, tmp_path_factory.mktemp("impatient"), GOCLAW_BODY_TIMEOUT_MS="1500")
    yield gw
    assert gw.stop() == 0


def trickle(sock: socket.socket, stop: threading.Event, piece: bytes = b" ", every: float = 0.2) -> None:
    with contextlib.suppress(OSError):
        while not stop.is_set():
            sock.sendall(piece)
            stop.wait(every)


@pytest.mark.parametrize("path", ["/v1/api-keys", "/v1/chat/completions", "/v1/agents"])
def test_a_trickled_body_gets_408_and_the_connection_is_closed(impatient, path):
    sock = socket.create_connection(address(impatient.url), timeout=20)
    stop = threading.Event()
    try:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\n{AUTH}X-GoClaw-User-Id: slow\r\n"
                     "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{".encode())
        threading.Thread(target=trickle, args=(sock, stop), daemon=True).start()
        status, headers, body = read_response(sock)
        assert status == 408 and "error" in json.loads(body)
        assert headers.get("connection") == "close"
        stop.set()
        sock.settimeout(10)
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            assert sock.recv(1024) == b""  # the server hung up
    finally:
        stop.set()
        sock.close()
    assert served(impatient.url)


def test_a_trickled_chunked_body_gets_408(impatient):
    with socket.create_connection(address(impatient.url), timeout=20) as sock:
        stop = threading.Event()
        sock.sendall(f"POST /v1/api-keys HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Type: application/json\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode())
        threading.Thread(target=trickle, args=(sock, stop, b"1\r\n \r\n"), daemon=True).start()
        try:
            status, _, body = read_response(sock)
        finally:
            stop.set()
    assert status == 408 and "error" in json.loads(body)


def test_many_slow_clients_do_not_stop_the_gateway_serving_others(impatient):
    socks, stop = [], threading.Event()
    try:
        for _ in range(40):
            sock = socket.create_connection(address(impatient.url), timeout=20)
            sock.sendall(f"POST /v1/agents HTTP/1.1\r\nHost: x\r\n{AUTH}X-GoClaw-User-Id: slow\r\n"
                         "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n{".encode())
            threading.Thread(target=trickle, args=(sock, stop), daemon=True).start()
            socks.append(sock)
        headers = {"Authorization": f"Bearer {TEST_TOKEN}", "X-GoClaw-User-Id": "ok"}
        with httpx.Client(base_url=impatient.url, headers=headers) as client:
            for _ in range(20):  # while the 40 trickle, ordinary requests are answered
                assert client.get("/v1/agents").status_code == 200
                assert client.post("/v1/api-keys", json={"name": "x", "scopes": []}).status_code == 400
        statuses = [read_response(sock)[0] for sock in socks]
        assert set(statuses) == {408}
    finally:
        stop.set()
        for sock in socks:
            sock.close()
    assert served(impatient.url)


def test_a_slow_but_steady_client_within_the_deadline_is_served(impatient):
    body = json.dumps({"name": "slow but fine", "scopes": ["operator.read"]}).encode()
    with socket.create_connection(address(impatient.url), timeout=20) as sock:
        sock.sendall(f"POST /v1/api-keys HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode())
        for part in (body[:10], body[10:30], body[30:]):
            time.sleep(0.2)
            sock.sendall(part)
        status, _, _ = read_response(sock)
    assert status == 201


@pytest.mark.parametrize("keep_alive_first", [False, True])
def test_a_trickled_request_head_is_dropped(impatient, keep_alive_first):
    with socket.create_connection(address(impatient.url), timeout=20) as sock:
        if keep_alive_first:  # a finished request first: trickled bytes must not just cancel keep-alive
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(sock)[0] == 200
        stop = threading.Event()
        sock.sendall(b"GET /v1/agents HTTP/1.1\r\nHost: x\r\n")
        threading.Thread(target=trickle, args=(sock, stop, b"X-A: b\r\n"), daemon=True).start()
        try:
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1024) == b""  # the server hung up on the endless head
        finally:
            stop.set()
    assert served(impatient.url)


def test_slow_headers_do_not_stop_the_gateway_serving_others(impatient):
    socks = []
    try:
        for n in range(40):
            sock = socket.create_connection(address(impatient.url), timeout=20)
            sock.sendall(f"GET /v1/agents HTTP/1.1\r\nHost: x\r\nX-Slow-{n}: ".encode())  # never finished
            socks.append(sock)
        for _ in range(10):
            assert served(impatient.url)
    finally:
        for sock in socks:
            sock.close()


# --- header injection ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [b"alice\rSet-Cookie: a=b", b"alice\nSet-Cookie: a=b", b"alice\x00", b"al\x7fice"])
def test_control_characters_in_header_values_are_refused(gateway, value):
    status, headers, body = raw(gateway.url, b"GET /v1/agents HTTP/1.1\r\nHost: x\r\n" + AUTH.encode()
                                + b"X-GoClaw-User-Id: " + value + b"\r\n\r\n")
    if status == 200:  # a bare LF ends the header line (h11 is lenient): two request headers, nothing echoed
        assert value.startswith(b"alice\n")
    else:
        assert_clean_error(status, headers, body, allowed=(400,))
    assert "set-cookie" not in headers


@pytest.mark.parametrize("value", ["a\tb", "x" * 256])
def test_odd_user_ids_are_a_clean_400(admin, value):
    response = admin.get("/v1/agents", headers={"X-GoClaw-User-Id": value})
    assert response.status_code == 400 and set(response.json()) == {"error"}


def multipart(filename: bytes, content: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"".encode() + filename
            + b"\"\r\nContent-Type: text/plain\r\n\r\n" + content + f"\r\n--{boundary}--\r\n".encode())
    return body, boundary


@pytest.mark.parametrize("filename", [
    b"evil.txt\r\nSet-Cookie: pwned=1", b"a\";x=\"y.txt", b"..\\..\\boot.ini", b"../../etc/passwd",
    "r\u00e9sum\u00e9 \U0001f600.txt".encode(), "cv\u202etxt.exe".encode(), b"%0d%0aSet-Cookie:%20x=1.txt",
    b"n\x00ul.txt", b"x" * 5000 + b".txt", b"\xff\xfe.txt",
])
def test_media_filenames_never_reach_a_header_raw(gateway, filename):
    body, boundary = multipart(filename, b"hello world")
    request = (f"POST /v1/media/upload HTTP/1.1\r\nHost: x\r\n{AUTH}X-GoClaw-User-Id: hdr\r\n"
               f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n"
               ).encode() + body
    status, _, answer = raw(gateway.url, request)
    assert status in (200, 400), answer[:300]
    if status != 200:
        return
    media = json.loads(answer)
    served_back = httpx.get(gateway.url + media["path"], headers={"Authorization": f"Bearer {TEST_TOKEN}",
                                                                  "X-GoClaw-User-Id": "hdr"})
    assert served_back.status_code == 200 and served_back.content == b"hello world"
    disposition = served_back.headers["content-disposition"]
    assert "\r" not in disposition and "\n" not in disposition and disposition.isascii()
    assert "set-cookie" not in served_back.headers
    assert disposition.count('"') == 2  # the quoted fallback cannot be broken out of
    assert served_back.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/v1/<script>alert(1)</script>", "/v1/agents/%3Cimg%20src=x%3E/wake",
                                  "/v1/%0d%0aSet-Cookie:%20x=1"])
def test_reflected_paths_stay_inside_json_bodies(gateway, path):
    status, headers, body = raw(gateway.url, f"GET {path} HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n".encode())
    assert status in (400, 404, 405)
    assert headers["content-type"].startswith("application/json") and "set-cookie" not in headers
    assert set(json.loads(body)) == {"error"}


# --- oversized and deeply nested JSON ------------------------------------------------------------


JSON_ENDPOINTS = [
    ("POST", "/v1/agents"), ("POST", "/v1/providers"), ("POST", "/v1/chat/completions"),
    ("POST", "/v1/channels/instances"), ("POST", "/v1/mcp/servers"), ("POST", "/v1/tools/custom"),
    ("PUT", f"/v1/agents/{uuid.uuid4()}"), ("POST", f"/v1/agents/{uuid.uuid4()}/kg/entities"),
    ("PUT", f"/v1/agents/{uuid.uuid4()}/memory/documents/x.md"), ("POST", "/v1/api-keys"),
]


@pytest.mark.parametrize(("method", "path"), JSON_ENDPOINTS)
def test_oversized_json_is_413_by_length_and_by_stream(admin, method, path):
    big = b'{"name": "' + b"x" * (2 << 20) + b'"}'
    declared = admin.request(method, path, content=big, headers={"Content-Type": "application/json",
                                                                 "X-GoClaw-User-Id": "big"})
    assert declared.status_code == 413, declared.text[:200]

    def chunks():
        for _ in range(40):
            yield b" " * 65536

    streamed = admin.request(method, path, content=chunks(), headers={"Content-Type": "application/json",
                                                                      "X-GoClaw-User-Id": "big"})
    assert streamed.status_code == 413, streamed.text[:200]


def nested(depth: int, leaf: str = "1") -> str:
    return '{"a":' * depth + leaf + "}" * depth


@pytest.mark.parametrize(("method", "path"), JSON_ENDPOINTS)
@pytest.mark.parametrize("document", ["[" * 100_000 + "]" * 100_000, nested(50_000)])
def test_absurdly_deep_json_is_a_clean_400(admin, method, path, document):
    response = admin.request(method, path, content=document.encode(),
                             headers={"Content-Type": "application/json", "X-GoClaw-User-Id": "deep"})
    assert response.status_code in (400, 413), response.text[:200]
    assert set(response.json()) == {"error"}


@pytest.mark.parametrize("depth", [64, 99, 101, 450, 500, 990, 3000])
def test_deep_values_inside_free_form_fields_never_500(admin, depth):
    """Free-form objects (agent configs, KG properties) take up to 100 levels of nesting in all;
    deeper documents are a 400 (MAX_JSON_DEPTH), never a 500 from a recursion somewhere."""
    user = f"deep-{uuid.uuid4().hex[:6]}"
    headers = {"X-GoClaw-User-Id": user}
    value = json.loads(nested(depth, '"leaf"')) if depth < 900 else None
    raw_value = nested(depth, '"leaf"')
    name = f"deep-{uuid.uuid4().hex[:8]}"
    body = f'{{"name": "{name}", "other_config": {raw_value}}}'.encode()
    created = admin.post("/v1/agents", content=body, headers={**headers, "Content-Type": "application/json"})
    assert created.status_code == (201 if depth <= 99 else 400), created.text[:200]
    if created.status_code == 201:
        agent = created.json()
        if value is not None:
            assert agent["other_config"] == value
        props = f'{{"name": "E", "entity_type": "thing", "properties": {raw_value}}}'.encode()
        entity = admin.post(f"/v1/agents/{agent['id']}/kg/entities", content=props,
                            headers={**headers, "Content-Type": "application/json"})
        assert entity.status_code in (200, 201, 400), entity.text[:200]
        update = f'{{"memory_config": {raw_value}}}'.encode()
        changed = admin.put(f"/v1/agents/{agent['id']}", content=update,
                            headers={**headers, "Content-Type": "application/json"})
        assert changed.status_code in (200, 400), changed.text[:200]
        assert admin.delete(f"/v1/agents/{agent['id']}", headers=headers).status_code == 200


# --- huge headers ----------------------------------------------------------------------------------


def head(extra: bytes) -> bytes:
    return b"GET /v1/agents HTTP/1.1\r\nHost: x\r\n" + AUTH.encode() + b"X-GoClaw-User-Id: h\r\n" + extra + b"\r\n"


@pytest.mark.parametrize(("count", "expected"), [(100, 200), (5000, 200), (100_000, 431)])
def test_huge_header_counts_are_answered_cleanly_and_the_gateway_goes_on(gateway, count, expected):
    """A head is bounded (64 KiB beyond what one read brings): 100,000 headers are a 431 JSON error
    and a hang-up, before the application sees anything."""
    status, _, body = raw(gateway.url, head(b"".join(b"X-H-%d: v\r\n" % n for n in range(count))))
    assert status == expected, body[:200]
    assert served(gateway.url)


def test_a_header_that_fits_one_read_is_served(gateway):
    status, _, body = raw(gateway.url, head(b"X-Big: " + b"a" * 100_000 + b"\r\n"))
    assert status in (200, 431), body[:200]
    assert served(gateway.url)


def test_an_endless_header_gets_431_and_a_hang_up(gateway):
    """The gateway answers and closes while the client is still sending: the client sees the 431,
    or (when the close overtakes it) a reset — never a served request, and the gateway goes on."""
    with socket.create_connection(address(gateway.url), timeout=20) as sock:
        try:
            sock.sendall(head(b"X-Big: " + b"a" * 2_000_000 + b"\r\n"))
            status, headers, body = read_response(sock)
        except (ConnectionResetError, BrokenPipeError):
            status = None
    if status is not None:
        assert status == 431 and headers.get("connection") == "close" and set(json.loads(body)) == {"error"}
    assert served(gateway.url)


# --- invalid UTF-8 in paths and queries ------------------------------------------------------------


@pytest.mark.parametrize("target", [
    b"/v1/agents/%ff%fe", b"/v1/agents/%C0%AE%C0%AE", b"/v1/agents/%ed%a0%80", b"/v1/agents/\xff\xfe",
    b"/v1/channels/instances?search=%ff", b"/v1/contacts?search=%C0%AF", b"/v1/tools/custom?search=%ed%a0%80",
    b"/v1/activity?actor_id=%80", b"/v1/traces?session_key=\xc3\x28", b"/v1/storage/files?path=%ff",
    b"/v1/agents/%ff/memory/documents/%fe.md", b"/v1/media/%ff%00", b"/v1/skills/%ff", b"/v1/mcp/servers/%ff",
    b"/v1/agents?limit=%ff", b"/v1/%ff%ff", b"/health?%ff=%fe",
])
def test_invalid_utf8_in_paths_and_queries_is_never_a_500(gateway, target):
    status, headers, body = raw(gateway.url, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n" + AUTH.encode()
                                + b"X-GoClaw-User-Id: utf\r\n\r\n")
    assert status < 500, (target, status, body[:300])
    if status >= 400 and max(target) >= 0x80:  # raw bytes in the request line: uvicorn's own 400
        assert status == 400
    elif status >= 400:
        assert headers["content-type"].startswith("application/json") and set(json.loads(body)) == {"error"}


def test_invalid_utf8_in_a_json_body_is_a_clean_400(admin):
    for body in (b'{"name": "\xff\xfe"}', b'{"name": "\xed\xa0\x80"}', b'{"name": "\xc0\xae"}'):
        response = admin.post("/v1/agents", content=body,
                              headers={"Content-Type": "application/json", "X-GoClaw-User-Id": "utf"})
        assert response.status_code == 400, response.text[:200]


# --- WebSocket frames --------------------------------------------------------------------------------


@pytest.mark.parametrize("frame", ["[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000,
                                   b"\xff\xfe{", '{"type": "req", "id": "1", "method": "health", "params": '
                                   + '{"a":' * 5_000 + "1" + "}" * 5_000 + "}"])
def test_hostile_websocket_frames_get_an_error_and_the_socket_stays_open(gateway, frame):
    from websockets.sync.client import connect as ws_connect

    with ws_connect(gateway.ws_url, open_timeout=10, max_size=None) as ws:
        hello = {"type": "req", "id": "c", "method": "connect", "params": {"token": TEST_TOKEN}}
        ws.send(json.dumps(hello))
        assert json.loads(ws.recv(timeout=10))["ok"] is True
        ws.send(frame)
        answer = json.loads(ws.recv(timeout=10))
        assert answer["type"] == "res" and answer["ok"] is False and answer["error"]["code"] == "INVALID_REQUEST"
        ws.send(json.dumps({"type": "req", "id": "h", "method": "health", "params": {}}))
        assert json.loads(ws.recv(timeout=10))["ok"] is True
