"""Workspace listing (tenancy, depth, cap, the traversal matrix) and media (upload attack matrix,
content sniffing, tenancy, ETag/304, ranges, ?token=, the size limit)."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import httpx
import pytest

from domain.workspace import safe_name
from tests.support.processes import TEST_TOKEN, start_gateway

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(64))
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x01" * 40
GIF_POLYGLOT = b"GIF89a/*\x01\x00\x01\x00*/=1;<script>alert(document.cookie)</script>"
PDF = b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n%%EOF\n"
EXE = b"MZ\x90\x00\x03\x00\x00\x00" + b"\x00" * 56 + b"This program cannot be run in DOS mode"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def data_dir(gateway) -> Path:
    return gateway.log_path.parent / "data"


@pytest.fixture
def writer_key(make_key):
    key, _ = make_key("operator.write")
    return key


@pytest.fixture
def tenants(client_for, writer_key):
    return client_for(writer_key, user=unique("alice")), client_for(writer_key, user=unique("bob"))


def home(gateway, client) -> Path:
    """The tenant's workspace directory, as the server computes it."""
    path = data_dir(gateway) / "workspace" / "users" / safe_name(client.headers["X-GoClaw-User-Id"])
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- storage -----------------------------------------------------------------------------------


def test_listing_shows_the_callers_own_files(gateway, tenants):
    alice, _ = tenants
    root = home(gateway, alice)
    (root / "notes.txt").write_text("hello")
    (root / "docs" / "deep" / "deeper").mkdir(parents=True)
    (root / "docs" / "a.md").write_text("# a")
    (root / "docs" / "deep" / "b.md").write_text("b")
    (root / "docs" / "deep" / "deeper" / "c.md").write_text("c")
    (root / ".DS_Store").write_bytes(b"junk")
    response = alice.get("/v1/storage/files")
    assert response.status_code == 200, response.text
    listing = response.json()
    assert listing["baseDir"] == f"workspace/users/{root.name}"
    assert listing["path"] == "" and listing["depth"] == 1 and listing["truncated"] is False
    assert [(f["name"], f["is_dir"]) for f in listing["files"]] == [("docs", True), ("notes.txt", False)]
    notes = listing["files"][1]
    assert notes["path"] == "notes.txt" and notes["size"] == 5 and notes["mtime"]
    assert str(data_dir(gateway)) not in response.text and "/tmp" not in response.text

    def paths(**params):
        return [f["path"] for f in alice.get("/v1/storage/files", params=params).json()["files"]]

    assert paths(path="docs") == ["docs/a.md", "docs/deep"]
    assert paths(path="docs", depth=2) == ["docs/a.md", "docs/deep", "docs/deep/b.md", "docs/deep/deeper"]
    assert "docs/deep/deeper/c.md" in paths(path="docs", depth=3)
    assert "docs/deep/deeper/c.md" not in paths(depth=3)  # four levels below the base
    assert paths(path="./docs/") == paths(path="docs")


def test_tenants_are_confined_and_admins_see_the_whole_workspace(gateway, tenants, admin):
    alice, bob = tenants
    (home(gateway, alice) / "alice-secret.txt").write_text("mine")
    home(gateway, bob)
    bob_files = bob.get("/v1/storage/files", params={"depth": 3}).json()["files"]
    assert all("alice-secret" not in f["path"] for f in bob_files)
    admin_view = admin.get("/v1/storage/files", params={"path": f"users/{home(gateway, alice).name}"}).json()
    assert admin_view["baseDir"] == "workspace"
    assert [f["name"] for f in admin_view["files"]] == ["alice-secret.txt"]


def test_a_new_tenant_has_an_empty_listing(client_for, writer_key):
    fresh = client_for(writer_key, user=unique("newcomer"))
    listing = fresh.get("/v1/storage/files").json()
    assert listing["files"] == []


