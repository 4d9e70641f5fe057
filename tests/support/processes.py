"""Real processes for tests: an embedded PostgreSQL and gateway servers on free loopback ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[2]
TEST_TOKEN = "test-gateway-token-0123456789"
TEST_ENCRYPTION_KEY = "5e" * 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float = 20.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return False


class Database:
    """A fresh database on GOCLAW_POSTGRES_DSN's server, or on an embedded one started here."""

    def __init__(self) -> None:
        self.server = None
        admin_dsn = os.environ.get("GOCLAW_POSTGRES_DSN")
        if not admin_dsn:
            from gateway import embedded

            self.tmp = tempfile.mkdtemp(prefix="gct-", dir="/tmp")  # short: unix socket paths are limited
            self.server, admin_dsn = embedded.start(Path(self.tmp))
        self.admin_dsn = admin_dsn
        self.name = f"goclaw_test_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        self.dsn = psycopg.conninfo.make_conninfo(admin_dsn, dbname=self.name)

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn, autocommit=True)

    def close(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        if self.server is not None:
            self.server.cleanup()


@dataclass
class Gateway:
    url: str
    process: subprocess.Popen
    log_path: Path
    ws_url: str = ""  # the WebSocket RPC endpoint (GOCLAW_WS_PORT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_gateway(dsn: str, workdir: Path, **env_overrides: str) -> Gateway:
    """`goclaw serve` as a subprocess; returns once /health answers."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "GOCLAW_POSTGRES_DSN": dsn,
        "GOCLAW_HOST": "127.0.0.1",
        "GOCLAW_PORT": str(port),
        "GOCLAW_WS_PORT": str(free_port()),
        "GOCLAW_DATA_DIR": str(workdir / "data"),
        "GOCLAW_GATEWAY_TOKEN": TEST_TOKEN,
        "GOCLAW_LOG_LEVEL": "warning",
        "GOCLAW_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
        "GOCLAW_ALLOW_PRIVATE_NETWORKS": "127.0.0.0/8",  # the LLM/MCP stubs live on loopback
        "GOCLAW_RATE_LIMIT_RPM": "60000",  # tests share credentials; the limiter has its own test
        "GOCLAW_RATE_LIMIT_BURST": "1000",
        **env_overrides,
    }
    env = {k: v for k, v in env.items() if v is not None and v != "<unset>"}
    log_path = workdir / f"gateway-{port}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve"],
        cwd=ROOT,
        env=env,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited early:\n{log_path.read_text()}")
        try:
            return httpx.get(url + "/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    if not wait_until(ready, timeout=30):
        process.kill()
        raise RuntimeError(f"gateway did not start:\n{log_path.read_text()}")
    return Gateway(url, process, log_path, f"ws://127.0.0.1:{env['GOCLAW_WS_PORT']}/ws")
