"""Function-level authorization: every operation of the served document and every WebSocket method,
tried with each kind of credential. Refused → exactly 401 (no or bad credential) or 403 (role too
low); allowed → anything but 401/403 (the minimal request may still be invalid: 400/404/409/422).
The expected outcome of each cell comes from one table (tests/support/authz.py, derived from
`auth.principal.required_role`), printed here and in the README."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from tests.support.authz import (
    CREDENTIALS,
    WS_CREDENTIALS,
    expected,
    http_table,
    operations,
    ws_allowed,
    ws_table,
)
from tests.support.client import ApiClient
from tests.support.processes import ROOT, TEST_TOKEN

README = ROOT / "README.md"
USER = "authz-user"


@pytest.fixture(scope="module")
def tokens(gateway, openapi):
    """One credential of each kind: name → bearer token (None = no Authorization header)."""
    admin = ApiClient(gateway.url, openapi, token=TEST_TOKEN)
    made: dict[str, str | None] = {"none": None, "gateway token": TEST_TOKEN}
    for name, scopes in CREDENTIALS.items():
        if scopes is not None:
            response = admin.post("/v1/api-keys", json={"name": f"authz {name}", "scopes": list(scopes)})
            assert response.status_code == 201, response.text
            made[name] = response.json()["key"]
    admin.close()
    return made


def concrete(path: str) -> str:
    """A path template with harmless values: ids that exist nowhere, names that match nothing."""
    values = {"name": "no-such-tool", "path": "authz-probe.md"}
    out = path
    while "{" in out:
        start, end = out.index("{"), out.index("}")
        param = out[start + 1:end]
        out = out[:start] + values.get(param, str(uuid.uuid4())) + out[end + 1:]
    return out


# Where the domain checks the role after the schema, the body must be valid for the check to be
# reached; each still fails for an admin afterwards (unknown tool / agent), so nothing is created.
VALID_BODIES = {
    ("PUT", "/v1/tools/builtin/{name}"): {"enabled": False},
    ("POST", "/v1/tools/custom"): {"name": "authz_probe", "command": ["true"], "agent_id": str(uuid.uuid4())},
    ("PUT", "/v1/tools/custom/{id}"): {"description": "authz probe"},
}


def request_for(document: dict, method: str, path: str) -> dict:
    """Keyword arguments for httpx: `{}` for a JSON body, an empty form for an upload."""
    if (method, path) in VALID_BODIES:
        return {"json": VALID_BODIES[(method, path)]}
    operation = document["paths"][path][method.lower()]
    content = (operation.get("requestBody") or {}).get("content", {})
    if "application/json" in content:
        return {"json": {}}
    if "multipart/form-data" in content:
        return {"files": {"unrelated": ("x.txt", b"x", "text/plain")}}
    return {}


def test_every_operation_answers_each_credential_as_the_matrix_says(gateway, openapi, tokens, capsys):
    document = httpx.get(gateway.url + "/v1/openapi.json", timeout=10).json()
    routes = ApiClient(gateway.url, openapi, token=TEST_TOKEN).get("/v1/system/routes").json()["routes"]
    served = {(r["method"], r["path"]) for r in routes}
    ops = operations(document)
    assert served == set(ops), "the route table and the served document disagree"
    with capsys.disabled():
        print("\n" + http_table(document))
    assert http_table(document) in README.read_text(), "README's matrix is stale: python -m tests.support.authz"

    mismatches = []
    clients = {name: ApiClient(gateway.url, openapi, token=token) for name, token in tokens.items()}
    try:
        for method, path in ops:
            url = concrete(path)
            for name, client in clients.items():
                response = client.request(method, url, headers={"X-GoClaw-User-Id": USER},
                                          **request_for(document, method, path))
                want = expected(method, path, name)
                got = response.status_code
                if (want is None and got in (401, 403)) or (want is not None and got != want) or got >= 500:
                    mismatches.append(f"{method} {path} as {name}: expected {want or 'allowed'}, got {got} "
                                      f"{response.text[:120]}")
                if got in (401, 403):
                    assert set(response.json()) == {"error"}, response.text
                if got == 401:
                    assert response.headers.get("www-authenticate") == "Bearer"
    finally:
        for client in clients.values():
            client.close()
    assert not mismatches, "\n".join(mismatches)


@pytest.mark.parametrize("authorization", ["Bearer goclaw_" + "0" * 32, "Bearer wrong", "Basic dXNlcjpwYXNz",
                                           "bearer " + TEST_TOKEN, TEST_TOKEN, "Bearer " + TEST_TOKEN + "x"])
def test_wrong_or_malformed_credentials_are_401_on_every_kind_of_operation(gateway, openapi, authorization):
    client = ApiClient(gateway.url, openapi)
    try:
        for method, path in (("GET", "/v1/agents"), ("POST", "/v1/agents"), ("GET", "/v1/api-keys"),
                             ("DELETE", f"/v1/channels/instances/{uuid.uuid4()}"), ("GET", "/v1/system/routes")):
            response = client.request(method, path, headers={"Authorization": authorization}, json={})
            assert response.status_code == 401, (method, path, authorization, response.text)
    finally:
        client.close()


def test_revoked_and_expired_keys_are_401(gateway, openapi, admin):
    created = admin.post("/v1/api-keys", json={"name": "to revoke", "scopes": ["operator.admin"]}).json()
    expiring = admin.post("/v1/api-keys", json={"name": "expiring", "scopes": ["operator.admin"],
                                                "expires_in": 1}).json()
    client = ApiClient(gateway.url, openapi, token=created["key"])
    assert client.get("/v1/api-keys").status_code == 200
    admin.delete(f"/v1/api-keys/{created['id']}")
    assert client.get("/v1/api-keys").status_code == 401
    time.sleep(1.2)
    late = ApiClient(gateway.url, openapi, token=expiring["key"])
    assert late.get("/v1/agents").status_code == 401
    client.close()
    late.close()


# --- WebSocket methods ---------------------------------------------------------------------------


def ws_call(ws, req_id: str, method: str, params: dict) -> dict:
    ws.send(json.dumps({"type": "req", "id": req_id, "method": method, "params": params}))
    while True:
        frame = json.loads(ws.recv(timeout=15))
        if frame.get("type") == "res" and frame.get("id") == req_id:
            return frame


# params for methods whose empty call would do something real; everything else gets {}
WS_PARAMS = {
    "logs.tail": {"action": "stop"},
    "chat.send": {"message": ""},
    "api_keys.revoke": {"id": "not-a-uuid"},
}


def test_every_websocket_method_answers_each_scope_as_the_matrix_says(gateway, tokens, capsys):
    from ws.methods import METHODS

    with capsys.disabled():
        print("\n" + ws_table())
    assert ws_table() in README.read_text(), "README's matrix is stale: python -m tests.support.authz --ws"
    mismatches = []
    for name in WS_CREDENTIALS:
        with ws_connect(gateway.ws_url, open_timeout=10) as ws:
            hello = ws_call(ws, "c", "connect", {"token": tokens[name], "user_id": USER, "locale": "en"})
            assert hello["ok"] is True, hello
            for n, method in enumerate(METHODS):
                if method == "connect":
                    continue
                res = ws_call(ws, f"m{n}", method, WS_PARAMS.get(method, {}))
                error = res.get("error") or {}
                denied = error.get("code") == "UNAUTHORIZED" and "permission denied" in error.get("message", "")
                allowed = ws_allowed(METHODS[method].scope, name)
                if denied == allowed or error.get("code") == "INTERNAL":
                    mismatches.append(f"{method} as {name}: expected {'allowed' if allowed else 'denied'}, got {res}")
    assert not mismatches, "\n".join(mismatches)


def test_websocket_methods_need_a_successful_connect_first(gateway):
    from ws.methods import METHODS

    with ws_connect(gateway.ws_url, open_timeout=10) as ws:
        failed = ws_call(ws, "c", "connect", {"token": "goclaw_" + "0" * 32})
        assert failed["ok"] is False and failed["error"]["code"] == "UNAUTHORIZED"
        for n, method in enumerate(m for m in METHODS if m != "connect"):
            res = ws_call(ws, f"m{n}", method, {})
            assert res["ok"] is False and res["error"]["code"] == "UNAUTHORIZED", (method, res)
