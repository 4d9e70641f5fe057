"""Faults: the database going away and coming back, and a clean shutdown under load."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import httpx
import psycopg

from gateway import embedded
from tests.support.processes import TEST_TOKEN, start_gateway, wait_until

ADMIN = {"Authorization": f"Bearer {TEST_TOKEN}"}


def test_database_outage_answers_503_fast_and_recovers_without_restart(tmp_path):
    pg_home = Path(tempfile.mkdtemp(prefix="gcf-", dir="/tmp"))  # outside pytest's 0700 tree, short socket path
    server, dsn = embedded.start(pg_home)
    gw = start_gateway(dsn, tmp_path / "gw", GOCLAW_DB_TIMEOUT_MS="2000")
    try:
        body = {"name": "before", "scopes": ["operator.read"]}
        created = httpx.post(gw.url + "/v1/api-keys", headers=ADMIN, json=body)
        assert created.status_code == 201
        server.cleanup()  # stop PostgreSQL under the running gateway

        started = time.monotonic()
        during = httpx.get(gw.url + "/v1/api-keys", headers=ADMIN, timeout=10)
        assert during.status_code == 503, during.text
        assert during.json()["error"] and during.headers["retry-after"]
        assert time.monotonic() - started < 3.0  # never hangs past the pool timeout
        health = httpx.get(gw.url + "/health", timeout=10)
        assert health.status_code == 200 and health.json()["database"] == "error"

        server, dsn = embedded.start(pg_home)  # the database comes back
        back = time.monotonic()
        assert wait_until(lambda: httpx.get(gw.url + "/v1/api-keys", headers=ADMIN).status_code == 200, timeout=5)
        print(f"\nrecovered {time.monotonic() - back:.2f}s after the database returned")
        assert httpx.get(gw.url + "/health").json()["database"] == "ok"
        names = [k["name"] for k in httpx.get(gw.url + "/v1/api-keys", headers=ADMIN).json()]
        assert "before" in names  # the committed write survived
    finally:
        gw.stop()
        server.cleanup()


def test_sigterm_during_load_finishes_requests_flushes_and_exits_0(database, tmp_path):
    gw = start_gateway(database.dsn, tmp_path / "gw")
    statuses: list[int] = []

    def load() -> None:
        with httpx.Client(headers=ADMIN, timeout=10) as client:
            for _ in range(200):
                try:
                    statuses.append(client.post("/v1/api-keys".join([gw.url, ""]), json={
                        "name": "load", "scopes": ["operator.read"]}).status_code)
                except httpx.HTTPError:
                    return  # the listener closed: the shutdown has begun

    worker = threading.Thread(target=load)
    worker.start()
    time.sleep(0.5)
    assert gw.stop() == 0
    worker.join(10)
    assert statuses and set(statuses) <= {201}
    with psycopg.connect(database.dsn) as conn:
        stored = conn.execute("SELECT count(*) FROM api_keys WHERE name = 'load'").fetchone()[0]
        audited = conn.execute("SELECT count(*) FROM activity_logs WHERE action = 'api_key.created' "
                               "AND details->>'name' = 'load'").fetchone()[0]
    assert stored == statuses.count(201) == audited  # every acknowledged write is there, with its audit row
