"""MCP client side: one reusable session per server, through the official `mcp` SDK.

A `Connection` is owned by one asyncio task that enters the SDK `Client` (transport + handshake)
and keeps it open until told to stop, so the SDK's anyio task groups are entered and exited in
the same task. Any task may send requests through it. The `Manager` keeps one connection per
server id, keyed by (id, updated_at): a changed server gets a fresh session and the old one is
closed. A connection that failed is dropped and rebuilt on the next use; a server that cannot be
reached is not retried for a short, growing back-off, so a dead server costs the agent loop one
timeout, not one per run. Idle sessions are closed after `IDLE_CLOSE_S`. `shutdown()` closes all.

Errors: `McpUnavailable` (cannot connect, handshake refused, connection lost) and `McpTimeout`
(no answer in time). The HTTP layer maps them to 502 / 504.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import db
from agent.scrub import scrub, secret_values
from agent.tools import Tool, ToolContext, ToolResult

log = logging.getLogger("goclaw.mcp")

IDLE_CLOSE_S = 600.0
LIST_PAGES_MAX = 20
BACKOFF_START_S = 5.0
BACKOFF_MAX_S = 120.0
DISCOVERY_TIMEOUT_CAP_S = 30.0
TOOL_NAME_MAX = 64
CLIENT_NAME = "goclaw"


class McpError(Exception):
    """An MCP server could not be used; the message is safe to show (secrets scrubbed)."""


class McpUnavailable(McpError):
    pass


class McpTimeout(McpError):
    pass


@dataclass(frozen=True)
class ServerConfig:
    id: str
    name: str
    transport: str  # stdio | sse | streamable-http
    version: str  # updated_at: a change means a new session
    command: str | None = None
    args: tuple[str, ...] = ()
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    env: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    timeout_s: float = 60.0
    tool_prefix: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.id, self.version)

    def secrets(self) -> list[str]:
        return secret_values(self.headers, self.env)

    def prefix(self) -> str:
        """`mcp_<server>` (or the configured prefix, forced to start with `mcp_`)."""
        base = self.tool_prefix or self.name
        base = re.sub(r"[^A-Za-z0-9_]", "_", base)
        return base if base.startswith("mcp_") else f"mcp_{base}"

    def tool_name(self, original: str) -> str:
        name = f"{self.prefix()}__{re.sub(r'[^A-Za-z0-9_-]', '_', original)}"
        return name[:TOOL_NAME_MAX]


def _describe(exc: BaseException) -> str:
    """A one-line reason, unwrapping anyio's exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{exc.__class__.__name__}: {text}"[:300] if text else exc.__class__.__name__


def _stderr_path(cfg: ServerConfig) -> Path:
    from gateway import state

    folder = state.settings.data_dir / "mcp"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{cfg.id}.stderr.log"


def forget_stderr_log(server_id: str) -> None:
    """Remove the stderr log of a deleted stdio server."""
    from gateway import state

    with contextlib.suppress(OSError):
        (state.settings.data_dir / "mcp" / f"{server_id}.stderr.log").unlink()


def _stderr_tail(path: Path | None, limit: int = 300) -> str:
    if path is None:
        return ""
    with contextlib.suppress(OSError):
        data = path.read_bytes()[-limit:].decode("utf-8", "replace").strip()
        return data.splitlines()[-1] if data else ""
    return ""


