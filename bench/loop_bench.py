"""Agent-loop overhead per tool iteration, excluding the model's and the tool's own time.

Runs the real loop (agent/loop.py) in-process against the stub upstream over HTTP, with a real
ToolSet holding one trivial tool. The model asks for the tool N times (distinct arguments, so the
repeat detector stays quiet), then answers. Overhead per iteration = (run time − time inside the
upstream calls − time inside the tool) / N: the loop's own bookkeeping, request building, result
feeding, span recording and argument validation.

    .venv/bin/python bench/loop_bench.py [--runs 50] [--iterations 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from common import start_stub

from agent.loop import Run, run_loop
from agent.tools import Tool, ToolSet
from domain.tracing import TraceRecorder
from llm import Message, OpenAICompatClient, create_http_client


class Timed:
    """Forwards to `inner`, adding up the time spent inside `method`."""

    def __init__(self, inner, method: str) -> None:
        self.inner, self.method, self.spent = inner, method, 0.0

    def __getattr__(self, name: str):
        attr = getattr(self.inner, name)
        if name != self.method:
            return attr

        async def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return await attr(*args, **kwargs)
            finally:
                self.spent += time.perf_counter() - started

        return timed


class NullWriter:
    def add(self, sql, params) -> None:  # the trace is built in full; writing it is not the loop's cost
        pass


async def echo(arguments: dict, _ctx) -> str:
    return f"step {arguments['n']}"


async def one_run(http, base: str, iterations: int) -> tuple[float, int]:
    steps = [{"wire": "openai", "tool_calls": [{"id": f"c{i}", "name": "step", "arguments": {"n": i}}]}
             for i in range(iterations)] + [{"wire": "openai", "text": "done"}]
    (await http.post(base.removesuffix("/v1") + "/_script", json=steps)).raise_for_status()
    adapter = Timed(OpenAICompatClient(http, base, "sk-bench"), "chat")
    tools = Timed(ToolSet([Tool("step", "one step", {"type": "object", "properties": {"n": {"type": "integer"}},
                                                         "required": ["n"]}, echo)]), "call")
    recorder = TraceRecorder(agent={"id": None, "agent_key": "bench"}, user_id="", session_key="k", channel="bench",
                             input_text="go")
    run = Run(adapter=adapter, provider="stub", model="gpt-4o-mini", system="bench",
              messages=[Message("user", "go")], recorder=recorder, tools=tools, tool_context=None,
              max_iterations=iterations + 2)
    started = time.perf_counter()
    async for _ in run_loop(run):
        pass
    total = time.perf_counter() - started
    recorder.finish(NullWriter(), status="completed", output=run.content)
    assert run.content == "done", run.content
    return (total - adapter.spent - tools.spent) / iterations, iterations


async def main_async(args, base: str) -> None:
    http = create_http_client()
    try:
        await one_run(http, base, 2)  # warm-up
        overheads = [(await one_run(http, base, args.iterations))[0] * 1000 for _ in range(args.runs)]
        ordered = sorted(overheads)
        print(f"agent loop, {args.runs} runs × {args.iterations} tool iterations (stub upstream, trivial tool)")
        print(f"loop overhead per tool iteration: p50 {statistics.median(ordered):.3f} ms, "
              f"p99 {ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]:.3f} ms")
    finally:
        await http.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--iterations", type=int, default=10)
    stub, stub_root = start_stub()
    try:
        asyncio.run(main_async(parser.parse_args(), stub_root + "/v1"))
    finally:
        stub.terminate()
