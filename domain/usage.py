"""Traces, costs, usage analytics and delegation records, read back for the API.

Usage and cost answers come from `usage_hourly` (kept by the trace writer, see domain/tracing.py),
so a 30-day summary reads at most 720 rows per agent/model/user; the 1-hour time series is the
exception and reads the traces themselves, in 5-minute buckets. Non-admin callers only ever see
their own tenant's rows."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import db
from auth import Principal
from domain.paging import page
from gateway.errors import ApiError, bad_request, not_found

TRACE_COLUMNS = """
t.id, t.parent_trace_id, t.agent_id, a.agent_key, t.user_id, t.session_key, t.run_id, t.name, t.channel,
t.start_time, t.end_time, t.duration_ms, t.input_preview, t.output_preview, t.total_input_tokens,
t.total_output_tokens, t.total_cost::float8 AS total_cost, t.span_count, t.llm_call_count, t.tool_call_count,
t.status, t.error, t.metadata, t.created_at
"""
TRACE_FILTER = """
WHERE (%(tenant)s::text IS NULL OR t.user_id = %(tenant)s)
  AND (%(agent_id)s::uuid IS NULL OR t.agent_id = %(agent_id)s)
  AND (%(user_id)s::text IS NULL OR t.user_id = %(user_id)s)
  AND (%(session_key)s::text IS NULL OR t.session_key = %(session_key)s)
  AND (%(status)s::text IS NULL OR t.status = %(status)s)
  AND (%(channel)s::text IS NULL OR t.channel = %(channel)s)
"""
LIST_TRACES = f"""
SELECT {TRACE_COLUMNS} FROM traces t LEFT JOIN agents a ON a.id = t.agent_id {TRACE_FILTER}
ORDER BY t.created_at DESC, t.id DESC LIMIT %(limit)s OFFSET %(offset)s
"""
COUNT_TRACES = f"SELECT count(*) AS n FROM traces t {TRACE_FILTER}"
GET_TRACE = f"""
SELECT {TRACE_COLUMNS} FROM traces t LEFT JOIN agents a ON a.id = t.agent_id
WHERE t.id = %(id)s AND (%(tenant)s::text IS NULL OR t.user_id = %(tenant)s)
"""
TRACE_SPANS = """
SELECT id, trace_id, parent_span_id, agent_id, span_type, name, start_time, end_time, duration_ms, status, error,
       model, provider, input_tokens, output_tokens, total_cost::float8 AS total_cost, finish_reason, tool_name,
       tool_call_id, input_preview, output_preview, metadata, created_at
FROM spans WHERE trace_id = %s ORDER BY start_time, id
"""
TRACE_MESSAGES = """
SELECT role, content, tool_calls, tool_call_id, created_at FROM session_messages WHERE run_id = %s ORDER BY id
"""

# Rollup rows in a window: admins read the global rollup (no user dimension, few rows), tenants
# the per-user rollup through its (user_id, bucket_hour) index.
ROLLUP_ROWS = {
    "global": """SELECT * FROM usage_hourly_global
        WHERE bucket_hour >= %(start)s AND bucket_hour < %(end)s
          AND (%(agent_id)s::uuid IS NULL OR agent_id = %(agent_id)s)""",
    "tenant": """SELECT * FROM usage_hourly
        WHERE user_id = %(tenant)s AND bucket_hour >= %(start)s AND bucket_hour < %(end)s
          AND (%(agent_id)s::uuid IS NULL OR agent_id = %(agent_id)s)""",
}
COSTS = {scope: f"""
SELECT nullif(u.agent_id, '00000000-0000-0000-0000-000000000000') AS agent_id, a.agent_key, u.provider, u.model,
       sum(u.total_cost)::float8 AS total_cost, sum(u.input_tokens)::bigint AS input_tokens,
       sum(u.output_tokens)::bigint AS output_tokens, sum(u.llm_call_count)::bigint AS llm_calls,
       sum(u.request_count)::bigint AS requests
FROM ({rows}) u LEFT JOIN agents a ON a.id = u.agent_id
GROUP BY 1, 2, 3, 4 ORDER BY total_cost DESC, requests DESC
""" for scope, rows in ROLLUP_ROWS.items()}
SUMMARY = {scope: f"""
SELECT coalesce(sum(request_count), 0)::bigint AS requests, coalesce(sum(input_tokens), 0)::bigint AS input_tokens,
       coalesce(sum(output_tokens), 0)::bigint AS output_tokens, coalesce(sum(total_cost), 0)::float8 AS cost,
       coalesce(sum(error_count), 0)::bigint AS errors, coalesce(sum(llm_call_count), 0)::bigint AS llm_calls,
       coalesce(sum(tool_call_count), 0)::bigint AS tool_calls,
       coalesce(sum(total_duration_ms) / nullif(sum(request_count), 0), 0)::float8 AS avg_duration_ms
