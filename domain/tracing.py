"""Run traces: one trace per agent run, one span per LLM call and per tool call.

A `TraceRecorder` collects spans in memory while the run goes on and hands the finished trace to
the write-behind writer, together with the hourly usage rollup rows, so the response path never
waits on these writes. Rollups are what usage/cost queries read (see domain/usage.py)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from db.batch import CopyInto
from db.ids import uuid7
from domain import pricing
from llm import Usage

PREVIEW = 500
NO_AGENT = uuid.UUID(int=0)

INSERT_TRACE = CopyInto("traces", (
    "id", "agent_id", "user_id", "session_key", "run_id", "name", "channel", "start_time", "end_time", "duration_ms",
    "input_preview", "output_preview", "total_input_tokens", "total_output_tokens", "total_cost", "span_count",
    "llm_call_count", "tool_call_count", "status", "error", "metadata", "created_at",
))
INSERT_SPAN = CopyInto("spans", (
    "id", "trace_id", "agent_id", "span_type", "name", "start_time", "end_time", "duration_ms", "status", "error",
    "model", "provider", "input_tokens", "output_tokens", "total_cost", "finish_reason", "tool_name", "tool_call_id",
    "input_preview", "output_preview", "metadata", "created_at",
))
ROLLUP_ADD = """
    request_count = u.request_count + EXCLUDED.request_count,
    llm_call_count = u.llm_call_count + EXCLUDED.llm_call_count,
    tool_call_count = u.tool_call_count + EXCLUDED.tool_call_count,
    error_count = u.error_count + EXCLUDED.error_count,
    input_tokens = u.input_tokens + EXCLUDED.input_tokens,
    output_tokens = u.output_tokens + EXCLUDED.output_tokens,
    total_cost = u.total_cost + EXCLUDED.total_cost,
    total_duration_ms = u.total_duration_ms + EXCLUDED.total_duration_ms
