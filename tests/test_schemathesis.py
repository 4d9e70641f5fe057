"""Schemathesis against the live server: every implemented operation, all checks.

`make fuzz` runs the same with GOCLAW_FUZZ_EXAMPLES=1000."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.support.client import ApiClient, load_openapi
from tests.support.processes import ROOT, TEST_TOKEN, start_gateway


@pytest.fixture(scope="module")
def fuzz_gateway(database, tmp_path_factory):
    """A gateway on a database of its own: fuzzing changes global settings (built-in tools, ...)
    that other tests rely on."""
    name = database.name + "_fuzz"
    with psycopg.connect(database.admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    gw = start_gateway(psycopg.conninfo.make_conninfo(database.dsn, dbname=name), tmp_path_factory.mktemp("fuzz"))
    yield gw
    gw.stop()
    with psycopg.connect(database.admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def fuzz_admin(fuzz_gateway):
    client = ApiClient(fuzz_gateway.url, load_openapi(fuzz_gateway.url), token=TEST_TOKEN)
    yield client
    client.close()


def implemented_operations(admin) -> list[str]:
    routes = admin.get("/v1/system/routes").json()["routes"]
    return [f"{r['method']} {r['path']}" for r in routes if r["implemented"]]


def seed_default_agent(admin, llm_stub) -> None:
    """A `default` agent on the stub upstream, so chat and wake are exercised, not just 404."""
    if admin.get("/v1/agents/default", headers={"X-GoClaw-User-Id": "fuzz"}).status_code == 200:
        return
    admin.post("/v1/providers", json={"name": "fuzz-stub", "provider_type": "openai_compat",
                                      "api_base": llm_stub.openai_base, "api_key": "sk-fuzz"})
    created = admin.post("/v1/agents", headers={"X-GoClaw-User-Id": "fuzz"},
                         json={"name": "default", "provider": "fuzz-stub", "model": "gpt-4o-mini"})
    assert created.status_code == 201, created.text


def test_schemathesis_finds_nothing(fuzz_gateway, fuzz_admin, llm_stub, tmp_path):
    seed_default_agent(fuzz_admin, llm_stub)
    examples = os.environ.get("GOCLAW_FUZZ_EXAMPLES", "30")
    operations = implemented_operations(fuzz_admin)
    command = [
        str(Path(sys.executable).parent / "st"),
        "run",
        f"{fuzz_gateway.url}/v1/openapi.json",
        "--header", f"Authorization: Bearer {TEST_TOKEN}",
        "--checks", "all",
        "--max-examples", examples,
        "--phases", "examples,coverage,fuzzing,stateful",
        "--seed", os.environ.get("GOCLAW_FUZZ_SEED", "20261128"),
        "--workers", "2",
        "--request-timeout", "30",
        "--report", "junit",
        "--report-dir", str(tmp_path),
    ]
    for operation in operations:
        command += ["--include-name", operation]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.support.st_hooks", "PYTHONPATH": str(ROOT)}
    # 30 examples take ~2 minutes; `make fuzz` (1,000) about an hour on 2 cores: bound it by the example count.
    timeout = max(3000, int(examples) * 9)
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    print(result.stdout[-6000:])
    print(f"schemathesis covered {len(operations)} operations with up to {examples} examples each")
    failures = result.stdout[result.stdout.find("= FAILURES ="):] if "= FAILURES =" in result.stdout else ""
    assert result.returncode == 0, (failures or result.stdout)[:20000] + result.stderr[-3000:]