TRAVERSALS = [
    "..",
    "../",
    "../../etc",
    "docs/../..",
    "docs/../../..",
    "/etc",
    "//etc",
    "%2e%2e",
    "%2e%2e%2fetc",
    "..%2f..%2fetc",
    "%252e%252e",
    "docs\\..\\..",
    "..\\..",
    "a\tb",
    "....//....//etc",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_attempts_are_400(gateway, tenants, path):
    alice, _ = tenants
    (home(gateway, alice) / "docs").mkdir(exist_ok=True)
    response = alice.get("/v1/storage/files", params={"path": path})
    assert response.status_code == 400, response.text
    assert "passwd" not in response.text and "/etc" not in response.text.replace(path, "")


@pytest.mark.parametrize("raw_query", ["path=%2e%2e", "path=%2e%2e%2f%2e%2e", "path=..%2F..%2Fetc", "path=%2Fetc"])
def test_encoded_traversal_in_the_raw_query_is_400(gateway, tenants, raw_query):
    alice, _ = tenants
    home(gateway, alice)
    response = alice.get(f"/v1/storage/files?{raw_query}")
    assert response.status_code == 400


def test_nul_in_a_path_never_escapes(gateway, tenants):
    alice, _ = tenants
    home(gateway, alice)
    response = alice.get("/v1/storage/files?path=..%00")
    assert response.status_code in (400, 404)
    response = alice.get("/v1/storage/files?path=docs%00/../../..")
    assert response.status_code == 400


def test_symlinks_out_of_the_workspace_are_refused_and_never_listed(gateway, tenants, tmp_path):
    alice, _ = tenants
    root = home(gateway, alice)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret")
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "etc-link").symlink_to("/etc")
    (root / "inside").mkdir()
    (root / "inside-link").symlink_to(root / "inside")
    for path in ("escape", "escape/", "etc-link", "inside/../escape"):
        response = alice.get("/v1/storage/files", params={"path": path})
        assert response.status_code == 400, (path, response.text)
        assert "secret" not in response.text
    names = [f["name"] for f in alice.get("/v1/storage/files", params={"depth": 3}).json()["files"]]
    assert "escape" not in names and "etc-link" not in names and "inside-link" not in names
    assert "inside" in names
    assert alice.get("/v1/storage/files", params={"path": "inside-link"}).status_code == 200


def test_missing_directories_files_and_bad_depths(gateway, tenants):
    alice, _ = tenants
    (home(gateway, alice) / "file.txt").write_text("x")
    assert alice.get("/v1/storage/files", params={"path": "nope"}).status_code == 404
    assert alice.get("/v1/storage/files", params={"path": "x" * 300}).status_code == 404
    assert alice.get("/v1/storage/files", params={"path": "file.txt"}).status_code == 400
    for depth in (0, 4, "deep"):
        assert alice.get("/v1/storage/files", params={"depth": depth}).status_code == 400


def test_listing_is_capped(gateway, client_for, writer_key):
    crowded = client_for(writer_key, user=unique("crowded"))
    root = home(gateway, crowded) / "many"
    root.mkdir()
    for i in range(1005):
        (root / f"f{i:04d}").touch()
    listing = crowded.get("/v1/storage/files", params={"path": "many"}).json()
    assert len(listing["files"]) == 1000 and listing["truncated"] is True


def test_storage_needs_credentials(client_for):
    assert client_for().get("/v1/storage/files").status_code == 401


# --- media upload ------------------------------------------------------------------------------


def upload(client, content: bytes, filename: str = "file.bin", content_type: str = "application/octet-stream"):
    return client.post("/v1/media/upload", files={"file": (filename, content, content_type)})


def raw_multipart(client, disposition: bytes, content: bytes):
    boundary = b"----goclawtest" + uuid.uuid4().hex.encode()
    body = (
        b"--" + boundary + b"\r\nContent-Disposition: form-data; " + disposition + b"\r\n"
        b"Content-Type: application/octet-stream\r\n\r\n" + content + b"\r\n--" + boundary + b"--\r\n"
    )
    return client.post(
        "/v1/media/upload", content=body, headers={"Content-Type": "multipart/form-data; boundary=" + boundary.decode()}
    )


def test_upload_stores_the_file_and_serves_it_back(tenants):
    alice, _ = tenants
    response = upload(alice, PNG, "photo.png", "image/png")
    assert response.status_code == 200, response.text
    stored = response.json()
    assert stored["mime_type"] == "image/png"
    assert stored["size"] == len(PNG)
    assert stored["sha256"] == hashlib.sha256(PNG).hexdigest()
    assert stored["filename"] == "photo.png"
    assert stored["path"] == f"/v1/media/{stored['id']}"
    assert uuid.UUID(stored["id"]).version == 4
    served = alice.get(stored["path"])
    assert served.status_code == 200
    assert served.content == PNG
    assert served.headers["content-type"] == "image/png"
    assert served.headers["etag"] == f'"{stored["sha256"]}"'
    assert served.headers["cache-control"].startswith("private, max-age=")
    assert served.headers["x-content-type-options"] == "nosniff"
    assert served.headers["content-disposition"] == "inline; filename=\"photo.png\"; filename*=UTF-8''photo.png"
    assert served.headers["last-modified"].endswith("GMT")
    assert served.headers["accept-ranges"] == "bytes"