FROM ({rows}) u
""" for scope, rows in ROLLUP_ROWS.items()}
ACTIVE_USERS = """
SELECT count(DISTINCT user_id) AS n FROM usage_daily_users
WHERE day >= (%(start)s::timestamptz AT TIME ZONE 'UTC')::date
  AND day < (%(end)s::timestamptz AT TIME ZONE 'UTC')::date + 1
  AND (%(agent_id)s::uuid IS NULL OR agent_id = %(agent_id)s)
"""
SERIES_FROM_ROLLUP = {scope: f"""
WITH buckets AS (
    SELECT generate_series(%(start)s::timestamptz, %(end)s::timestamptz - %(step)s::interval, %(step)s::interval) AS b
), rows AS (
    SELECT date_bin(%(step)s::interval, bucket_hour, %(start)s::timestamptz) AS b, * FROM ({rows}) u
)
SELECT buckets.b AS bucket_time,
       coalesce(sum(rows.request_count), 0)::bigint AS request_count,
       coalesce(sum(rows.llm_call_count), 0)::bigint AS llm_call_count,
       coalesce(sum(rows.tool_call_count), 0)::bigint AS tool_call_count,
       coalesce(sum(rows.error_count), 0)::bigint AS error_count,
       coalesce(sum(rows.input_tokens), 0)::bigint AS input_tokens,
       coalesce(sum(rows.output_tokens), 0)::bigint AS output_tokens,
       coalesce(sum(rows.total_cost), 0)::float8 AS total_cost,
       coalesce(sum(rows.total_duration_ms) / nullif(sum(rows.request_count), 0), 0)::float8 AS avg_duration_ms
FROM buckets LEFT JOIN rows ON rows.b = buckets.b
GROUP BY buckets.b ORDER BY buckets.b
""" for scope, rows in ROLLUP_ROWS.items()}
SERIES_FROM_TRACES = """
WITH buckets AS (
    SELECT generate_series(%(start)s::timestamptz, %(end)s::timestamptz - %(step)s::interval, %(step)s::interval) AS b
), rows AS (
    SELECT date_bin(%(step)s::interval, t.start_time, %(start)s::timestamptz) AS b, t.* FROM traces t
    WHERE t.start_time >= %(start)s AND t.start_time < %(end)s AND t.parent_trace_id IS NULL
      AND (%(tenant)s::text IS NULL OR t.user_id = %(tenant)s)
      AND (%(agent_id)s::uuid IS NULL OR t.agent_id = %(agent_id)s)
)
SELECT buckets.b AS bucket_time,
       count(rows.id)::bigint AS request_count,
       coalesce(sum(rows.llm_call_count), 0)::bigint AS llm_call_count,
       coalesce(sum(rows.tool_call_count), 0)::bigint AS tool_call_count,
       count(rows.id) FILTER (WHERE rows.status = 'error')::bigint AS error_count,
       coalesce(sum(rows.total_input_tokens), 0)::bigint AS input_tokens,
       coalesce(sum(rows.total_output_tokens), 0)::bigint AS output_tokens,
       coalesce(sum(rows.total_cost), 0)::float8 AS total_cost,
       coalesce(avg(rows.duration_ms), 0)::float8 AS avg_duration_ms
FROM buckets LEFT JOIN rows ON rows.b = buckets.b
GROUP BY buckets.b ORDER BY buckets.b
"""
DELEGATION_FILTER = """
WHERE (%(tenant)s::text IS NULL OR user_id = %(tenant)s)
  AND (%(source)s::uuid IS NULL OR source_agent_id = %(source)s)
  AND (%(target)s::uuid IS NULL OR target_agent_id = %(target)s)
  AND (%(status)s::text IS NULL OR status = %(status)s)
"""
LIST_DELEGATIONS = f"""
SELECT id, source_agent_id, target_agent_id, user_id, task, mode, status, result, error, iterations, trace_id,
       duration_ms, metadata, created_at, updated_at, completed_at
