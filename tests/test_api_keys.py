"""API keys: create shows the raw key once, list never shows the hash, revoke, audit rows."""

from __future__ import annotations

import re

import pytest

JSON = "application/json"


def test_create_returns_the_raw_key_once(admin, database):
    response = admin.post("/v1/api-keys", json={"name": "ci-deploy", "scopes": ["operator.read", "operator.write"]})
    assert response.status_code == 201
    created = response.json()
    assert set(created) == {"id", "name", "prefix", "key", "scopes", "expires_at", "created_at"}
    assert re.fullmatch(r"goclaw_[0-9a-f]{32}", created["key"])
    assert created["prefix"] == created["key"][7:15]
    assert created["expires_at"] is None
    listed = {k["id"]: k for k in admin.get("/v1/api-keys").json()}[created["id"]]
    assert "key" not in listed and "key_hash" not in listed
    assert listed["revoked"] is False
    with database.connect() as conn:
        stored = conn.execute("SELECT * FROM api_keys WHERE id = %s", (created["id"],)).fetchone()
    assert created["key"] not in [str(v) for v in stored]


def test_expiry_is_set_from_expires_in(admin):
    created = admin.post("/v1/api-keys", json={"name": "short", "scopes": ["operator.read"], "expires_in": 60}).json()
    assert created["expires_at"] is not None


def test_list_is_newest_first(admin, make_key):
    _, first = make_key("operator.read", name="first")
    _, second = make_key("operator.read", name="second")
    ids = [k["id"] for k in admin.get("/v1/api-keys").json()]
    assert ids.index(second) < ids.index(first)


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "scopes": ["operator.root"]},
        {"name": "x", "scopes": []},
        {"name": "", "scopes": ["operator.read"]},
        {"name": "x" * 101, "scopes": ["operator.read"]},
        {"name": "x", "scopes": ["operator.read"], "expires_in": -1},
        {"name": "x", "scopes": ["operator.read"], "expires_in": "soon"},
        {"name": "x", "scopes": ["operator.read"], "unknown": True},
        {"scopes": ["operator.read"]},
    ],
)
def test_bad_create_input_is_400_and_writes_nothing(admin, body):
    before = len(admin.get("/v1/api-keys").json())
    response = admin.post("/v1/api-keys", json=body)
    assert response.status_code == 400, response.text
    assert isinstance(response.json()["error"], str)
    assert len(admin.get("/v1/api-keys").json()) == before


@pytest.mark.parametrize(
    ("content", "content_type"),
    [(b"{not json", JSON), (b"\xff\xfe", JSON), (b"", JSON), (b"[]", JSON), (b"name=x", "text/plain")],
)
def test_malformed_bodies_are_400(admin, content, content_type):
    response = admin.post("/v1/api-keys", content=content, headers={"Content-Type": content_type})
    assert response.status_code in (400, 415), response.text
    assert "error" in response.json()


def test_oversized_body_is_413(admin):
    response = admin.post("/v1/api-keys", content=b"{" + b" " * (2 << 20) + b"}", headers={"Content-Type": JSON})
    assert response.status_code == 413
    assert "error" in response.json()


def test_oversized_chunked_body_is_413(admin):
    def chunks():
        for _ in range(40):
            yield b" " * 65536

    response = admin.post("/v1/api-keys", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413


def test_deeply_nested_json_is_a_clean_400(admin):
    response = admin.post("/v1/api-keys", content=b"[" * 100_000 + b"]" * 100_000, headers={"Content-Type": JSON})
    assert response.status_code in (400, 413)


def test_revoke_unknown_is_404_and_bad_id_is_400(admin):
    assert admin.delete("/v1/api-keys/00000000-0000-0000-0000-000000000000").status_code == 404
    assert admin.delete("/v1/api-keys/not-a-uuid").status_code == 400


def test_revoke_is_idempotent_and_listed_as_revoked(admin, make_key):
    _, key_id = make_key("operator.read")
    assert admin.delete(f"/v1/api-keys/{key_id}").status_code == 200
    assert admin.post(f"/v1/api-keys/{key_id}/revoke").status_code == 200
    listed = {k["id"]: k for k in admin.get("/v1/api-keys").json()}[key_id]
    assert listed["revoked"] is True


def test_mutations_write_activity_rows(admin, make_key):
    _, key_id = make_key("operator.read")
    admin.delete(f"/v1/api-keys/{key_id}")
    logs = admin.get("/v1/activity", params={"entity_id": key_id}).json()["logs"]
    assert [log["action"] for log in logs] == ["api_key.revoked", "api_key.created"]
    assert logs[0]["ip_address"] == "127.0.0.1"


def test_activity_paginates_and_bounds_limit(admin, make_key):
    make_key("operator.read")
    make_key("operator.read")
    page = admin.get("/v1/activity", params={"limit": 1, "offset": 1}).json()
    assert page["limit"] == 1 and page["offset"] == 1 and len(page["logs"]) == 1 and page["total"] >= 2
    assert admin.get("/v1/activity", params={"limit": 0}).status_code == 400
    assert admin.get("/v1/activity", params={"limit": 1000}).status_code == 400
    assert admin.get("/v1/activity", params={"unknown": 1}).status_code == 400


def test_activity_of_non_admins_is_their_own(client_for, make_key, admin):
    key, _ = make_key("operator.read")
    viewer = client_for(key, user="alice")
    logs = viewer.get("/v1/activity").json()["logs"]
    assert all(log["actor_id"] == "alice" for log in logs)


def test_odd_headers_never_500(admin):
    odd = {"X-Odd": "x" * 6000, "Accept-Language": ("é" * 300).encode("latin-1")}
    response = admin.get("/v1/activity", headers=odd)
    assert response.status_code < 500


def test_nul_characters_are_stored_as_replacement_characters(admin):
    created = admin.post("/v1/api-keys", json={"name": "a\x00b", "scopes": ["operator.read"]}).json()
    assert created["name"] == "a\ufffdb"
    assert admin.get("/v1/activity", params={"actor_id": "x\x00"}).status_code == 200
