"""WebSocket RPC figures on one gateway process:

1. memory per idle connection: open N authenticated sockets (default 1,000), RSS delta of the
   gateway process / N;
2. `chat.send` round trip against the LLM stub at concurrency C (default 32): p50/p99 latency from
   sending the request to its `res` (all `agent` events included) and messages per second.

    .venv/bin/python bench/ws_bench.py [--idle 1000] [--concurrency 32] [--messages 2000] [--stream]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import statistics
import time
import uuid

import httpx
from common import TEST_TOKEN, Database, start_gateway, start_stub, workdir
from websockets.asyncio.client import connect


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Client:
    def __init__(self, ws) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def call(self, method: str, params: dict) -> dict:
        req_id = str(next(self.ids))
        await self.ws.send(json.dumps({"type": "req", "id": req_id, "method": method, "params": params}))
        while True:
            frame = json.loads(await self.ws.recv())
            if frame["type"] == "res" and frame["id"] == req_id:
                if not frame["ok"]:
                    raise RuntimeError(f"{method}: {frame['error']}")
                return frame["payload"]


async def open_client(url: str, user: str, token: str = TEST_TOKEN) -> Client:
    ws = await connect(url, open_timeout=30, ping_interval=None, compression=None)
    client = Client(ws)
    await client.call("connect", {"token": token, "user_id": user})
    return client


async def idle_memory(url: str, pid: int, count: int) -> dict:
    warm = [await open_client(url, "warm") for _ in range(50)]  # first-use allocations
    for client in warm:
        await client.ws.close()
    await asyncio.sleep(1.0)
    before = rss_kib(pid)
    clients: list[Client] = []
    started = time.perf_counter()
    for start in range(0, count, 100):  # 100 handshakes at a time
        clients += await asyncio.gather(*(open_client(url, f"idle-{i}") for i in range(start, min(count, start + 100))))
    opened_s = time.perf_counter() - started
    await asyncio.sleep(2.0)
    after = rss_kib(pid)
    health = await clients[0].call("health", {})  # still answering with all of them open
    await asyncio.gather(*(c.ws.close() for c in clients))
    return {"connections": count, "rss_before_mib": before / 1024, "rss_after_mib": after / 1024,
            "per_connection_kib": (after - before) / count, "open_s": opened_s, "db": health["database"]}


async def chat_round_trips(url: str, token: str, agent: str, concurrency: int, messages: int, stream: bool) -> dict:
    # one user per socket, with an operator key: each socket receives its own run's events only
    # (an admin socket receives every run's events, as a dashboard should)
    clients = [await open_client(url, f"chat-{i}", token) for i in range(concurrency)]
    latencies: list[float] = []
    remaining = itertools.count()

    async def worker(index: int, client: Client) -> None:
        key = f"agent:{agent}:ws-bench-{index}-{uuid.uuid4().hex[:6]}"
        while next(remaining) < messages:
            began = time.perf_counter()
            reply = await client.call("chat.send", {"agentId": agent, "sessionKey": key, "message": "ping",
                                                    "stream": stream})
            latencies.append(time.perf_counter() - began)
            assert reply["content"] == "echo: ping", reply

    for client in clients:  # warm-up: one message each
        await client.call("chat.send", {"agentId": agent, "message": "warm", "stream": stream})
    started = time.perf_counter()
    await asyncio.gather(*(worker(i, c) for i, c in enumerate(clients)))
    elapsed = time.perf_counter() - started
    await asyncio.gather(*(c.ws.close() for c in clients))
    latencies.sort()
    return {"messages": len(latencies), "seconds": elapsed, "per_s": len(latencies) / elapsed,
            "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--stream", action="store_true", help="streamed answers (4 chunk events per reply)")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.idle + 256)), hard))
    database = Database()
    stub, stub_url = start_stub()
    gateway = start_gateway(database.dsn, workdir(), GOCLAW_RATE_LIMIT_RPM="0", GOCLAW_LOG_LEVEL="warning",
                            GOCLAW_DB_POOL_MAX=os.environ.get("GOCLAW_DB_POOL_MAX", "10"))
    try:
        headers = {"Authorization": f"Bearer {TEST_TOKEN}", "X-GoClaw-User-Id": "bench"}
        provider = httpx.post(gateway.url + "/v1/providers", headers=headers, json={
            "name": "stub", "provider_type": "openai_compat", "api_base": stub_url + "/v1",
            "api_key": "sk-bench-000000",
        })
        provider.raise_for_status()
        agent = httpx.post(gateway.url + "/v1/agents", headers=headers, json={
            "name": "bench-bot", "provider": "stub", "model": "gpt-4o-mini", "is_default": True,
        })
        agent.raise_for_status()
        key = httpx.post(gateway.url + "/v1/api-keys", headers=headers, json={
            "name": "bench", "scopes": ["operator.read", "operator.write"]}).json()["key"]
        pid = gateway.process.pid
        idle = asyncio.run(idle_memory(gateway.ws_url, pid, args.idle))
        chat = asyncio.run(chat_round_trips(gateway.ws_url, key, "bench-bot", args.concurrency, args.messages,
                                            args.stream))
        print(f"one gateway process, {os.cpu_count()} cores shared with the client and the stub")
        print(f"idle: {idle['connections']} authenticated connections opened in {idle['open_s']:.2f}s; "
              f"gateway RSS {idle['rss_before_mib']:.1f} → {idle['rss_after_mib']:.1f} MiB = "
              f"{idle['per_connection_kib']:.1f} KiB per connection")
        mode = "streamed" if args.stream else "non-streamed"
        print(f"chat.send ({mode}, stub upstream), concurrency {args.concurrency}: {chat['messages']} messages in "
              f"{chat['seconds']:.1f}s = {chat['per_s']:.0f} msg/s; p50 {chat['p50_ms']:.1f} ms, "
              f"p99 {chat['p99_ms']:.1f} ms")
    finally:
        gateway.stop()
        stub.terminate()
        database.close()


if __name__ == "__main__":
    main()
