"""Shared fixtures: one database and one gateway per test session, real HTTP to it."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from tests.support.client import ApiClient, load_openapi
from tests.support.processes import ROOT, TEST_TOKEN, Database, Gateway, free_port, start_gateway, wait_until


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


class LlmStub:
    """The fake LLM upstream (tests/stubs/llm_stub.py) running as a process.

    `url` is its root; the wire bases are `openai_base`, `anthropic_base`, `gemini_base`.
    `script(steps)` queues scripted answers, `requests()` lists what it received, `reset()` clears both."""

    def __init__(self, url: str, process: subprocess.Popen) -> None:
        self.url = url
        self.process = process
        self.openai_base = url + "/v1"
        self.anthropic_base = url + "/anthropic/v1"
        self.gemini_base = url + "/gemini/v1beta"

    def script(self, steps: dict | list[dict]) -> dict:
        response = httpx.post(self.url + "/_script", json=steps, timeout=10)
        response.raise_for_status()
        return response.json()

    def requests(self) -> list[dict]:
        return httpx.get(self.url + "/_requests", timeout=10).json()

    def reset(self) -> None:
        httpx.post(self.url + "/_reset", timeout=10).raise_for_status()

    def stats(self) -> dict:
        return httpx.get(self.url + "/_stats", timeout=10).json()


@pytest.fixture(scope="session")
def llm_stub():
    """One stub upstream per session, on a free loopback port (reset it in tests that script it)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.stubs.llm_stub", "--port", str(port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    stub = LlmStub(f"http://127.0.0.1:{port}", process)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError("the LLM stub exited early")
        try:
            return httpx.get(stub.url + "/_stats", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    assert wait_until(ready, timeout=20), "the LLM stub did not start"
    yield stub
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
