"""Tool-layer figures: building an agent's ToolSet, and ToolSet.call latency per kind of tool.

    .venv/bin/python bench/tool_bench.py [calls]

Starts a database and a gateway (for migrations and the HTTP setup), then measures in-process:
tools_for_agent, a built-in (current_time), a custom tool (one subprocess per call), and an MCP
tool over stdio and over streamable HTTP through the pooled sessions (the first call includes
the connect + handshake).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid

import httpx
from common import ROOT, TEST_TOKEN, Database, free_port, start_gateway, wait_until, workdir


def figures(name: str, samples: list[float]) -> None:
    ms = sorted(s * 1000 for s in samples)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(f"{name:<34} n={len(ms):<5} p50={statistics.median(ms):8.2f} ms  p99={p99:8.2f} ms  "
          f"≈{1000 / statistics.mean(ms):8.0f} calls/s (sequential)")


async def measure(database, data_dir, agent_id: str, names: dict[str, str], calls: int) -> None:
    import db
    from agent import ToolContext, mcp, tools_for_agent
    from auth import Principal
    from auth.principal import Role
    from domain import agents
    from gateway import state
    from gateway.settings import Settings
    from tests.support.processes import TEST_ENCRYPTION_KEY

    state.configure(Settings(postgres_dsn=database.dsn, data_dir=data_dir, encryption_key=TEST_ENCRYPTION_KEY))
    await db.connect(database.dsn, min_size=1, max_size=4)
    principal = Principal(role=Role.ADMIN, kind="gateway_token")
    try:
        agent = await agents.resolve(principal, agent_id)
        ctx = ToolContext(principal, agent, data_dir / "bench-ws")
        started = time.perf_counter()
        toolset = await tools_for_agent(principal, agent)
        print(f"{'first tools_for_agent (connects MCP)':<34} {1000 * (time.perf_counter() - started):8.2f} ms")
        builds = []
        for _ in range(max(10, calls // 10)):
            started = time.perf_counter()
            toolset = await tools_for_agent(principal, agent)
            builds.append(time.perf_counter() - started)
        figures("tools_for_agent (warm)", builds)
        cases = [
            ("builtin current_time", "current_time", {}),
            ("custom tool (subprocess echo)", names["custom"], {"text": "hello"}),
            ("mcp stdio add", names["stdio"], {"a": 1, "b": 2}),
            ("mcp streamable-http add", names["http"], {"a": 1, "b": 2}),
        ]
        for label, name, arguments in cases:
            samples = []
            for _ in range(calls):
                started = time.perf_counter()
                result = await toolset.call(name, arguments, ctx)
                samples.append(time.perf_counter() - started)
                assert not result.is_error, result.content
            figures(label, samples)
    finally:
        await mcp.shutdown()
        await db.disconnect()


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    os.environ["GOCLAW_ALLOW_PRIVATE_NETWORKS"] = "127.0.0.0/8"
    database = Database()
    folder = workdir()
    gateway = start_gateway(database.dsn, folder / "gw")
    port = free_port()
    stub = subprocess.Popen([sys.executable, "-m", "tests.stubs.mcp_server", "--transport", "http", "--port",
                             str(port)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: _open(port), timeout=30)
        with database.connect() as conn:
            agent_id = str(conn.execute("INSERT INTO agents (agent_key, owner_id) VALUES (%s, '') RETURNING id",
                                        (f"bench-{uuid.uuid4().hex[:8]}",)).fetchone()[0])
        client = httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {TEST_TOKEN}"}, timeout=30)
        custom = client.post("/v1/tools/custom", json={
            "name": "bench-echo", "command": ["echo", "{{text}}"], "agent_id": agent_id,
            "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        }).json()
        stdio = client.post("/v1/mcp/servers", json={
            "name": "benchstdio", "transport": "stdio", "command": sys.executable,
            "args": ["-m", "tests.stubs.mcp_server"], "agent_ids": [agent_id]}).json()
        http = client.post("/v1/mcp/servers", json={
            "name": "benchhttp", "transport": "streamable-http", "url": f"http://127.0.0.1:{port}/mcp",
            "agent_ids": [agent_id]}).json()
        names = {"custom": custom["name"], "stdio": f"mcp_{stdio['name']}__add", "http": f"mcp_{http['name']}__add"}
        os.chdir(ROOT)
        asyncio.run(measure(database, folder / "gw" / "data", agent_id, names, calls))
    finally:
        stub.terminate()
        gateway.stop()
        database.close()


def _open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


if __name__ == "__main__":
    main()