"""
ROLLUP_COUNTS = """request_count, llm_call_count, tool_call_count, error_count, input_tokens, output_tokens,
    total_cost, total_duration_ms"""
UPSERT_USAGE = f"""
INSERT INTO usage_hourly AS u (bucket_hour, agent_id, user_id, provider, model, {ROLLUP_COUNTS})
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (bucket_hour, agent_id, user_id, provider, model) DO UPDATE SET {ROLLUP_ADD}
"""
UPSERT_USAGE_GLOBAL = f"""
INSERT INTO usage_hourly_global AS u (bucket_hour, agent_id, provider, model, {ROLLUP_COUNTS})
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (bucket_hour, agent_id, provider, model) DO UPDATE SET {ROLLUP_ADD}
"""
MARK_ACTIVE_USER = """
INSERT INTO usage_daily_users (day, user_id, agent_id) VALUES (%s, %s, %s)
ON CONFLICT DO NOTHING
"""


def preview(text: str | None, limit: int = PREVIEW) -> str | None:
    if text is None:
        return None
    return text if len(text) <= limit else text[:limit] + "…"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Span:
    span_type: str
    name: str
    start: datetime
    duration_ms: int
    status: str = "completed"
    error: str | None = None
    model: str | None = None
    provider: str | None = None
    usage: Usage = field(default_factory=Usage)
    cost: Decimal = Decimal(0)
    finish_reason: str | None = None
    tool_call_id: str | None = None
    input_preview: str | None = None
    output_preview: str | None = None
    result_size: int | None = None
    id: uuid.UUID = field(default_factory=uuid7)


class TraceRecorder:
    """Collects one run's spans; `finish()` queues everything for the write-behind writer."""

    def __init__(self, *, agent: dict, user_id: str, session_key: str, channel: str, input_text: str) -> None:
        self.id = uuid7()
        self.run_id = uuid7()
        self.agent = agent
        self.user_id = user_id
        self.session_key = session_key
        self.channel = channel
        self.input_text = input_text
        self.started = _now()
        self._t0 = time.perf_counter()
        self.spans: list[Span] = []
        self.usage = Usage()
        self.cost = Decimal(0)

    def llm_call(
        self, *, model: str, provider: str, started: float, usage: Usage | None,
        finish_reason: str | None = None, error: str | None = None, output: str | None = None,
    ) -> Span:
        usage = usage or Usage()
        span = Span(
            "llm_call", model, self._wall(started), self._ms_since(started),
            status="error" if error else "completed", error=preview(error, 1000), model=model, provider=provider,
            usage=usage, cost=pricing.cost(model, usage), finish_reason=finish_reason, output_preview=preview(output),
        )
        self.usage = Usage(
            self.usage.input_tokens + usage.input_tokens,
            self.usage.output_tokens + usage.output_tokens,
            self.usage.cache_read_tokens + usage.cache_read_tokens,
            self.usage.cache_creation_tokens + usage.cache_creation_tokens,
        )
        self.cost += span.cost
        self.spans.append(span)
        return span

    def tool_call(
        self, *, name: str, call_id: str, started: float, arguments: str, result: str, error: str | None = None,
    ) -> Span:
        span = Span(
            "tool_call", name, self._wall(started), self._ms_since(started), status="error" if error else "completed",
            error=preview(error, 1000), tool_call_id=call_id, input_preview=preview(arguments),
            output_preview=preview(result), result_size=len(result),
        )
        self.spans.append(span)
        return span

    def _wall(self, started: float) -> datetime:
        return datetime.fromtimestamp(self.started.timestamp() + (started - self._t0), UTC)

    @staticmethod
    def _ms_since(started: float) -> int:
        return int((time.perf_counter() - started) * 1000)

    def finish(self, writer, *, status: str, error: str | None = None, output: str | None = None) -> None:
        """Queue the trace, its spans and the usage rollup (nothing here waits on the database)."""
        end = _now()
        duration = int((time.perf_counter() - self._t0) * 1000)
        agent_id = self.agent.get("id")
        llm_spans = [s for s in self.spans if s.span_type == "llm_call"]
        tool_spans = [s for s in self.spans if s.span_type == "tool_call"]
        metadata = {
            "cache_read_tokens": self.usage.cache_read_tokens,
            "cache_creation_tokens": self.usage.cache_creation_tokens,
            "agent_key": self.agent.get("agent_key"),
        }
        writer.add(INSERT_TRACE, (
            self.id, agent_id, self.user_id or None, self.session_key, self.run_id,
            f"chat {self.agent.get('agent_key', '')}", self.channel, self.started, end, duration,
            preview(self.input_text), preview(output), self.usage.input_tokens, self.usage.output_tokens,
            self.cost, len(self.spans), len(llm_spans), len(tool_spans), status, preview(error, 2000),
            json.dumps(metadata), self.started,
        ))
        for span in self.spans:
            writer.add(INSERT_SPAN, (
                span.id, self.id, agent_id, span.span_type, span.name, span.start, None, span.duration_ms,
                span.status, span.error, span.model, span.provider, span.usage.input_tokens,
                span.usage.output_tokens, span.cost, span.finish_reason, span.name if span.span_type == "tool_call"
                else None, span.tool_call_id, span.input_preview, span.output_preview,
                json.dumps(_span_metadata(span)), span.start,
            ))
        self._queue_rollup(writer, status, duration, len(tool_spans), llm_spans)

    def _queue_rollup(self, writer, status: str, duration: int, tool_calls: int, llm_spans: list[Span]) -> None:
        agent_id = self.agent.get("id") or NO_AGENT
        hour = self.started.replace(minute=0, second=0, microsecond=0)  # UTC hour bucket
        per_model: dict[tuple[str, str], list[Span]] = {}
        for span in llm_spans:
            per_model.setdefault((span.provider or "", span.model or ""), []).append(span)
        if not per_model:
            per_model[(self.agent.get("provider") or "", self.agent.get("model") or "")] = []
        for index, ((provider, model), spans) in enumerate(per_model.items()):
            first = index == 0  # the request itself is counted once, on its first model's row
            counts = (
                1 if first else 0, len(spans), tool_calls if first else 0,
                1 if first and status == "error" else 0,
                sum(s.usage.input_tokens for s in spans), sum(s.usage.output_tokens for s in spans),
                sum((s.cost for s in spans), Decimal(0)), duration if first else 0,
            )
            writer.add_sum(UPSERT_USAGE, (hour, agent_id, self.user_id, provider, model), counts)
            writer.add_sum(UPSERT_USAGE_GLOBAL, (hour, agent_id, provider, model), counts)
        if self.user_id:
            writer.add_sum(MARK_ACTIVE_USER, (self.started.date(), self.user_id, agent_id), ())


def _span_metadata(span: Span) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if span.usage.cache_read_tokens:
        meta["cache_read_tokens"] = span.usage.cache_read_tokens
    if span.usage.cache_creation_tokens:
        meta["cache_creation_tokens"] = span.usage.cache_creation_tokens
    if span.result_size is not None:
        meta["result_size"] = span.result_size
    return meta
