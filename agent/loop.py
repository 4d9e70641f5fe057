"""The think → act → observe loop, provider-neutral.

Each iteration asks the model (streaming or not); if it calls tools they run concurrently and
their results are fed back in call order; the loop ends when the model answers without tool
calls, when the same calls produce the same results twice (a loop), or at the iteration cap.
Every LLM call and tool call becomes a span on the run's TraceRecorder."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from agent.scrub import scrub
from domain.tracing import TraceRecorder
from llm import ChatRequest, Message, ToolCall, Usage

LOOP_STOP = "Stopped: the model repeated the same tool call and got the same result."
CAP_STOP = "Stopped after {n} tool iterations without a final answer."


@dataclass
class RunEvent:
    kind: str  # "text" | "tool_call" | "tool_result" | "done"
    text: str = ""
    tool_call: ToolCall | None = None
    is_error: bool = False


@dataclass
class Run:
    """Everything one agent run needs, and what it produced."""

    adapter: Any
    provider: str
    model: str
    system: str | None
    messages: list[Message]
    recorder: TraceRecorder
    tools: Any = None  # agent.tools.ToolSet, when the agent has tools
    tool_context: Any = None
    max_iterations: int = 20
    stream: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    produced: list[Message] = field(default_factory=list)  # assistant/tool turns, for the transcript
    content: str = ""
    finish_reason: str = "stop"

    @property
    def usage(self) -> Usage:
        return self.recorder.usage


async def run_loop(run: Run) -> AsyncIterator[RunEvent]:
    seen: set[tuple] = set()
    specs = run.tools.specs() if run.tools is not None else []
    for _ in range(max(1, run.max_iterations)):
        request = ChatRequest(
            model=run.model, messages=run.messages, tools=specs, system=run.system,
            max_tokens=run.max_tokens, temperature=run.temperature,
        )
        started = time.perf_counter()
        text, calls, usage, finish = "", [], None, None
        try:
            if run.stream:
                parts: list[str] = []
                async with contextlib.aclosing(run.adapter.stream(request)) as events:
                    async for event in events:
                        if event.kind == "text" and event.text:
                            parts.append(event.text)
                            yield RunEvent("text", event.text)
                        elif event.kind == "tool_call" and event.tool_call is not None:
                            calls.append(event.tool_call)
                        elif event.kind == "done":
                            usage, finish = event.usage, event.finish_reason
                text = "".join(parts)
            else:
                response = await run.adapter.chat(request)
                text, calls = response.content, response.tool_calls
                usage, finish = response.usage, response.finish_reason
        except Exception as exc:
            run.recorder.llm_call(model=run.model, provider=run.provider, started=started, usage=usage, error=str(exc))
            raise
        run.recorder.llm_call(
            model=run.model, provider=run.provider, started=started, usage=usage, finish_reason=finish, output=text,
        )
        if not calls:
            run.content, run.finish_reason = text, finish or "stop"
            run.produced.append(Message("assistant", text))
            if not run.stream and text:
                yield RunEvent("text", text)
            yield RunEvent("done")
            return
        assistant = Message("assistant", text, tool_calls=list(calls))
        run.messages.append(assistant)
        run.produced.append(assistant)
        for call in calls:
            yield RunEvent("tool_call", tool_call=call)
        results = await asyncio.gather(*(_call_tool(run, call) for call in calls))
        for call, (content, is_error) in zip(calls, results, strict=True):
            result = Message("tool", content, tool_call_id=call.id, name=call.name)
            run.messages.append(result)
            run.produced.append(result)
            yield RunEvent("tool_result", content, tool_call=call, is_error=is_error)
        signature = tuple(
            (c.name, json.dumps(c.arguments, sort_keys=True), r[0]) for c, r in zip(calls, results, strict=True)
        )
        if signature in seen:
            async for event in _stop(run, LOOP_STOP):
                yield event
            return
        seen.add(signature)
    async for event in _stop(run, CAP_STOP.format(n=run.max_iterations)):
        yield event


async def _stop(run: Run, message: str) -> AsyncIterator[RunEvent]:
    run.content, run.finish_reason = message, "stop"
    run.produced.append(Message("assistant", message))
    yield RunEvent("text", message)
    yield RunEvent("done")


async def _call_tool(run: Run, call: ToolCall) -> tuple[str, bool]:
    started = time.perf_counter()
    arguments = scrub(json.dumps(call.arguments, ensure_ascii=False))  # spans never keep credentials
    if run.tools is None:
        content, is_error = f"unknown tool: {call.name}", True
    else:
        result = await run.tools.call(call.name, call.arguments, run.tool_context)
        content, is_error = result.content, result.is_error
    run.recorder.tool_call(
        name=call.name, call_id=call.id, started=started, arguments=arguments, result=content,
        error=content if is_error else None,
    )
    return content, is_error