FROM delegation_history {DELEGATION_FILTER}
ORDER BY created_at DESC, id DESC LIMIT %(limit)s OFFSET %(offset)s
"""
COUNT_DELEGATIONS = f"SELECT count(*) AS n FROM delegation_history {DELEGATION_FILTER}"

# period → (window, bucket size, source)
SERIES_PERIODS = {
    "1h": (timedelta(hours=1), timedelta(minutes=5), "traces"),
    "24h": (timedelta(hours=24), timedelta(hours=1), "rollup"),
    "7d": (timedelta(days=7), timedelta(hours=6), "rollup"),
    "30d": (timedelta(days=30), timedelta(days=1), "rollup"),
}
SUMMARY_PERIODS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}


def _tenant(principal: Principal) -> str | None:
    return None if principal.is_admin else principal.user_id


def _scope(principal: Principal) -> str:
    return "global" if principal.is_admin else "tenant"


async def _totals(principal: Principal, params: dict) -> dict:
    totals = await db.fetch_one(SUMMARY[_scope(principal)], params)
    if principal.is_admin:
        totals["unique_users"] = (await db.fetch_one(ACTIVE_USERS, params))["n"]
    else:
        totals["unique_users"] = 1 if totals["requests"] else 0
    return totals


def _uuid(value: str | None, what: str) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ApiError(400, "error.invalid_id", what) from None


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


async def list_traces(principal: Principal, limit: int, offset: int, **filters: str | None) -> dict:
    limit, offset = page(limit, offset)
    params: dict[str, Any] = {
        "tenant": _tenant(principal), "agent_id": _uuid(filters.get("agent_id"), "agent"),
        "user_id": filters.get("user_id") or None, "session_key": filters.get("session_key") or None,
        "status": filters.get("status") or None, "channel": filters.get("channel") or None,
        "limit": limit, "offset": offset,
    }
    rows = await db.fetch_all(LIST_TRACES, params)
    total = (await db.fetch_one(COUNT_TRACES, params))["n"]
    return {"traces": rows, "total": total, "limit": limit, "offset": offset}


async def get_trace(principal: Principal, trace_id: str) -> dict:
    ident = _uuid(trace_id, "trace")
    trace = await db.fetch_one(GET_TRACE, {"id": ident, "tenant": _tenant(principal)})
    if trace is None:
        raise not_found("trace", trace_id)
    spans = await db.fetch_all(TRACE_SPANS, (ident,))
    messages = await db.fetch_all(TRACE_MESSAGES, (trace["run_id"],)) if trace["run_id"] else []
    return {"trace": trace, "spans": spans, "messages": messages}


def parse_time(text: str) -> datetime:
    """RFC 3339 / ISO 8601; fractions beyond microseconds are cut, a missing zone means UTC."""
    cleaned = re.sub(r"(\.\d{6})\d+", r"\1", text.strip())
    try:
        moment = datetime.fromisoformat(cleaned.replace("z", "Z"))
    except ValueError:
        raise bad_request(f"not an ISO 8601 date-time: {text[:40]}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _range(start: str | None, end: str | None, default: timedelta) -> tuple[datetime, datetime]:
    """The [from, to) window; an empty or inverted window simply holds no data."""
    until = parse_time(end) if end else datetime.now(UTC)
    since = parse_time(start) if start else until - default
    return since, max(since, until)


async def cost_summary(principal: Principal, start: str | None, end: str | None, agent_id: str | None) -> dict:
    since, until = _range(start, end, timedelta(days=30))
    params = {"start": _hour(since), "end": until, "tenant": _tenant(principal), "agent_id": _uuid(agent_id, "agent")}
    rows = await db.fetch_all(COSTS[_scope(principal)], params)
    return {"rows": rows, "total_cost": sum(r["total_cost"] for r in rows), "from": since, "to": until}


async def timeseries(principal: Principal, period: str | None, agent_id: str | None) -> dict:
    period = period or "24h"
    window, step, source = SERIES_PERIODS[period]
    now = datetime.now(UTC)
    if source == "traces":
        end = now.replace(second=0, microsecond=0) + timedelta(minutes=5 - now.minute % 5)
    else:
        end = _hour(now) + timedelta(hours=1)
        if step >= timedelta(days=1):
            end = end.replace(hour=0) + timedelta(days=1)
    params = {"start": end - window, "end": end, "step": step, "tenant": _tenant(principal),
              "agent_id": _uuid(agent_id, "agent")}
    query = SERIES_FROM_TRACES if source == "traces" else SERIES_FROM_ROLLUP[_scope(principal)]
    rows = await db.fetch_all(query, params)
    return {"period": period, "bucket_seconds": int(step.total_seconds()), "points": rows}


async def summary(principal: Principal, period: str | None, agent_id: str | None) -> dict:
    """Totals for the period and for the same-length period just before it (hour granularity)."""
    period = period or "24h"
    now = datetime.now(UTC)
    if period == "today":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        window = timedelta(days=1)
    else:
        window = SUMMARY_PERIODS[period]
        start = _hour(now - window) + timedelta(hours=1)
    end = _hour(now) + timedelta(hours=1)
    base = {"tenant": _tenant(principal), "agent_id": _uuid(agent_id, "agent")}
    current = await _totals(principal, {**base, "start": start, "end": end})
    previous = await _totals(principal, {**base, "start": start - window, "end": start})
    return {"period": period, "from": start, "to": end, "current": current, "previous": previous}


async def list_delegations(principal: Principal, limit: int, offset: int, **filters: str | None) -> dict:
    limit, offset = page(limit, offset)
    params = {
        "tenant": _tenant(principal), "source": _uuid(filters.get("source_agent_id"), "agent"),
        "target": _uuid(filters.get("target_agent_id"), "agent"), "status": filters.get("status") or None,
        "limit": limit, "offset": offset,
    }
    rows = await db.fetch_all(LIST_DELEGATIONS, params)
    total = (await db.fetch_one(COUNT_DELEGATIONS, params))["n"]
    return {"records": rows, "total": total, "limit": limit, "offset": offset}
