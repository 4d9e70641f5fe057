"""One process vs two on the same host: `goclaw serve` and `goclaw serve --workers 2`, same database,
wrk on an API-key-authenticated GET (GET /v1/agents as a tenant: key lookup, tenancy, one query).
Prints requests/s, p50/p99 and the ratio. wrk, PostgreSQL and the workers share the machine's
cores, so the ratio is bounded by what is left for the gateway (printed: the core count).

    .venv/bin/python bench/scale_bench.py [--seconds 10] [--connections 64] [--rounds 3] [--path /v1/agents]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

import httpx
from common import ROOT, TEST_TOKEN, Database, free_port, start_gateway, wait_until, workdir, wrk

from tests.support.processes import TEST_ENCRYPTION_KEY


def serve_workers(dsn: str, workers: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "GOCLAW_POSTGRES_DSN": dsn, "GOCLAW_HOST": "127.0.0.1", "GOCLAW_PORT": str(port),
           "GOCLAW_WS_PORT": str(free_port()), "GOCLAW_DATA_DIR": str(workdir() / "data"),
           "GOCLAW_GATEWAY_TOKEN": TEST_TOKEN, "GOCLAW_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
           "GOCLAW_LOG_LEVEL": "warning"}
    process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--workers", str(workers)], cwd=ROOT,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(url + "/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    if not wait_until(up, timeout=60):
        process.kill()
        raise SystemExit("the two-worker gateway did not start")
    return process, url


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--path", default="/v1/agents")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    database = Database()
    one = start_gateway(database.dsn, workdir())
    admin = {"Authorization": f"Bearer {TEST_TOKEN}", "X-GoClaw-User-Id": "scale"}
    two = None
    try:
        key = httpx.post(one.url + "/v1/api-keys", headers=admin,
                         json={"name": "scale", "scopes": ["operator.read"]}).json()["key"]
        for n in range(20):
            httpx.post(one.url + "/v1/agents", headers=admin, json={"name": f"scale-{n}"}).raise_for_status()
        two, two_url = serve_workers(database.dsn, 2)
        headers = {"Authorization": f"Bearer {key}", "X-GoClaw-User-Id": "scale"}
        run = dict(seconds=args.seconds, connections=args.connections, threads=2, headers=headers)
        for url in (one.url, two_url):
            wrk(url + args.path, **{**run, "seconds": 2})  # warm-up (key cache, pool)
        results: dict[str, list[dict]] = {"1": [], "2 workers": []}
        for _ in range(args.rounds):  # interleaved, so background load hits both alike; best round kept
            results["1"].append(wrk(one.url + args.path, **run))
            results["2 workers"].append(wrk(two_url + args.path, **run))
        best = {name: max(rounds, key=lambda r: r["rps"]) for name, rounds in results.items()}
        print(f"GET {args.path} (API key, tenant header), wrk -t2 -c{args.connections} -d{args.seconds}s, "
              f"best of {args.rounds} interleaved rounds, {os.cpu_count()} cores shared with wrk and PostgreSQL")
        print(f"{'processes':10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}  rounds req/s")
        for name, result in best.items():
            print(f"{name:10} {result['rps']:9.0f} {result['p50']:8.2f} {result['p99']:8.2f} {result['errors']:8d}  "
                  + " ".join(f"{r['rps']:.0f}" for r in results[name]))
        print(f"ratio 2/1: {best['2 workers']['rps'] / best['1']['rps']:.2f}x")
    finally:
        one.stop()
        if two is not None:
            two.send_signal(signal.SIGTERM)
            two.wait(30)
        database.close()


if __name__ == "__main__":
    main()
