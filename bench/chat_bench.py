"""Chat completions: the gateway (auth, agent, provider, persistence and tracing on) against the
stub upstream called directly, in the same run.

Prints added latency p50/p99 at concurrency 1 (sequential requests, Python client), requests/s at
concurrency 32 (wrk), for non-streaming and streaming, and time to first chunk when streaming.
Also the gateway's CPU time per request under that load (read from /proc, so other processes on
the machine do not blur it), next to the CPU time of the bare upstream call alone: the gateway's
own httpx client calling the stub in a loop, in this process — the floor under any request.

    .venv/bin/python bench/chat_bench.py [--requests 300] [--seconds 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import httpx
from common import TEST_TOKEN, Database, start_gateway, start_stub, workdir, wrk

LUA = """wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"
"""


def sequential(targets: list[tuple[str, dict, dict]], n: int, stream: bool) -> list[dict]:
    """Latency (ms) of n sequential requests to each (url, body, headers) target, taken in turns
    so that drift on a noisy machine hits every target alike; for streams also time to first
    content chunk."""
    clients = [httpx.Client(headers=headers, timeout=30) for _, _, headers in targets]
    totals: list[list[float]] = [[] for _ in targets]
    firsts: list[list[float]] = [[] for _ in targets]
    try:
        for _ in range(n):
            for i, (client, (url, body, _)) in enumerate(zip(clients, targets, strict=True)):
                start = time.perf_counter()
                if stream:
                    with client.stream("POST", url, json=body) as response:
                        first = None
                        for line in response.iter_lines():
                            if first is None and '"content": "' in line and '"content": ""' not in line:
                                first = time.perf_counter()
                    firsts[i].append(((first or time.perf_counter()) - start) * 1000)
                else:
                    client.post(url, json=body).raise_for_status()
                totals[i].append((time.perf_counter() - start) * 1000)
    finally:
        for client in clients:
            client.close()
    return [{"p50": statistics.median(t), "p99": _p99(t), "ttfb_p50": statistics.median(f) if f else None}
            for t, f in zip(totals, firsts, strict=True)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def upstream_call_cpu_ms(stub_url: str, n: int = 1000) -> float:
    """CPU ms per call of the gateway's upstream client (adapter + httpx + pool) alone."""
    os.environ.setdefault("GOCLAW_ALLOW_PRIVATE_NETWORKS", "127.0.0.0/8")
    from gateway import netguard
    from llm import ChatRequest, Message, OpenAICompatClient

    async def calls() -> float:
        http = netguard.upstream_http_client()  # exactly the gateway's upstream client
        adapter = OpenAICompatClient(http, stub_url + "/v1", "sk-bench")
        request = ChatRequest(model="gpt-4o-mini", messages=[Message("user", "hello there")], system="Be brief.")
        for _ in range(50):
            await adapter.chat(request)
        start = time.process_time()
        for _ in range(n):
            await adapter.chat(request)
        elapsed = time.process_time() - start
        await http.aclose()
        return elapsed / n * 1000

    import uvloop

    return uvloop.run(calls())


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def lua_file(body: dict, headers: dict) -> str:
    script = LUA % json.dumps(body).replace("'", "\\'")
    script += "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items())
    handle = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    handle.write(script)
    handle.close()
    return handle.name


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--seconds", type=int, default=8)
    args = parser.parse_args()
    database = Database()
    gateway = start_gateway(database.dsn, workdir(), GOCLAW_RATE_LIMIT_RPM="0")
    stub, stub_url = start_stub()
    admin = {"Authorization": f"Bearer {TEST_TOKEN}", "X-GoClaw-User-Id": "bench"}
    try:
        httpx.post(gateway.url + "/v1/providers", headers=admin, json={
            "name": "stub", "provider_type": "openai_compat", "api_base": stub_url + "/v1", "api_key": "sk-bench"},
        ).raise_for_status()
        httpx.post(gateway.url + "/v1/agents", headers=admin, json={
            "name": "bench", "provider": "stub", "model": "gpt-4o-mini", "system_prompt": "Be brief."},
        ).raise_for_status()
        key = httpx.post(gateway.url + "/v1/api-keys", headers=admin,
                         json={"name": "bench", "scopes": ["operator.write"]}).json()["key"]
        user = {"Authorization": f"Bearer {key}", "X-GoClaw-User-Id": "bench"}
        messages = [{"role": "user", "content": "hello there"}]
        direct = {"model": "gpt-4o-mini", "messages": messages}
        via = {"model": "goclaw:bench", "messages": messages}
        rows = []
        for stream in (False, True):
            extra = {"stream": True} if stream else {}
            stub_seq, gw_seq = sequential([(stub_url + "/v1/chat/completions", {**direct, **extra}, {}),
                                           (gateway.url + "/v1/chat/completions", {**via, **extra}, user)],
                                          args.requests, stream)
            stub_load = wrk(stub_url + "/v1/chat/completions", seconds=args.seconds,
                            script=lua_file({**direct, **extra}, {}))
            cpu_before = cpu_seconds(gateway.process.pid)
            gw_load = wrk(gateway.url + "/v1/chat/completions", seconds=args.seconds,
                          script=lua_file({**via, **extra}, user))
            cpu_ms = (cpu_seconds(gateway.process.pid) - cpu_before) * 1000 / max(1, gw_load["rps"] * args.seconds)
            rows.append(("stream" if stream else "non-stream", stub_seq, gw_seq, stub_load, gw_load, cpu_ms))
        floor = upstream_call_cpu_ms(stub_url)
        print("one gateway worker, persistence + tracing on; stub upstream on loopback")
        print(f"{'mode':11} {'added p50 ms':>12} {'added p99 ms':>12} {'ttfb p50 ms':>11} "
              f"{'stub req/s c32':>15} {'gateway req/s c32':>18} {'non-2xx':>8} {'gateway CPU ms/req':>19}")
        for mode, stub_seq, gw_seq, stub_load, gw_load, cpu_ms in rows:
            ttfb = f"{gw_seq['ttfb_p50']:.2f}" if gw_seq["ttfb_p50"] is not None else "-"
            print(f"{mode:11} {gw_seq['p50'] - stub_seq['p50']:12.2f} {gw_seq['p99'] - stub_seq['p99']:12.2f} "
                  f"{ttfb:>11} {stub_load['rps']:15.0f} {gw_load['rps']:18.0f} {gw_load['errors']:8d} {cpu_ms:19.2f}")
        print(f"upstream call alone (the gateway's adapter + httpx client, in-process): {floor:.2f} ms CPU per call")
        traces = httpx.get(gateway.url + "/v1/traces", headers=admin, params={"limit": 1}).json()["total"]
        print(f"traces recorded: {traces}")
    finally:
        stub.terminate()
        gateway.stop()
        database.close()


if __name__ == "__main__":
    main()
