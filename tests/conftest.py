"""Shared fixtures: one database and one gateway per test session, real HTTP to it."""

from __future__ import annotations

import pytest

from tests.support.client import ApiClient, load_openapi
from tests.support.processes import TEST_TOKEN, Database, Gateway, start_gateway


@pytest.fixture(scope="session")
def database():
    db = Database()
    yield db
    db.close()


@pytest.fixture(scope="session")
def gateway(database, tmp_path_factory) -> Gateway:
    gw = start_gateway(database.dsn, tmp_path_factory.mktemp("gateway"))
    yield gw
    code = gw.stop()
    assert code == 0, f"gateway exited with {code}:\n{gw.log()}"


@pytest.fixture(scope="session")
def openapi(gateway):
    return load_openapi(gateway.url)


@pytest.fixture
def client_for(gateway, openapi):
    """Factory: a validating client with the given bearer token (None → no Authorization)."""
    made: list[ApiClient] = []

    def make(token: str | None = None, user: str | None = None, base_url: str | None = None) -> ApiClient:
        client = ApiClient(base_url or gateway.url, openapi, token=token)
        if user:
            client.as_user(user)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def admin(client_for) -> ApiClient:
    return client_for(TEST_TOKEN)


@pytest.fixture
def make_key(admin):
    """Factory: create an API key with these scopes; returns the raw key (and its id)."""

    def make(*scopes: str, expires_in: int | None = None, name: str = "test") -> tuple[str, str]:
        body = {"name": name, "scopes": list(scopes)}
        if expires_in is not None:
            body["expires_in"] = expires_in
        response = admin.post("/v1/api-keys", json=body)
        assert response.status_code == 201, response.text
        created = response.json()
        return created["key"], created["id"]

    return make
