"""Mixed traffic at a steady rate against one gateway process, for a fixed duration.

Open loop: every 1/rate seconds one operation is drawn from a weighted mix and started, whatever
the previous ones are doing (at most --concurrency in flight; beyond that a start is counted as
"shed", never silently delayed). The mix: chat completions (non-stream and stream, LLM stub
upstream), agent CRUD, memory writes and searches, KG upserts and searches, listings (agents,
custom tools, traces, usage), WebSocket `chat.send` and `status` over persistent sockets — as eight
tenants with their own API key scopes and agents.

Prints per operation: count, 4xx, 5xx, p50/p99/max latency; the gateway's RSS at the start (after
a warm-up), every 30 s and at the end; and whether anything answered 5xx or errored.

    .venv/bin/python bench/load_bench.py [--seconds 600] [--rate 40] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import statistics
import time
import uuid
from collections import defaultdict

import httpx
from common import TEST_TOKEN, Database, start_gateway, start_stub, workdir
from websockets.asyncio.client import connect

TENANTS = 8
WORDS = ("invoice billing migration vault harbor orchid quartz lantern meadow copper signal ember "
         "falcon glacier summit canyon prairie delta").split()


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def sentence() -> str:
    return " ".join(random.choice(WORDS) for _ in range(12))


MIX = {  # operation: weight (share of starts)
    "chat": 14, "chat_stream": 10, "agent_get": 8, "agents_list": 6, "agent_create": 3, "agent_update": 4,
    "agent_delete": 3, "memory_write": 6, "memory_search": 10, "kg_upsert": 5, "kg_search": 8,
    "tools_search": 3, "traces_list": 4, "usage_summary": 3, "ws_chat": 8, "ws_status": 5,
}


class Tenant:
    def __init__(self, n: int, key: str, agent: str) -> None:
        self.user = f"load-user-{n}"
        self.headers = {"Authorization": f"Bearer {key}", "X-GoClaw-User-Id": self.user}
        self.agent = agent
        self.entities: list[str] = []
        self.spare_agents: list[str] = []
        self.ws = None
        self.ws_lock = asyncio.Lock()
        self.ws_ids = itertools.count(1)


class Load:
    def __init__(self, url: str, ws_url: str, tenants: list[Tenant]) -> None:
        self.url, self.ws_url, self.tenants = url, ws_url, tenants
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.status: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.errors: dict[str, list[str]] = defaultdict(list)
        self.http: httpx.AsyncClient | None = None

    # --- operations: each returns an HTTP-like status ---

    async def chat(self, t: Tenant) -> int:
        body = {"model": f"goclaw:{t.agent}", "messages": [{"role": "user", "content": sentence()}]}
        return (await self.http.post("/v1/chat/completions", json=body, headers=t.headers)).status_code

    async def chat_stream(self, t: Tenant) -> int:
        body = {"model": f"goclaw:{t.agent}", "stream": True, "messages": [{"role": "user", "content": sentence()}]}
        async with self.http.stream("POST", "/v1/chat/completions", json=body, headers=t.headers) as response:
            async for _ in response.aiter_lines():
                pass
            return response.status_code

    async def agent_create(self, t: Tenant) -> int:
        name = f"tmp-{uuid.uuid4().hex[:10]}"
        response = await self.http.post("/v1/agents", headers=t.headers, json={
            "name": name, "provider": "stub", "model": "gpt-4o-mini", "system_prompt": sentence()})
        if response.status_code == 201:
            t.spare_agents.append(name)
        return response.status_code

    async def agent_update(self, t: Tenant) -> int:
        return (await self.http.put(f"/v1/agents/{t.agent}", headers=t.headers,
                                    json={"description": sentence()})).status_code

    async def agent_delete(self, t: Tenant) -> int:
        if not t.spare_agents:
            return await self.agent_create(t)
        name = t.spare_agents.pop()
        return (await self.http.delete(f"/v1/agents/{name}", headers=t.headers)).status_code

    async def agent_get(self, t: Tenant) -> int:
        return (await self.http.get(f"/v1/agents/{t.agent}", headers=t.headers)).status_code

    async def agents_list(self, t: Tenant) -> int:
        return (await self.http.get("/v1/agents", headers=t.headers)).status_code

    async def memory_write(self, t: Tenant) -> int:
        path = f"notes%2F{random.randrange(50)}.md"
        return (await self.http.put(f"/v1/agents/{t.agent}/memory/documents/{path}", headers=t.headers,
                                    json={"content": "\n\n".join(sentence() for _ in range(4))})).status_code

    async def memory_search(self, t: Tenant) -> int:
        return (await self.http.post(f"/v1/agents/{t.agent}/memory/search", headers=t.headers,
                                     json={"query": " ".join(random.sample(WORDS, 3)), "limit": 5})).status_code

    async def kg_upsert(self, t: Tenant) -> int:
        response = await self.http.post(f"/v1/agents/{t.agent}/kg/entities", headers=t.headers, json={
            "name": f"{random.choice(WORDS)} {random.randrange(200)}", "entity_type": "thing",
            "description": sentence()})
        if response.status_code in (200, 201) and len(t.entities) < 50:
            t.entities.append(response.json()["entity"]["id"])
        return response.status_code

    async def kg_search(self, t: Tenant) -> int:
        return (await self.http.get(f"/v1/agents/{t.agent}/kg/entities", headers=t.headers,
                                    params={"q": random.choice(WORDS)[:3], "limit": 10})).status_code

    async def tools_search(self, t: Tenant) -> int:
        return (await self.http.get("/v1/tools/custom", headers=t.headers,
                                    params={"search": random.choice(WORDS)})).status_code

    async def traces_list(self, t: Tenant) -> int:
        return (await self.http.get("/v1/traces", headers=t.headers, params={"limit": 20})).status_code

    async def usage_summary(self, t: Tenant) -> int:
        return (await self.http.get("/v1/usage/summary", headers=t.headers, params={"period": "24h"})).status_code

    async def _ws(self, t: Tenant, method: str, params: dict) -> int:
        async with t.ws_lock:  # one request at a time per socket: answers come back in order
            if t.ws is None:
                t.ws = await connect(self.ws_url, max_size=None)
                await self._ws_call(t, "connect", {"token": t.headers["Authorization"][7:], "user_id": t.user})
            return await self._ws_call(t, method, params)

    async def _ws_call(self, t: Tenant, method: str, params: dict) -> int:
        req_id = str(next(t.ws_ids))
        await t.ws.send(json.dumps({"type": "req", "id": req_id, "method": method, "params": params}))
        while True:
            frame = json.loads(await t.ws.recv())
            if frame["type"] == "res" and frame["id"] == req_id:
                if frame["ok"]:
                    return 200
                code = frame["error"]["code"]
                return {"INVALID_REQUEST": 400, "UNAUTHORIZED": 401, "NOT_FOUND": 404, "FAILED_PRECONDITION": 409,
                        "RESOURCE_EXHAUSTED": 429, "UNAVAILABLE": 503, "AGENT_TIMEOUT": 504}.get(code, 500)

    async def ws_chat(self, t: Tenant) -> int:
        return await self._ws(t, "chat.send", {"agentId": t.agent, "message": sentence(), "stream": True,
                                               "sessionKey": f"agent:{t.agent}:load-{t.user}"})

    async def ws_status(self, t: Tenant) -> int:
        return await self._ws(t, "status", {})

    async def one(self, name: str) -> None:
        tenant = random.choice(self.tenants)
        started = time.perf_counter()
        try:
            status = await getattr(self, name)(tenant)
        except Exception as exc:  # a dropped connection, a protocol error: a failure, counted
            status = 599
            if len(self.errors[name]) < 5:
                self.errors[name].append(f"{exc.__class__.__name__}: {exc}")
        self.latency[name].append((time.perf_counter() - started) * 1000)
        self.status[name][status] += 1

    async def run(self, seconds: float, rate: float, concurrency: int, pid: int) -> tuple[int, list[float]]:
        names, weights = zip(*MIX.items(), strict=True)
        limit = asyncio.Semaphore(concurrency)
        shed = 0
        tasks: set[asyncio.Task] = set()
        rss = [rss_mib(pid)]
        start = time.perf_counter()
        next_sample = 30.0
        n = 0

        async def guarded(name: str) -> None:
            try:
                await self.one(name)
            finally:
                limit.release()

        while (elapsed := time.perf_counter() - start) < seconds:
            if elapsed >= next_sample:
                rss.append(rss_mib(pid))
                print(f"  {elapsed:5.0f} s: {n} started, {shed} shed, RSS {rss[-1]:.1f} MiB", flush=True)
                next_sample += 30.0
            if limit.locked():
                shed += 1
            else:
                await limit.acquire()
                task = asyncio.create_task(guarded(random.choices(names, weights)[0]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            n += 1
            await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
        await asyncio.gather(*tasks)
        return shed, rss

    async def close(self) -> None:
        for tenant in self.tenants:
            if tenant.ws is not None:
                await tenant.ws.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def main_async(args) -> None:
    database = Database()
    gateway = start_gateway(database.dsn, workdir(), GOCLAW_RATE_LIMIT_RPM="0", GOCLAW_LOG_LEVEL="warning")
    stub, stub_url = start_stub()
    admin = {"Authorization": f"Bearer {TEST_TOKEN}", "X-GoClaw-User-Id": "load-admin"}
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as setup:
            (await setup.post("/v1/providers", headers=admin, json={
                "name": "stub", "provider_type": "openai_compat", "api_base": stub_url + "/v1",
                "api_key": "sk-load"})).raise_for_status()
            tenants = []
            for n in range(TENANTS):
                key = (await setup.post("/v1/api-keys", headers=admin, json={
                    "name": f"load {n}", "scopes": ["operator.read", "operator.write"]})).json()["key"]
                tenant = Tenant(n, key, f"load-bot-{n}")
                (await setup.post("/v1/agents", headers=tenant.headers, json={
                    "name": tenant.agent, "provider": "stub", "model": "gpt-4o-mini",
                    "system_prompt": "Answer briefly."})).raise_for_status()
                tenants.append(tenant)
        pid = gateway.process.pid
        load = Load(gateway.url, gateway.ws_url, tenants)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=60,
                                     limits=httpx.Limits(max_connections=args.concurrency)) as client:
            load.http = client
            print(f"warm-up 10 s at {args.rate:g} ops/s ...", flush=True)
            await load.run(10, args.rate, args.concurrency, pid)
            load.latency.clear()
            load.status.clear()
            print(f"run: {args.seconds} s at {args.rate:g} ops/s, at most {args.concurrency} in flight, "
                  f"{TENANTS} tenants", flush=True)
            shed, rss = await load.run(args.seconds, args.rate, args.concurrency, pid)
            rss.append(rss_mib(pid))
            await load.close()
        print()
        print(f"{'operation':15} {'count':>7} {'4xx':>5} {'5xx':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        total = fives = 0
        for name in MIX:
            values = load.latency.get(name) or [0.0]
            codes = load.status.get(name, {})
            count = sum(codes.values())
            fours = sum(c for s, c in codes.items() if 400 <= s < 500)
            five = sum(c for s, c in codes.items() if s >= 500)
            total += count
            fives += five
            print(f"{name:15} {count:7d} {fours:5d} {five:5d} {statistics.median(values):8.1f} "
                  f"{percentile(values, 0.99):8.1f} {max(values):8.1f}")
        print(f"{'all':15} {total:7d}        {fives:5d}   ({total / args.seconds:.1f} ops/s achieved, {shed} shed)")
        print(f"gateway RSS (MiB): start {rss[0]:.1f}, end {rss[-1]:.1f}, max {max(rss):.1f}, "
              f"samples {' '.join(f'{v:.0f}' for v in rss)}")
        for name, errors in load.errors.items():
            print(f"errors in {name}: {errors}")
        tracebacks = gateway.log().count("Traceback")
        print(f"5xx: {fives}; tracebacks in the gateway log: {tracebacks}")
    finally:
        stub.terminate()
        gateway.stop()
        database.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--rate", type=float, default=40.0, help="operations started per second")
    parser.add_argument("--concurrency", type=int, default=64, help="operations in flight at most")
    args = parser.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
