"""Usage analytics at scale: 1,000,000 LLM spans (250,000 traces) spread over 30 days, 20 agents,
4 models, 50 users; then the 30-day summary, time series and cost summary over HTTP.

The rows are generated in SQL exactly as the trace writer would leave them (traces, spans and the
hourly rollup, see domain/tracing.py), so the endpoints read what production would read.

    .venv/bin/python bench/usage_bench.py [--spans 1000000] [--runs 50]
"""

from __future__ import annotations

import argparse
import statistics
import time

import httpx
import psycopg
from common import TEST_TOKEN, Database, start_gateway, workdir

AGENTS = """
INSERT INTO agents (agent_key, owner_id, model)
SELECT 'usage-' || g, 'user-' || (g % 50), 'gpt-4o-mini' FROM generate_series(1, 20) g
"""
TRACES = """
INSERT INTO traces (id, agent_id, user_id, start_time, created_at, duration_ms, total_input_tokens,
                    total_output_tokens, total_cost, span_count, llm_call_count, tool_call_count, status)
SELECT gen_random_uuid(), a.ids[1 + g %% 20], 'user-' || (g %% 50), ts, ts, 100 + g %% 900, 400 * 4, 50 * 4,
       0.0004, 4, 4, g %% 3, CASE WHEN g %% 97 = 0 THEN 'error' ELSE 'completed' END
FROM (SELECT array_agg(id ORDER BY id) AS ids FROM agents) a, generate_series(1, %s) g,
     LATERAL (SELECT now() - (g * interval '30 days' / %s) AS ts) t
"""
SPANS = """
INSERT INTO spans (trace_id, agent_id, span_type, name, start_time, created_at, duration_ms, model, provider,
                   input_tokens, output_tokens, total_cost)
SELECT t.id, t.agent_id, 'llm_call', m.model, t.start_time, t.start_time, 25, m.model, 'openai', 400, 50, 0.0001
FROM traces t CROSS JOIN (VALUES ('gpt-4o-mini'), ('gpt-4o'), ('claude-sonnet-4'), ('gemini-2.0-flash')) m(model)
"""
ROLLUP = """
INSERT INTO usage_hourly (bucket_hour, agent_id, user_id, provider, model, request_count, llm_call_count,
                          tool_call_count, error_count, input_tokens, output_tokens, total_cost, total_duration_ms)
SELECT date_trunc('hour', s.start_time), s.agent_id, t.user_id, s.provider, s.model,
       count(DISTINCT t.id) FILTER (WHERE s.model = 'gpt-4o-mini'), count(*),
       coalesce(sum(t.tool_call_count) FILTER (WHERE s.model = 'gpt-4o-mini'), 0),
       count(DISTINCT t.id) FILTER (WHERE s.model = 'gpt-4o-mini' AND t.status = 'error'),
       sum(s.input_tokens), sum(s.output_tokens), sum(s.total_cost),
       coalesce(sum(t.duration_ms) FILTER (WHERE s.model = 'gpt-4o-mini'), 0)
FROM spans s JOIN traces t ON t.id = s.trace_id
GROUP BY 1, 2, 3, 4, 5
"""
ROLLUP_GLOBAL = """
INSERT INTO usage_hourly_global (bucket_hour, agent_id, provider, model, request_count, llm_call_count,
    tool_call_count, error_count, input_tokens, output_tokens, total_cost, total_duration_ms)
SELECT bucket_hour, agent_id, provider, model, sum(request_count), sum(llm_call_count), sum(tool_call_count),
       sum(error_count), sum(input_tokens), sum(output_tokens), sum(total_cost), sum(total_duration_ms)
FROM usage_hourly GROUP BY 1, 2, 3, 4
"""
ACTIVE_USERS = """
INSERT INTO usage_daily_users (day, user_id, agent_id)
SELECT DISTINCT (bucket_hour AT TIME ZONE 'UTC')::date, user_id, agent_id FROM usage_hourly WHERE request_count > 0
"""


def timed(client: httpx.Client, path: str, params: dict, runs: int) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        client.get(path, params=params).raise_for_status()
        samples.append((time.perf_counter() - start) * 1000)
    ordered = sorted(samples)
    return statistics.median(samples), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    database = Database()
    gateway = start_gateway(database.dsn, workdir())
    try:
        traces = args.spans // 4
        started = time.perf_counter()
        with psycopg.connect(database.dsn, autocommit=True) as conn:
            conn.execute(AGENTS)
            conn.execute(TRACES, (traces, traces))
            conn.execute(SPANS)
            conn.execute(ROLLUP)
            conn.execute(ROLLUP_GLOBAL)
            conn.execute(ACTIVE_USERS)
            conn.execute("ANALYZE")
            spans = conn.execute("SELECT count(*) FROM spans").fetchone()[0]
            rollup_rows = conn.execute("SELECT count(*) FROM usage_hourly").fetchone()[0]
        print(f"loaded {spans:,} spans / {traces:,} traces / {rollup_rows:,} rollup rows "
              f"in {time.perf_counter() - started:.0f}s")
        with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {TEST_TOKEN}"}, timeout=30) as c:
            summary = c.get("/v1/usage/summary", params={"period": "30d"}).json()["current"]
            print(f"30-day summary: {summary['requests']:,} requests, {summary['llm_calls']:,} LLM calls, "
                  f"${summary['cost']:.2f}")
            print(f"{'endpoint (over HTTP, sequential)':44} {'p50 ms':>8} {'p99 ms':>8}")
            for label, path, params in (
                ("GET /v1/usage/summary?period=30d", "/v1/usage/summary", {"period": "30d"}),
                ("GET /v1/usage/timeseries?period=30d", "/v1/usage/timeseries", {"period": "30d"}),
                ("GET /v1/costs/summary (30 days)", "/v1/costs/summary", {}),
                ("GET /v1/usage/timeseries?period=1h", "/v1/usage/timeseries", {"period": "1h"}),
            ):
                p50, p99 = timed(c, path, params, args.runs)
                print(f"{label:44} {p50:8.1f} {p99:8.1f}")
        tenant = {"Authorization": f"Bearer {TEST_TOKEN}", "X-GoClaw-User-Id": "user-7"}
        key = httpx.post(gateway.url + "/v1/api-keys", headers=tenant, json={"name": "t", "scopes": ["operator.read"]})
        with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {key.json()['key']}",
                                                         "X-GoClaw-User-Id": "user-7"}, timeout=30) as c:
            for label, path, params in (
                ("one tenant: GET /v1/usage/summary?period=30d", "/v1/usage/summary", {"period": "30d"}),
                ("one tenant: GET /v1/costs/summary", "/v1/costs/summary", {}),
            ):
                p50, p99 = timed(c, path, params, args.runs)
                print(f"{label:44} {p50:8.1f} {p99:8.1f}")
    finally:
        gateway.stop()
        database.close()


if __name__ == "__main__":
    main()
