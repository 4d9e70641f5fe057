"""Custom tools: an operator-defined argv template run without a shell.

`command` is a list of argv elements. `{{name}}` in an element is replaced by the validated
argument `name` — inside that one element only, so an argument can never become a second
argument, an option separator, a pipe or a command substitution: `; rm -rf /`, `$(id)`, backticks,
newlines and `&&` are passed to the program as literal text. An element that is exactly
`{{name}}` is dropped when the (optional) argument is absent. Values: strings as they are,
numbers/booleans as JSON text (`3`, `true`), objects/arrays as compact JSON.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import db
from agent import process
from agent.scrub import secret_values
from agent.tools import Tool, ToolContext, ToolResult

PLACEHOLDER = re.compile(r"\{\{\s*\.?([A-Za-z_][A-Za-z0-9_\-]*)\s*\}\}")

FOR_AGENT_SQL = """
SELECT id, name, description, parameters, command, timeout_seconds, env, agent_id, owner_id
FROM custom_tools
WHERE enabled
  AND (agent_id = %(agent)s OR (agent_id IS NULL AND owner_id IN (%(owner)s, '')))
ORDER BY (agent_id IS NULL), (owner_id = ''), name
"""


def placeholders(argv: list[str]) -> set[str]:
    return {m.group(1) for element in argv for m in PLACEHOLDER.finditer(element)}


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def render_argv(template: list[str], arguments: dict[str, Any]) -> list[str]:
    """The argv to execute: each template element stays exactly one element."""
    argv: list[str] = []
    for element in template:
        whole = PLACEHOLDER.fullmatch(element)
        if whole and whole.group(1) not in arguments:
            continue
        argv.append(PLACEHOLDER.sub(lambda m: _text(arguments.get(m.group(1), "")), element))
    return [a.replace("\x00", "\ufffd") for a in argv]


def decrypt_env(stored: str | None) -> dict[str, str]:
    if not stored:
        return {}
    from gateway import state

    value = state.box().decrypt_json(stored)
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


async def execute(definition: dict, arguments: dict, ctx: ToolContext, env: dict[str, str]) -> ToolResult:
    argv = render_argv(list(definition["command"]), arguments)
    if not argv:
        return ToolResult("the tool's command is empty after substitution", True)
    timeout = float(definition.get("timeout_seconds") or 60)
    workspace = ctx.workspace
    await asyncio.to_thread(workspace.mkdir, parents=True, exist_ok=True)
    limits = process.Limits(timeout_s=timeout, cpu_seconds=max(1, int(timeout) * 2))
    try:
        result = await process.run(argv, workspace, process.minimal_env(workspace, env), limits)
    except FileNotFoundError:
        return ToolResult(f"command not found: {argv[0]}", True)
    except PermissionError:
        return ToolResult(f"permission denied: {argv[0]}", True)
    except OSError as exc:
        return ToolResult(f"cannot start {argv[0]}: {exc.strerror or exc}", True)
    return ToolResult(result.render(), is_error=not result.ok)


def make_tool(definition: dict) -> Tool:
    try:
        env = decrypt_env(definition.get("env"))
    except Exception:  # a key change makes the env unreadable: the tool reports it when called
        env = None

    async def run(arguments: dict, ctx: ToolContext) -> ToolResult:
        if env is None:
            return ToolResult("this tool's environment cannot be decrypted (was GOCLAW_ENCRYPTION_KEY changed?)", True)
        return await execute(definition, arguments, ctx, env)

    timeout = float(definition.get("timeout_seconds") or 60) + process.KILL_GRACE_S * 2 + 1
    return Tool(
        definition["name"], definition.get("description") or definition["name"], definition["parameters"], run,
        "custom", secrets=tuple(secret_values(env)), timeout=timeout,
    )


async def tools_for(agent: dict) -> list[Tool]:
    """Enabled custom tools of the agent: those scoped to it, then its owner's (and shared) global ones."""
    rows = await db.fetch_all(FOR_AGENT_SQL, {"agent": agent["id"], "owner": agent.get("owner_id") or ""})
    seen: set[str] = set()
    tools = []
    for row in rows:
        if row["name"] in seen:
            continue
        seen.add(row["name"])
        tools.append(make_tool(row))
    return tools