def test_media_is_stored_by_id_under_the_tenant_not_by_client_name(gateway, tenants):
    alice, _ = tenants
    stored = upload(alice, PNG, "../../../../etc/cron.d/evil.png").json()
    assert stored["filename"] == "evil.png"
    owner_dir = data_dir(gateway) / "media" / safe_name(alice.headers["X-GoClaw-User-Id"])
    assert (owner_dir / stored["id"]).read_bytes() == PNG
    assert not (data_dir(gateway) / "etc").exists()


@pytest.mark.parametrize(
    ("content", "filename", "client_type", "mime", "disposition"),
    [
        (PNG, "x.png.exe", "application/x-msdownload", "image/png", "inline"),
        (EXE, "x.png", "image/png", "application/octet-stream", "attachment"),
        (EXE, "setup.exe.png", "image/png", "application/octet-stream", "attachment"),
        (JPEG, "cat.gif", "image/gif", "image/jpeg", "inline"),
        (GIF_POLYGLOT, "poly.gif", "image/gif", "image/gif", "inline"),
        (PDF, "doc.bin", "application/octet-stream", "application/pdf", "inline"),
        (b"<html><script>alert(1)</script></html>", "page.html", "text/html", "text/plain", "attachment"),
        (b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', "i.svg", "image/svg+xml", "text/plain",
         "attachment"),
        (b'{"ok": true, "n": [1, 2]}', "data.json", "text/plain", "application/json", "attachment"),
        (b"{not json at all", "data.json", "application/json", "text/plain", "attachment"),
        ("héllo wörld\n".encode(), "notes.txt", "application/octet-stream", "text/plain", "attachment"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\x00" * 32, "a.mp3", "audio/mpeg", "audio/mpeg", "inline"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "a.wav", "audio/wav", "audio/wav", "inline"),
        (b"OggS\x00\x02" + b"\x00" * 30, "a.ogg", "audio/ogg", "audio/ogg", "inline"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "a.webp", "image/webp", "image/webp", "inline"),
        (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00", "v.mp4", "video/mp4", "video/mp4", "inline"),
        (b"PK\x03\x04\x14\x00\x00\x00", "a.zip", "application/zip", "application/zip", "attachment"),
        (b"\x00\x01\x02\x03binary", "blob", "text/plain", "application/octet-stream", "attachment"),
    ],
)
def test_mime_type_comes_from_the_content_never_the_client(tenants, content, filename, client_type, mime, disposition):
    alice, _ = tenants
    stored = upload(alice, content, filename, client_type).json()
    assert stored["mime_type"] == mime
    assert stored["filename"] == filename
    served = alice.get(stored["path"])
    assert served.headers["content-type"].split(";")[0] == mime
    assert served.headers["content-disposition"].startswith(disposition + ";")
    assert served.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in served.headers["content-security-policy"]
    assert served.content == content


def test_text_is_served_as_utf8_plain_text(tenants):
    alice, _ = tenants
    stored = upload(alice, b"<b>not html</b>", "x.html", "text/html").json()
    assert alice.get(stored["path"]).headers["content-type"] == "text/plain; charset=utf-8"


def test_unicode_filenames_are_kept_and_encoded_in_the_header(tenants):
    alice, _ = tenants
    stored = upload(alice, PNG, "héllo 世界.png").json()
    assert stored["filename"] == "héllo 世界.png"
    header = alice.get(stored["path"]).headers["content-disposition"]
    assert header == "inline; filename=\"h_llo __.png\"; filename*=UTF-8''h%C3%A9llo%20%E4%B8%96%E7%95%8C.png"
    quoted = raw_multipart(alice, b'name="file"; filename="say \\"hi\\".png"', PNG).json()
    header = alice.get(quoted["path"]).headers["content-disposition"]
    assert header.startswith('inline; filename="say _hi_.png"; filename*=UTF-8\'\'say%20%22hi%22.png'), header


@pytest.mark.parametrize(
    ("disposition", "expected"),
    [
        (b'name="file"; filename="a\x00b.png"', "ab.png"),
        (b'name="file"; filename="evil\xe2\x80\xaegnp.exe"', "evilgnp.exe"),
        (b'name="file"; filename="C:\\\\Users\\\\x\\\\pic.png"', "pic.png"),
        (b'name="file"; filename="..."', "file"),
        (b'name="file"; filename=""', "file"),
        (b'name="file"; filename="line\r\nbreak.png"', None),
        (b'name="file"; filename="a"b".png"', None),
    ],
)
def test_hostile_filenames_are_sanitised(tenants, disposition, expected):
    alice, _ = tenants
    response = raw_multipart(alice, disposition, PNG)
    if expected is None:  # a malformed part header: refused, or stored sanitised
        assert response.status_code in (200, 400), response.text
        if response.status_code == 200:
            assert "\r" not in response.json()["filename"] and "\n" not in response.json()["filename"]
        return
    assert response.status_code == 200, response.text
    assert response.json()["filename"] == expected


def test_empty_and_missing_files_are_400(tenants):
    alice, _ = tenants
    assert upload(alice, b"", "empty.txt").status_code == 400
    assert alice.post("/v1/media/upload", data={"file": "just text"}).status_code == 415  # not multipart
    text_field = raw_multipart(alice, b'name="file"', b"a form field, not a file")
    assert text_field.status_code == 400
    assert text_field.json()["error"] == "missing 'file' field"
    extra = alice.post("/v1/media/upload", data={"note": "x"}, files={"file": ("a.png", PNG, "image/png")})
    assert extra.status_code == 400
    assert alice.post("/v1/media/upload", files={"other": ("a.png", PNG, "image/png")}).status_code == 400
    two = [("file", ("a.png", PNG, "image/png")), ("file", ("b.png", PNG, "image/png"))]
    assert alice.post("/v1/media/upload", files=two).status_code == 400
    assert alice.post("/v1/media/upload", json={"file": "x"}).status_code in (400, 415)


def test_viewers_cannot_upload(client_for, make_key):
    key, _ = make_key("operator.read")
    assert upload(client_for(key, user="v"), PNG).status_code == 403


def test_uploads_are_audited_without_content(tenants, admin):
    alice, _ = tenants
    stored = upload(alice, b"some text", "t.txt").json()
    logs = admin.get("/v1/activity", params={"entity_id": stored["id"]}).json()["logs"]
    assert [log["action"] for log in logs] == ["media.uploaded"]
    assert logs[0]["details"] == {"filename": "t.txt", "mime_type": "text/plain", "size": 9}


# --- media serving -----------------------------------------------------------------------------


@pytest.fixture
def alices_png(tenants):
    alice, bob = tenants
    stored = upload(alice, PNG, "p.png").json()
    return alice, bob, stored


def test_other_tenants_get_404_and_admins_200(alices_png, admin):
    alice, bob, stored = alices_png
    assert bob.get(stored["path"]).status_code == 404
    assert admin.get(stored["path"]).content == PNG
    assert alice.get(f"/v1/media/{uuid.uuid4()}").status_code == 404
    assert alice.get("/v1/media/not-a-uuid").status_code == 400
    assert alice.get("/v1/media/..%2f..%2fetc%2fpasswd").status_code in (400, 404)
    not_get = alice.get("/v1/media/upload")  # the literal path wins over /v1/media/{id}
    assert not_get.status_code == 405 and not_get.headers["allow"] == "POST"


def test_etag_and_dates_give_304(alices_png):
    alice, _, stored = alices_png
    first = alice.get(stored["path"])
    etag = first.headers["etag"]
    for value in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = alice.get(stored["path"], headers={"If-None-Match": value})
        assert again.status_code == 304, value
        assert again.content == b""
        assert again.headers["etag"] == etag
    assert alice.get(stored["path"], headers={"If-None-Match": '"other"'}).status_code == 200
    since = first.headers["last-modified"]
    assert alice.get(stored["path"], headers={"If-Modified-Since": since}).status_code == 304
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert alice.get(stored["path"], headers={"If-Modified-Since": old}).status_code == 200
    assert alice.get(stored["path"], headers={"If-Modified-Since": "garbage"}).status_code == 200
    # If-None-Match wins over If-Modified-Since
    both = {"If-None-Match": '"other"', "If-Modified-Since": since}
    assert alice.get(stored["path"], headers=both).status_code == 200


def test_byte_ranges(alices_png):
    alice, _, stored = alices_png
    size = len(PNG)
    path = stored["path"]

    def fetch(value, **extra):
        return alice.get(path, headers={"Range": value, **extra})

    head = fetch("bytes=0-7")
    assert head.status_code == 206
    assert head.content == PNG[:8]
    assert head.headers["content-range"] == f"bytes 0-7/{size}"
    assert head.headers["content-length"] == "8"
    assert fetch("bytes=10-").content == PNG[10:]
    assert fetch(f"bytes=10-{size + 100}").headers["content-range"] == f"bytes 10-{size - 1}/{size}"
    tail = fetch("bytes=-4")
    assert tail.content == PNG[-4:] and tail.headers["content-range"] == f"bytes {size - 4}-{size - 1}/{size}"
    assert fetch(f"bytes=-{size * 2}").content == PNG
    for unsatisfiable in (f"bytes={size}-", f"bytes={size + 5}-{size + 9}", "bytes=-0"):
        refused = fetch(unsatisfiable)
        assert refused.status_code == 416, unsatisfiable
        assert refused.headers["content-range"] == f"bytes */{size}"
        assert "error" in refused.json()
    for ignored in ("bytes=abc", "items=0-3", "bytes=5-2", "bytes=0-1,4-5", "bytes=-"):
        whole = fetch(ignored)
        assert whole.status_code == 200, ignored
        assert whole.content == PNG
    assert fetch("bytes=0-3", **{"If-Range": '"stale"'}).status_code == 200
    assert fetch("bytes=0-3", **{"If-Range": head.headers["etag"]}).status_code == 206


def test_token_query_parameter_authenticates_media_only(gateway, alices_png, make_key):
    alice, _, stored = alices_png
    url = gateway.url + stored["path"]
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, params={"token": "goclaw_" + "0" * 32}).status_code == 401
    assert httpx.get(url, params={"token": TEST_TOKEN}).content == PNG  # the gateway token is admin
    reader, _ = make_key("operator.read")
    as_alice = {"X-GoClaw-User-Id": alice.headers["X-GoClaw-User-Id"]}
    assert httpx.get(url, params={"token": reader}, headers=as_alice).content == PNG
    assert httpx.get(url, params={"token": reader}).status_code == 404  # no tenant: not the owner
    assert httpx.get(gateway.url + "/v1/storage/files", params={"token": TEST_TOKEN}).status_code in (400, 401)


# --- the size limit ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_gateway(database, tmp_path_factory):
    gw = start_gateway(database.dsn, tmp_path_factory.mktemp("small"), GOCLAW_MAX_UPLOAD_BYTES="1024")
    yield gw
    assert gw.stop() == 0, gw.log()


def test_files_up_to_the_limit_are_accepted_and_beyond_are_413(small_gateway, database, openapi):
    from tests.support.client import ApiClient

    with ApiClient(small_gateway.url, openapi, token=TEST_TOKEN) as client:
        client.as_user(unique("limited"))
        at_limit = upload(client, b"a" * 1024, "at-limit.txt")
        assert at_limit.status_code == 200, at_limit.text
        assert at_limit.json()["size"] == 1024
        over = upload(client, b"a" * 1025, "over.txt")
        assert over.status_code == 413
        assert "error" in over.json()
        huge = upload(client, os.urandom(200_000), "huge.bin")  # refused by Content-Length before parsing
        assert huge.status_code == 413

        def chunks():
            boundary = b"--b0undary"
            yield boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="c.bin"\r\n\r\n'
            for _ in range(20):
                yield b"z" * 8192
            yield b"\r\n" + boundary + b"--\r\n"

        chunked = client.post(
            "/v1/media/upload", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b0undary"}
        )
        assert chunked.status_code == 413
    with database.connect() as conn:
        names = {r[0] for r in conn.execute("SELECT filename FROM media_files WHERE size > 1024")}
    assert not names & {"over.txt", "huge.bin", "c.bin"}
    leftovers = list((small_gateway.log_path.parent / "data" / "media").rglob("*.part"))
    assert leftovers == []
