"""Foundation throughput: GET /health and API-key-authenticated GET /v1/api-keys on one gateway
worker, against a bare Starlette hello world measured in the same run (ratios, not absolutes).

    .venv/bin/python bench/http_bench.py [--seconds 8] [--connections 32]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import httpx
from common import ROOT, TEST_TOKEN, Database, answers, free_port, start_gateway, wait_until, workdir, wrk


def bare_starlette() -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.bare_starlette:app", "--port", str(port), "--log-level", "warning",
         "--no-access-log"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: answers(url + "/health"), timeout=15)
    return process, url


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    database = Database()
    gateway = start_gateway(database.dsn, workdir())
    baseline, baseline_url = bare_starlette()
    try:
        key = httpx.post(gateway.url + "/v1/api-keys", json={"name": "bench", "scopes": ["operator.admin"]},
                         headers={"Authorization": f"Bearer {TEST_TOKEN}"}).json()["key"]
        run = dict(seconds=args.seconds, connections=args.connections)
        wrk(baseline_url + "/health", seconds=2, connections=8)  # warm-up
        bare = wrk(baseline_url + "/health", **run)
        health = wrk(gateway.url + "/health", **run)
        keys = wrk(gateway.url + "/v1/api-keys", headers={"Authorization": f"Bearer {key}"}, **run)
        print(f"one worker, wrk -t1 -c{args.connections} -d{args.seconds}s")
        print(f"{'case':44} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs bare':>8}")
        for name, result in (("bare Starlette hello world", bare), ("gateway GET /health (db ping)", health),
                             ("gateway GET /v1/api-keys (API key, db list)", keys)):
            failures = f"  non-2xx: {result['errors']}" if result["errors"] else ""
            print(f"{name:44} {result['rps']:9.0f} {result['p50']:8.2f} {result['p99']:8.2f} "
                  f"{result['rps'] / bare['rps']:8.1%}{failures}")
    finally:
        baseline.terminate()
        gateway.stop()
        database.close()


if __name__ == "__main__":
    main()
