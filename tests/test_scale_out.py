"""Several gateway processes on one database: changes made on one reach the others' caches within
a second (PostgreSQL LISTEN/NOTIFY), migrations are safe when all start at once, and
`goclaw serve --workers 2` serves from both workers, states the per-process rate-limit factor and
exits 0 on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
from websockets.sync.client import connect as ws_connect

from db.migrate import migration_files
from tests.support.processes import (
    ROOT,
    TEST_ENCRYPTION_KEY,
    TEST_TOKEN,
    free_port,
    start_gateway,
    wait_until,
)

ADMIN = {"Authorization": f"Bearer {TEST_TOKEN}"}


@pytest.fixture(scope="module")
def pair(gateway, database, tmp_path_factory):
    """Process A (the session gateway) and process B, on the same database."""
    second = start_gateway(database.dsn, tmp_path_factory.mktemp("process-b"))
    yield gateway, second
    assert second.stop() == 0


def elapsed_ms(since: float) -> str:
    return f"{(time.monotonic() - since) * 1000:.0f} ms"


def chat(url: str, model: str, user: str = "scale-user") -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", headers={**ADMIN, "X-GoClaw-User-Id": user}, timeout=30,
                      json={"model": model, "messages": [{"role": "user", "content": "hello"}]})


@pytest.fixture
def bot(pair, llm_stub):
    """A provider on the stub and an agent, created on A and used once on B (so B has them cached)."""
    a, b = pair
    suffix = uuid.uuid4().hex[:8]
    provider = httpx.post(a.url + "/v1/providers", headers=ADMIN, json={
        "name": f"scale-{suffix}", "provider_type": "openai_compat", "api_base": llm_stub.openai_base,
        "api_key": "sk-first-key"}).json()
    agent = httpx.post(a.url + "/v1/agents", headers={**ADMIN, "X-GoClaw-User-Id": "scale-user"}, json={
        "name": f"scale-{suffix}", "provider": provider["name"], "model": "gpt-4o-mini"}).json()
    assert chat(b.url, f"goclaw:{agent['name']}").status_code == 200  # now cached on B
    return provider, agent


def test_an_agent_renamed_on_a_is_seen_by_b_within_a_second(pair, bot):
    a, b = pair
    _, agent = bot
    new_name = agent["name"] + "-renamed"
    changed = httpx.put(a.url + f"/v1/agents/{agent['id']}", headers={**ADMIN, "X-GoClaw-User-Id": "scale-user"},
                        json={"name": new_name})
    assert changed.status_code == 200, changed.text
    since = time.monotonic()
    assert wait_until(lambda: chat(b.url, f"goclaw:{agent['name']}").status_code == 404, timeout=1.0)
    print(f"\nrename visible on B after {elapsed_ms(since)}")
    assert chat(b.url, f"goclaw:{new_name}").status_code == 200


def test_an_agent_deleted_or_deactivated_on_a_stops_on_b_within_a_second(pair, bot):
    a, b = pair
    _, agent = bot
    headers = {**ADMIN, "X-GoClaw-User-Id": "scale-user"}
    deactivated = httpx.put(a.url + f"/v1/agents/{agent['id']}", headers=headers, json={"status": "inactive"})
    assert deactivated.status_code == 200
    since = time.monotonic()
    assert wait_until(lambda: chat(b.url, f"goclaw:{agent['name']}").status_code == 409, timeout=1.0)
    print(f"\ndeactivation visible on B after {elapsed_ms(since)}")
    assert httpx.delete(a.url + f"/v1/agents/{agent['id']}", headers=headers).status_code == 200
    since = time.monotonic()
    assert wait_until(lambda: chat(b.url, f"goclaw:{agent['id']}").status_code == 404, timeout=1.0)
    print(f"deletion visible on B after {elapsed_ms(since)}")


def test_provider_changes_on_a_reach_bs_adapter_cache_within_a_second(pair, bot, llm_stub):
    a, b = pair
    provider, agent = bot
    model = f"goclaw:{agent['name']}"
    assert httpx.put(a.url + f"/v1/providers/{provider['id']}", headers=ADMIN,
                     json={"api_key": "sk-second-key"}).status_code == 200
    since = time.monotonic()

    def uses_new_key() -> bool:
        llm_stub.reset()
        assert chat(b.url, model).status_code == 200
        return llm_stub.requests()[-1]["headers"]["authorization"] == "Bearer sk-second-key"

    assert wait_until(uses_new_key, timeout=1.0)
    print(f"\nnew provider key used by B after {elapsed_ms(since)}")
    assert httpx.put(a.url + f"/v1/providers/{provider['id']}", headers=ADMIN,
                     json={"enabled": False}).status_code == 200
    since = time.monotonic()
    assert wait_until(lambda: chat(b.url, model).status_code == 409, timeout=1.0)
    print(f"disabled provider refused by B after {elapsed_ms(since)}")


def test_api_key_revocation_on_b_reaches_a_within_a_second(pair):
    a, b = pair
    created = httpx.post(b.url + "/v1/api-keys", headers=ADMIN, json={"name": "scale", "scopes": ["operator.read"]})
    key = created.json()
    headers = {"Authorization": f"Bearer {key['key']}"}
    assert httpx.get(a.url + "/v1/providers", headers=headers).status_code == 200  # cached on A
    assert httpx.delete(b.url + f"/v1/api-keys/{key['id']}", headers=ADMIN).status_code == 200
    since = time.monotonic()
    assert wait_until(lambda: httpx.get(a.url + "/v1/providers", headers=headers).status_code == 401, timeout=1.0)
    print(f"\nrevocation on B visible on A after {elapsed_ms(since)}")


# --- migrations when every process starts at once ----------------------------------------------


def test_three_gateways_starting_at_once_on_a_fresh_database_migrate_once(database, tmp_path):
    name = f"goclaw_fresh_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database.admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = psycopg.conninfo.make_conninfo(database.admin_dsn, dbname=name)
    started, failures = [], []

    def boot(n: int) -> None:
        try:
            started.append(start_gateway(dsn, tmp_path / f"gw{n}"))
        except Exception as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=boot, args=(n,)) for n in range(3)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not failures, failures
        assert len(started) == 3
        for gw in started:
            assert httpx.get(gw.url + "/health").json()["database"] == "ok"
            assert httpx.get(gw.url + "/v1/providers", headers=ADMIN).status_code == 200
        with psycopg.connect(dsn) as conn:
            rows = conn.execute("SELECT version, count(*) FROM schema_migrations GROUP BY version").fetchall()
        assert sorted(v for v, _ in rows) == [p.stem for p in migration_files()]
        assert {n for _, n in rows} == {1}
    finally:
        for gw in started:
            assert gw.stop() == 0
        with psycopg.connect(database.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- goclaw serve --workers 2 ------------------------------------------------------------------


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


def test_serve_with_two_workers_serves_from_both_and_exits_0_on_sigterm(database, tmp_path):
    port, ws_port = free_port(), free_port()
    env = {**os.environ, "GOCLAW_POSTGRES_DSN": database.dsn, "GOCLAW_HOST": "127.0.0.1", "GOCLAW_PORT": str(port),
           "GOCLAW_WS_PORT": str(ws_port), "GOCLAW_DATA_DIR": str(tmp_path / "data"),
           "GOCLAW_GATEWAY_TOKEN": TEST_TOKEN, "GOCLAW_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
           "GOCLAW_LOG_LEVEL": "warning", "GOCLAW_RATE_LIMIT_RPM": "1", "GOCLAW_RATE_LIMIT_BURST": "1"}
    log = (tmp_path / "workers.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--workers", "2"], cwd=ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            assert process.poll() is None, (tmp_path / "workers.log").read_text()
            try:
                return httpx.get(url + "/health", timeout=1).status_code == 200 and len(children(process.pid)) >= 2
            except httpx.HTTPError:
                return False

        assert wait_until(up, timeout=60)

        def both_ws_workers() -> set[str]:
            seen = set()
            for _ in range(16):  # SO_REUSEPORT spreads connections over the workers by source port
                with ws_connect(f"ws://127.0.0.1:{ws_port}/ws", open_timeout=10) as ws:
                    hello = {"type": "req", "id": "1", "method": "connect", "params": {"token": TEST_TOKEN}}
                    ws.send(json.dumps(hello))
                    json.loads(ws.recv(timeout=10))
                    ws.send(json.dumps({"type": "req", "id": "2", "method": "health", "params": {}}))
                    seen.add(json.loads(ws.recv(timeout=10))["payload"]["process"])
            return seen

        assert wait_until(lambda: len(both_ws_workers()) == 2, timeout=30)
        # HTTP: the chat rate limit is per process (1 per minute here), so across fresh connections
        # exactly one request per worker gets through: 2 workers = 2x the configured limit
        statuses = []
        for _ in range(24):
            with httpx.Client(headers=ADMIN) as client:  # a new connection each time
                statuses.append(client.post(url + "/v1/chat/completions", json={
                    "model": "goclaw:no-such-agent", "messages": [{"role": "user", "content": "x"}]}).status_code)
        print(f"\n--workers 2, limit 1/min: {statuses.count(404)} admitted, {statuses.count(429)} limited")
        assert sorted(set(statuses)) == [404, 429] and statuses.count(404) == 2

        workers = children(process.pid)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        assert wait_until(lambda: not any(alive(pid) for pid in workers), timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