class Connection:
    """One live MCP session, owned by its own task (see module docstring)."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.client: Any = None
        self.tools: list[dict] | None = None  # cached listing (raw: name, description, input_schema)
        self.last_used = time.monotonic()
        self.error: BaseException | None = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stderr_file = None
        self._stderr_path: Path | None = None

    @property
    def alive(self) -> bool:
        return (self.client is not None and self._task is not None and not self._task.done()
                and self.error is None and not self._transport_closed())

    def _transport_closed(self) -> bool:
        """The SDK keeps the session object after its transport ended (a stdio server that exited,
        a dropped HTTP stream); its dispatcher knows. Private, hence read defensively."""
        session = getattr(self.client, "_session", None)
        return bool(getattr(getattr(session, "_dispatcher", None), "_closed", False))

    def _transport(self):
        from mcp import StdioServerParameters
        from mcp.client.sse import sse_client
        from mcp.client.stdio import stdio_client
        from mcp.client.streamable_http import streamable_http_client

        from gateway.netguard import guarded_httpx2_client  # the SSRF check at connect time too

        cfg = self.cfg
        if cfg.transport == "stdio":
            self._stderr_path = _stderr_path(cfg)
            self._stderr_file = open(self._stderr_path, "w")  # closed when the session ends
            params = StdioServerParameters(command=cfg.command or "", args=list(cfg.args), env=dict(cfg.env) or None)
            return stdio_client(params, errlog=self._stderr_file)
        if cfg.transport == "sse":
            return sse_client(cfg.url or "", headers=dict(cfg.headers), timeout=cfg.timeout_s,
                              sse_read_timeout=max(cfg.timeout_s, 300.0), httpx_client_factory=guarded_httpx2_client)
        import httpx2

        http_client = guarded_httpx2_client(
            headers=dict(cfg.headers), timeout=httpx2.Timeout(cfg.timeout_s, read=max(cfg.timeout_s, 300.0))
        )
        return streamable_http_client(cfg.url or "", http_client=http_client)

    async def _own(self) -> None:
        from mcp import Client
        from mcp.types import Implementation

        try:
            async with Client(
                self._transport(),
                client_info=Implementation(name=CLIENT_NAME, version="0.1.0"),
            ) as client:
                self.client = client
                self._ready.set()
                await self._stop.wait()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # anyio exception groups too: recorded, reported to callers
            self.error = exc
        finally:
            self.client = None
            self._ready.set()
            if self._stderr_file is not None:
                with contextlib.suppress(OSError):
                    self._stderr_file.close()

    async def start(self, within_s: float) -> None:
        """Connect and handshake within `within_s`, or raise McpUnavailable/McpTimeout."""
        self._task = asyncio.get_running_loop().create_task(self._own(), name=f"mcp-{self.cfg.name}")
        try:
            await asyncio.wait_for(self._ready.wait(), timeout=within_s)
        except TimeoutError:
            await self.close(grace=0.2)
            raise McpTimeout(f"MCP server {self.cfg.name!r} did not complete the handshake within "
                             f"{within_s:g}s") from None
        except asyncio.CancelledError:
            await asyncio.shield(self.close(grace=0.2))
            raise
        if self.client is None:
            reason = _describe(self.error) if self.error else "closed during the handshake"
            tail = _stderr_tail(self._stderr_path)
            if tail:
                reason += f" (stderr: {tail})"
            await self.close()
            raise McpUnavailable(scrub(f"cannot connect to MCP server {self.cfg.name!r}: {reason}", self.cfg.secrets()))

    async def close(self, grace: float = 2.0) -> None:
        """Ask the owner task to leave the session; cancel it if it does not within `grace`
        (or at once while it is still connecting). Cleanup may finish in the background."""
        self._stop.set()
        task = self._task
        if task is None or task.done():
            return
        if self.client is None:
            task.cancel()
        done, _ = await asyncio.wait({task}, timeout=grace)
        if not done:
            task.cancel()
            _closing.add(task)
            task.add_done_callback(_closing.discard)

    async def _request(self, what: str, coro_factory, within_s: float):
        if not self.alive:
            raise McpUnavailable(f"MCP server {self.cfg.name!r}: connection lost")
        self.last_used = time.monotonic()
        try:
            return await asyncio.wait_for(coro_factory(self.client), timeout=within_s)
        except TimeoutError:
            raise McpTimeout(f"MCP server {self.cfg.name!r} did not answer {what} within {within_s:g}s") from None
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            from mcp import MCPError
            from mcp_types import CONNECTION_CLOSED

            if isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED:
                self.error = exc
                raise McpUnavailable(f"MCP server {self.cfg.name!r} closed the connection during {what}") from None
            if isinstance(exc, MCPError):  # a protocol-level refusal: the session itself is fine
                raise McpUnavailable(scrub(f"MCP server {self.cfg.name!r} refused {what}: {exc}",
                                           self.cfg.secrets())) from None
            self.error = exc  # transport failure: this session is done
            raise McpUnavailable(scrub(f"MCP server {self.cfg.name!r} failed during {what}: {_describe(exc)}",
                                       self.cfg.secrets())) from None

    async def list_tools(self, within_s: float) -> list[dict]:
        if self.tools is not None:
            return self.tools

        async def fetch(client) -> list[dict]:
            tools, cursor = [], None
            for _ in range(LIST_PAGES_MAX):
                page = await client.list_tools(cursor=cursor)
                for tool in page.tools:
                    tools.append({
                        "name": tool.name,
                        "description": tool.description or "",
                        "input_schema": dict(tool.input_schema or {"type": "object", "properties": {}}),
                    })
                cursor = page.next_cursor
                if not cursor:
                    break
            return tools

        self.tools = await self._request("tools/list", fetch, within_s)
        return self.tools

    async def call_tool(self, name: str, arguments: dict, within_s: float):
        return await self._request(f"tools/call {name}", lambda c: c.call_tool(name, arguments), within_s)


class Manager:
    def __init__(self) -> None:
        self._connections: dict[str, Connection] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._backoff: dict[tuple[str, str], tuple[float, float, str]] = {}  # key → (until, delay, reason)

    def _lock(self, server_id: str) -> asyncio.Lock:
        return self._locks.setdefault(server_id, asyncio.Lock())

    async def _reap_idle(self) -> None:
        now = time.monotonic()
        for server_id, conn in list(self._connections.items()):
            if now - conn.last_used > IDLE_CLOSE_S:
                self._connections.pop(server_id, None)
                await conn.close()

    async def connection(self, cfg: ServerConfig, *, respect_backoff: bool = True,
                         within_s: float | None = None) -> Connection:
        await self._reap_idle()
        async with self._lock(cfg.id):
            conn = self._connections.get(cfg.id)
            if conn is not None and conn.cfg.key == cfg.key and conn.alive:
                return conn
            if conn is not None:  # changed or broken: replace it
                self._connections.pop(cfg.id, None)
                await conn.close()
            blocked = self._backoff.get(cfg.key)
            if respect_backoff and blocked and blocked[0] > time.monotonic():
                raise McpUnavailable(blocked[2])
            conn = Connection(cfg)
            try:
                await conn.start(within_s or cfg.timeout_s)
            except McpError as exc:
                delay = min(blocked[1] * 2, BACKOFF_MAX_S) if blocked else BACKOFF_START_S
                self._backoff[cfg.key] = (time.monotonic() + delay, delay, str(exc))
                raise
            self._backoff.pop(cfg.key, None)
            self._connections[cfg.id] = conn
            return conn

    async def list_tools(self, cfg: ServerConfig, *, fresh: bool = False, within_s: float | None = None) -> list[dict]:
        within_s = within_s or cfg.timeout_s
        deadline = time.monotonic() + within_s
        conn = await self.connection(cfg, respect_backoff=not fresh, within_s=within_s)
        if fresh:
            conn.tools = None
        try:
            return await conn.list_tools(max(0.5, deadline - time.monotonic()))
        except McpError:
            if not conn.alive:
                await self.invalidate(cfg.id)
            raise

    async def call_tool(self, cfg: ServerConfig, name: str, arguments: dict) -> ToolResult:
        conn = await self.connection(cfg)
        try:
            result = await conn.call_tool(name, arguments, cfg.timeout_s)
        except McpError:
            if not conn.alive:
                await self.invalidate(cfg.id)
            raise
        return render_result(result)

    async def invalidate(self, server_id: str) -> None:
        """Close the session of `server_id` (changed or deleted); the next use reconnects."""
        conn = self._connections.pop(server_id, None)
        for key in [k for k in self._backoff if k[0] == server_id]:
            self._backoff.pop(key, None)
        if conn is not None:
            await conn.close()

    async def shutdown(self) -> None:
        connections = list(self._connections.values())
        self._connections.clear()
        self._backoff.clear()
        self._locks.clear()
        await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)


def render_result(result: Any) -> ToolResult:
    """Text parts joined by newlines; other parts as placeholders; structured content as JSON."""
    parts: list[str] = []
    for item in getattr(result, "content", None) or []:
        kind = getattr(item, "type", "")
        if kind == "text":
            parts.append(item.text)
        elif kind == "resource" and getattr(getattr(item, "resource", None), "text", None) is not None:
            parts.append(item.resource.text)
        elif kind in ("image", "audio"):
            parts.append(f"[{kind} content ({getattr(item, 'mime_type', '') or 'unknown type'}) not shown]")
        elif kind == "resource_link":
            parts.append(f"[resource: {getattr(item, 'uri', '')}]")
        else:
            parts.append(f"[{kind or 'unknown'} content not shown]")
    structured = getattr(result, "structured_content", None)
    if not parts and structured is not None:
        parts.append(json.dumps(structured, ensure_ascii=False, default=str))
    text = "\n".join(parts) if parts else "(no output)"
    return ToolResult(text, is_error=bool(getattr(result, "is_error", False)))


manager = Manager()
_closing: set[asyncio.Task] = set()  # sessions still cleaning up after a cancel


async def shutdown() -> None:
    """Close every MCP session (call from the app lifespan's shutdown)."""
    await manager.shutdown()


async def _on_bus(event: dict) -> None:
    if event.get("resync"):
        await manager.shutdown()
    elif event.get("id"):
        await manager.invalidate(str(event["id"]))


def _subscribe_once() -> None:
    from db import bus

    if not getattr(_subscribe_once, "done", False):
        bus.subscribe("mcp_servers", _on_bus)
        _subscribe_once.done = True  # type: ignore[attr-defined]


_subscribe_once()


# --- configs from the database, and the agent's MCP tools -----------------------------------------

SERVERS_FOR_AGENT_SQL = """
SELECT s.id, s.name, s.transport, s.command, s.args, s.url, s.headers, s.env, s.tool_prefix,
       s.timeout_seconds, s.updated_at
FROM mcp_servers s
WHERE s.enabled
  AND (EXISTS (SELECT 1 FROM mcp_agent_grants g WHERE g.server_id = s.id AND g.agent_id = %(agent)s)
       OR (NOT EXISTS (SELECT 1 FROM mcp_agent_grants g WHERE g.server_id = s.id)
           AND s.owner_id IN (%(owner)s, '')))
ORDER BY s.name, s.id
"""


def config_from_row(row: dict) -> ServerConfig:
    from gateway import state

    box = state.box()
    headers = box.decrypt_json(row["headers"]) if row.get("headers") else {}
    env = box.decrypt_json(row["env"]) if row.get("env") else {}
    return ServerConfig(
        id=str(row["id"]),
        name=row["name"],
        transport=row["transport"],
        version=row["updated_at"].isoformat() if hasattr(row["updated_at"], "isoformat") else str(row["updated_at"]),
        command=row.get("command"),
        args=tuple(row.get("args") or ()),
        url=row.get("url"),
        headers={str(k): str(v) for k, v in (headers or {}).items()},
        env={str(k): str(v) for k, v in (env or {}).items()},
        timeout_s=float(row.get("timeout_seconds") or 60),
        tool_prefix=row.get("tool_prefix"),
    )


async def check_reachable_url(cfg: ServerConfig) -> None:
    """SSRF guard at connect time too (DNS may have changed since the server was saved)."""
    if cfg.transport != "stdio" and cfg.url:
        from gateway import netguard
        from gateway.errors import ApiError

        try:
            await netguard.check_url(cfg.url, "MCP server URL")
        except ApiError as exc:
            raise McpUnavailable(exc.message()) from None


def _input_schema(raw: dict) -> dict:
    schema = dict(raw) if isinstance(raw, dict) else {}
    if schema.get("type") != "object":
        schema["type"] = "object"
    schema.setdefault("properties", {})
    return schema


def make_tool(cfg: ServerConfig, listed: dict) -> Tool:
    original = listed["name"]

    async def run(arguments: dict, ctx: ToolContext) -> ToolResult:
        await check_reachable_url(cfg)
        try:
            return await manager.call_tool(cfg, original, arguments)
        except McpError as exc:
            return ToolResult(str(exc), True)

    description = listed.get("description") or f"{original} (MCP server {cfg.name})"
    return Tool(cfg.tool_name(original), description, _input_schema(listed.get("input_schema")), run, "mcp",
                secrets=tuple(cfg.secrets()), timeout=cfg.timeout_s * 2 + 5)


async def _server_tools(cfg: ServerConfig) -> list[Tool]:
    try:
        await check_reachable_url(cfg)
        listed = await manager.list_tools(cfg, within_s=min(cfg.timeout_s, DISCOVERY_TIMEOUT_CAP_S))
    except McpError as exc:
        log.warning("MCP server %s skipped for this run: %s", cfg.name, exc)
        return []
    return [make_tool(cfg, item) for item in listed]


async def tools_for(agent: dict) -> list[Tool]:
    """Tools of the enabled MCP servers granted to `agent` (servers that fail are skipped)."""
    rows = await db.fetch_all(SERVERS_FOR_AGENT_SQL, {"agent": agent["id"], "owner": agent.get("owner_id") or ""})
    configs = []
    for row in rows:
        try:
            configs.append(config_from_row(row))
        except Exception:
            log.warning("MCP server %s skipped: its secrets cannot be decrypted", row.get("name"))
    batches = await asyncio.gather(*(_server_tools(cfg) for cfg in configs))
    tools, seen = [], set()
    for batch in batches:
        for tool in batch:
            if tool.name not in seen:
                seen.add(tool.name)
                tools.append(tool)
    return tools
