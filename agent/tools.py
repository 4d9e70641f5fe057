"""The interface the agent loop uses: a ToolSet offers specs to the model and runs calls.

`ToolSet.call` never raises for a tool's own failure: an unknown tool, arguments that do not
match the tool's JSON schema, a timeout or a crash all come back as `ToolResult(is_error=True)`
with a message the model can act on. Every result is scrubbed of credentials and capped in size
(`MAX_OUTPUT_BYTES`, with a truncation note). Only cancellation propagates (the run was aborted).
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonschema import FormatChecker, ValidationError
from jsonschema.exceptions import best_match
from jsonschema.validators import validator_for

from agent.scrub import scrub
from auth import Principal
from gateway.errors import ApiError
from llm import ToolSpec

log = logging.getLogger("goclaw.tools")

MAX_OUTPUT_BYTES = 32 * 1024
TRUNCATION_NOTE = "\n\n[output truncated: {shown} of {total} bytes shown]"
DEFAULT_TIMEOUT_S = 120.0


@dataclass
class ToolResult:
    content: str
    is_error: bool = False


@dataclass
class ToolContext:
    """Who runs the tool, for which agent, where. `workspace` is the agent's (per-user) root."""

    principal: Principal
    agent: dict
    workspace: Path
    run_id: str | None = None


ToolFunction = Callable[[dict[str, Any], ToolContext], Awaitable["ToolResult | str"]]


@dataclass
class Tool:
    """One callable tool. `run(arguments, ctx)` gets arguments already validated against
    `parameters`; it may return a string (success) or a ToolResult, and may raise (→ error result).
    `secrets` are values scrubbed from its output; `timeout` bounds the whole call."""

    name: str
    description: str
    parameters: dict[str, Any]
    run: ToolFunction
    kind: str = "builtin"  # builtin | custom | mcp
    secrets: tuple[str, ...] = ()
    timeout: float = DEFAULT_TIMEOUT_S
    _validator: Any = field(default=None, repr=False, compare=False)

    def validator(self):
        if self._validator is None:
            cls = validator_for(self.parameters)
            self._validator = cls(self.parameters, format_checker=FormatChecker())
        return self._validator


class ToolSet:
    """The tools one agent may use in one run, by name."""

    def __init__(self, tools: Iterable[Tool] = (), *, max_output_bytes: int = MAX_OUTPUT_BYTES) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self._tools.setdefault(tool.name, tool)  # first definition of a name wins
        self.max_output_bytes = max_output_bytes
        self._specs = tuple(ToolSpec(t.name, t.description, t.parameters) for t in self._tools.values())

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def names(self) -> list[str]:
        return list(self._tools)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def specs(self) -> tuple[ToolSpec, ...]:
        """What the model is offered, in a stable order (a ToolSet never changes: built once). The
        same tuple every time, so adapters encode it once (`llm.base.encoded_once`)."""
        return self._specs

    async def call(self, name: str, arguments: dict, ctx: ToolContext) -> ToolResult:
        tool = self._tools.get(name)
        if tool is None:
            available = ", ".join(sorted(self._tools)) or "none"
            return ToolResult(f"unknown tool: {name!r}; available tools: {available}", is_error=True)
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            return ToolResult(f"invalid arguments for {name}: expected a JSON object", is_error=True)
        problem = validation_problem(tool, arguments)
        if problem:
            return ToolResult(f"invalid arguments for {name}: {problem}", is_error=True)
        try:
            outcome = await asyncio.wait_for(tool.run(arguments, ctx), timeout=tool.timeout)
        except TimeoutError:
            result = ToolResult(f"tool {name} timed out after {tool.timeout:g}s", is_error=True)
        except ApiError as exc:  # domain refusals (traversal, not found, ...) read well as they are
            result = ToolResult(f"{name} failed: {exc.message()}", is_error=True)
        except Exception as exc:
            log.warning("tool %s raised %s", name, exc.__class__.__name__)
            result = ToolResult(f"{name} failed: {exc.__class__.__name__}: {exc}", is_error=True)
        else:
            result = outcome if isinstance(outcome, ToolResult) else ToolResult(str(outcome))
        return ToolResult(self._finish(result.content, tool.secrets), result.is_error)

    def _finish(self, content: str, secrets: tuple[str, ...]) -> str:
        if not isinstance(content, str):
            content = json.dumps(content, ensure_ascii=False, default=str)
        # bound the work of scrubbing, then scrub, then cut to the final cap (a secret is never half-cut)
        content = content[: self.max_output_bytes * 4]
        return cap_text(scrub(content, secrets), self.max_output_bytes)


def validation_problem(tool: Tool, arguments: dict) -> str | None:
    """A one-line description of the first schema violation, or None."""
    try:
        error = best_match(tool.validator().iter_errors(arguments))
    except Exception as exc:  # a broken schema must not crash the run
        return f"the tool's schema cannot be applied ({exc.__class__.__name__})"
    if error is None:
        return None
    return describe_error(error)


def describe_error(error: ValidationError) -> str:
    where = "/".join(str(p) for p in error.absolute_path)
    message = error.message if len(error.message) <= 300 else error.message[:300] + "…"
    return f"{where}: {message}" if where else message


def cap_text(text: str, limit: int) -> str:
    """At most `limit` UTF-8 bytes (never splitting a character), with a note when cut."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    shown = data[:limit].decode("utf-8", "ignore")
    return shown + TRUNCATION_NOTE.format(shown=len(shown.encode()), total=len(data))


# --- policy: the agent's tools_config ------------------------------------------------------------

GROUPS: dict[str, tuple[str, ...]] = {
    "fs": ("read_file", "write_file", "list_files"),
    "runtime": ("exec",),
    "web": ("web_fetch",),
    "memory": ("memory_search", "memory_save"),
    "kg": ("kg_search", "kg_add"),
    "skills": ("use_skill",),
}


def _expand(patterns: Iterable[str]) -> list[str]:
    expanded: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            continue
        if pattern.startswith("group:"):
            group = pattern[6:]
            expanded.extend(GROUPS.get(group, ()) if group != "mcp" else ("mcp_*",))
        else:
            expanded.append(pattern)
    return expanded


def allowed_by_policy(name: str, tools_config: dict | None) -> bool:
    """`tools_config` = {"allow": [...], "deny": [...], "also_allow": [...]}; entries are names,
    shell-style patterns (`mcp_github__*`) or groups (`group:fs`, `group:mcp`). A non-empty allow
    list keeps only what it names; deny always wins over allow; also_allow re-adds after allow."""
    config = tools_config if isinstance(tools_config, dict) else {}
    allow = _expand(config.get("allow") or [])
    deny = _expand(config.get("deny") or [])
    also = _expand(config.get("also_allow") or config.get("alsoAllow") or [])

    def matches(patterns: list[str]) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in patterns)

    if matches(deny):
        return False
    return not allow or matches(allow) or matches(also)


async def tools_for_agent(principal: Principal, agent: dict) -> ToolSet:
    """Everything `agent` may use now: enabled built-ins, its custom tools (global ones of its
    owner + those scoped to it), the tools of enabled MCP servers granted to it (named
    `mcp_<server>__<tool>`) and `use_skill` when it has skills — filtered by its tools_config."""
    from agent import builtin, custom, mcp, skills

    has_skills = bool(await skills.skills_for_agent(agent))
    collected: list[Tool] = []
    collected += await builtin.enabled_tools(has_skills=has_skills)
    taken = {t.name for t in collected}
    collected += [t for t in await custom.tools_for(agent) if t.name not in taken]
    taken = {t.name for t in collected}
    collected += [t for t in await mcp.tools_for(agent) if t.name not in taken]
    policy = agent.get("tools_config") if isinstance(agent, dict) else None
    return ToolSet(t for t in collected if allowed_by_policy(t.name, policy))
