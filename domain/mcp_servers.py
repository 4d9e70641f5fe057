"""MCP servers: CRUD, agent grants and live tool discovery.

* Tenancy as for custom tools: `owner_id` = the creating tenant ('' = shared); non-admins see
  their own and shared servers (others' are 404) and change only their own.
* A `stdio` server runs a command on the gateway host: only admins create one or change its
  command, args or env. `sse` / `streamable-http` URLs must be http(s) and not resolve to a
  private or reserved address (checked on save and again on every connect).
* `headers` and `env` are stored encrypted and shown as {"NAME": "***"}; on update a "***" value
  keeps the stored one. `agent_ids` grants the server to those agents only; empty = every agent
  of its owner (every agent, for a shared server).
* Every change publishes bus kind `mcp_servers`, which closes the server's pooled session on every
  process (the session key also includes `updated_at`, so a stale session is never reused).
"""

from __future__ import annotations

import asyncio
import re
import socket
import uuid
from typing import Any
from urllib.parse import urlsplit

from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb

import db
from agent import mcp
from auth import Principal
from db import bus
from domain import activity
from domain.tools import (
    check_runtime_fields,
    check_secret_map,
    masked,
    modifiable,
    open_map,
    parse_uuid,
    require_admin,
    require_tenant,
    resolve_agent_ids,
    seal_map,
    visible,
)
from gateway import netguard
from gateway.errors import ApiError, bad_request, conflict, not_found

URL_RE = re.compile(
    r"https?://[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?"
    r"(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?([/?#][!-~]*)?"
)
VISIBLE = re.compile(r"[^ \t\r\n\f\v]")  # the contract's "not blank"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")
PREFIX_RE = re.compile(r"^[a-z][a-z0-9_]{0,49}$")
TRANSPORTS = ("stdio", "sse", "streamable-http")
FIELDS = {
    "name", "display_name", "transport", "command", "args", "url", "headers", "env", "tool_prefix",
    "timeout_seconds", "enabled", "agent_ids",
}
STDIO_FIELDS = {"command", "args", "env"}

COLUMNS = """
s.id, s.name, s.display_name, s.transport, s.command, s.args, s.url, s.headers, s.env, s.tool_prefix,
s.timeout_seconds, s.enabled, s.owner_id, s.created_by, s.created_at, s.updated_at,
coalesce((SELECT array_agg(g.agent_id ORDER BY g.created_at, g.agent_id) FROM mcp_agent_grants g
          WHERE g.server_id = s.id), '{}') AS agent_ids
"""
LIST_SQL = f"""
SELECT {COLUMNS} FROM mcp_servers s
WHERE (%(admin)s OR s.owner_id IN (%(user)s, ''))
ORDER BY s.name, s.id
"""
GET_SQL = f"SELECT {COLUMNS} FROM mcp_servers s WHERE s.id = %s"
LOCK_SQL = "SELECT id FROM mcp_servers WHERE id = %s FOR UPDATE"
INSERT_SQL = """
INSERT INTO mcp_servers (name, display_name, transport, command, args, url, headers, env, tool_prefix,
                         timeout_seconds, enabled, owner_id, created_by)
VALUES (%(name)s, %(display_name)s, %(transport)s, %(command)s, %(args)s, %(url)s, %(headers)s, %(env)s,
        %(tool_prefix)s, %(timeout_seconds)s, %(enabled)s, %(owner_id)s, %(created_by)s)
RETURNING id
"""
UPDATE_SQL = """
UPDATE mcp_servers SET name = %(name)s, display_name = %(display_name)s, transport = %(transport)s,
       command = %(command)s, args = %(args)s, url = %(url)s, headers = %(headers)s, env = %(env)s,
       tool_prefix = %(tool_prefix)s, timeout_seconds = %(timeout_seconds)s, enabled = %(enabled)s,
       updated_at = clock_timestamp()
WHERE id = %(id)s
"""
DELETE_SQL = "DELETE FROM mcp_servers WHERE id = %s"
CLEAR_GRANTS_SQL = "DELETE FROM mcp_agent_grants WHERE server_id = %s"
GRANT_SQL = "INSERT INTO mcp_agent_grants (server_id, agent_id, granted_by) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING"


def public(row: dict) -> dict:
    out = {k: v for k, v in row.items() if k not in ("headers", "env")}
    out["display_name"] = row["display_name"] or ""
    out["command"] = row["command"] or ""
    out["url"] = row["url"] or ""
    out["tool_prefix"] = row["tool_prefix"] or ""
    out["headers"] = masked(row["headers"])
    out["env"] = masked(row["env"])
    out["agent_ids"] = [str(a) for a in row["agent_ids"] or []]
    out["agent_count"] = len(out["agent_ids"])
    return out


def _str(field: str, value: Any, limit: int, *, allow_empty: bool = True) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str) or len(value) > limit or (not allow_empty and not value.strip()):
        raise bad_request(f"{field} must be a {'non-empty ' if not allow_empty else ''}string of at most {limit}"
                          " characters")
    return value


def _clean(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request("body must be a JSON object")
    unknown = set(body) - FIELDS
    if unknown:
        raise bad_request(f"unknown field: {sorted(unknown)[0]}")
    values: dict[str, Any] = {}
    if "name" in body:
        if not isinstance(body["name"], str) or not NAME_RE.fullmatch(body["name"]):
            raise bad_request("name must use only a-z, 0-9, _ and - (at most 48 characters, starting with a letter "
                              "or digit)")
        values["name"] = body["name"]
    if "display_name" in body:
        values["display_name"] = _str("display_name", body["display_name"], 255)
    if "transport" in body:
        if body["transport"] not in TRANSPORTS:
            raise bad_request(f"transport must be one of {', '.join(TRANSPORTS)}")
        values["transport"] = body["transport"]
    if "command" in body:
        values["command"] = _str("command", body["command"], 4096)
    if "args" in body:
        args = body["args"] if body["args"] is not None else []
        if not isinstance(args, list) or len(args) > 100 or not all(isinstance(a, str) and len(a) <= 4096
                                                                    for a in args):
            raise bad_request("args must be a list of at most 100 strings")
        values["args"] = args
    if "url" in body:
        values["url"] = _str("url", body["url"], 2048)
    if "tool_prefix" in body:
        prefix = body["tool_prefix"] or ""
        if prefix and (not isinstance(prefix, str) or not PREFIX_RE.fullmatch(prefix)):
            raise bad_request("tool_prefix must use only a-z, 0-9 and _ (at most 50 characters, "
                              "starting with a letter)")
        values["tool_prefix"] = prefix
    values.update(check_runtime_fields(body))
    return values


async def _check_shape(merged: dict) -> None:
    if merged["transport"] == "stdio":
        if not VISIBLE.search(merged.get("command") or ""):
            raise ApiError(400, "error.required", "command (for the stdio transport)")
        if "\x00" in merged["command"] or any("\x00" in a for a in merged.get("args") or []):
            raise bad_request("command and args must not contain NUL characters")
    else:
        url = merged.get("url") or ""
        if not url:
            raise ApiError(400, "error.required", f"url (for the {merged['transport']} transport)")
        await check_url(url)


async def check_url(url: str) -> None:
    """400 for a URL that is not http(s) with a host; 403 when its host resolves to a private or
    reserved address (SSRF guard). A host that does not resolve yet is accepted: every connect
    checks again."""
    if not URL_RE.fullmatch(url):
        raise bad_request("url must be an http(s) URL with a host name or IPv4 address")
    host = urlsplit(url).hostname or ""
    try:
        await asyncio.get_running_loop().getaddrinfo(host, 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return
    try:
        await netguard.check_url(url, "url")
    except ApiError:
        raise ApiError(403, "error.ssrf_refused", "url") from None


async def _row(principal: Principal, server_id: str, *, conn=None) -> dict:
    uid = parse_uuid(server_id, "server")
    row = await db.fetch_one(GET_SQL, (uid,), conn=conn)
    if row is None or not visible(principal, row["owner_id"]):
        raise not_found("server", server_id)
    return row


async def _set_grants(conn, principal: Principal, server_id: uuid.UUID, agent_ids: list[uuid.UUID]) -> None:
    await db.execute(CLEAR_GRANTS_SQL, (server_id,), conn=conn)
    for agent_id in agent_ids:
        await db.execute(GRANT_SQL, (server_id, agent_id, principal.actor_id[:255]), conn=conn)


async def list_servers(principal: Principal) -> dict:
    rows = await db.fetch_all(LIST_SQL, {"admin": principal.is_admin, "user": principal.user_id})
    return {"servers": [public(r) for r in rows]}


async def get_server(principal: Principal, server_id: str) -> dict:
    return public(await _row(principal, server_id))


async def create_server(principal: Principal, body: Any) -> dict:
    values = _clean(body)
    for field in ("name", "transport"):
        if field not in values:
            raise ApiError(400, "error.required", field)
    if values["transport"] == "stdio":
        require_admin(principal, "add stdio MCP servers (they run commands on the gateway host)")
    require_tenant(principal)
    merged = {"command": "", "args": [], "url": "", **values}
    await _check_shape(merged)
    headers = check_secret_map("headers", body.get("headers"))
    env = check_secret_map("env", body.get("env"))
    agent_ids = await resolve_agent_ids(principal, body.get("agent_ids"))
    params = {
        "name": values["name"],
        "display_name": values.get("display_name") or None,
        "transport": values["transport"],
        "command": merged["command"] or None,
        "args": Jsonb(merged["args"]),
        "url": merged["url"] or None,
        "headers": seal_map(headers),
        "env": seal_map(env),
        "tool_prefix": values.get("tool_prefix") or None,
        "timeout_seconds": values.get("timeout_seconds", 60),
        "enabled": values.get("enabled", True),
        "owner_id": principal.user_id,
        "created_by": principal.actor_id[:255],
    }
    try:
        async with db.transaction() as conn:
            server_id = (await db.fetch_one(INSERT_SQL, params, conn=conn))["id"]
            await _set_grants(conn, principal, server_id, agent_ids)
            details = {"name": values["name"], "transport": values["transport"]}
            await activity.record(conn, principal, "mcp_server.created", "mcp_server", str(server_id), details)
            await bus.publish(conn, "mcp_servers", id=str(server_id))
            row = await db.fetch_one(GET_SQL, (server_id,), conn=conn)
    except pg_errors.UniqueViolation:
        raise conflict("MCP server", values["name"]) from None
    return public(row)


async def update_server(principal: Principal, server_id: str, body: Any) -> dict:
    values = _clean(body)
    try:
        async with db.transaction() as conn:
            await db.fetch_one(LOCK_SQL, (parse_uuid(server_id, "server"),), conn=conn)
            current = await _row(principal, server_id, conn=conn)
            if not modifiable(principal, current["owner_id"]):
                raise ApiError(403, "error.admin_only", "change a shared MCP server")
            merged = {
                "transport": current["transport"], "command": current["command"] or "", "args": current["args"],
                "url": current["url"] or "", **values,
            }
            if "transport" in values:  # switching (or restating) the transport names its endpoint too
                needed = "command" if values["transport"] == "stdio" else "url"
                if needed not in values:
                    raise ApiError(400, "error.required", f"{needed} (with transport {values['transport']})")
            if merged["transport"] == "stdio" and (current["transport"] != "stdio" or STDIO_FIELDS & set(body)):
                require_admin(principal, "change the command of stdio MCP servers")
            await _check_shape(merged)
            headers_sealed, env_sealed = current["headers"], current["env"]
            if "headers" in body:
                current_headers = open_map(current["headers"], "MCP server headers")
                headers_sealed = seal_map(check_secret_map("headers", body["headers"], current=current_headers))
            if "env" in body:
                env_sealed = seal_map(check_secret_map("env", body["env"], current=open_map(current["env"],
                                                                                           "MCP server env")))
            params = {
                "id": current["id"],
                "name": values.get("name", current["name"]),
                "display_name": values.get("display_name", current["display_name"]) or None,
                "transport": merged["transport"],
                "command": merged["command"] or None,
                "args": Jsonb(merged["args"] or []),
                "url": merged["url"] or None,
                "headers": headers_sealed,
                "env": env_sealed,
                "tool_prefix": values.get("tool_prefix", current["tool_prefix"]) or None,
                "timeout_seconds": values.get("timeout_seconds", current["timeout_seconds"]),
                "enabled": values.get("enabled", current["enabled"]),
            }
            await db.execute(UPDATE_SQL, params, conn=conn)
            if "agent_ids" in body:
                await _set_grants(conn, principal, current["id"], await resolve_agent_ids(principal, body["agent_ids"]))
            details = {"name": params["name"], "fields": sorted(body)}
            await activity.record(conn, principal, "mcp_server.updated", "mcp_server", str(current["id"]), details)
            await bus.publish(conn, "mcp_servers", id=str(current["id"]))
            row = await db.fetch_one(GET_SQL, (current["id"],), conn=conn)
    except pg_errors.UniqueViolation:
        raise conflict("MCP server", values.get("name")) from None
    await mcp.manager.invalidate(str(row["id"]))
    return public(row)


async def delete_server(principal: Principal, server_id: str) -> dict:
    async with db.transaction() as conn:
        await db.fetch_one(LOCK_SQL, (parse_uuid(server_id, "server"),), conn=conn)
        current = await _row(principal, server_id, conn=conn)
        if not modifiable(principal, current["owner_id"]):
            raise ApiError(403, "error.admin_only", "delete a shared MCP server")
        await db.execute(DELETE_SQL, (current["id"],), conn=conn)
        await activity.record(conn, principal, "mcp_server.deleted", "mcp_server", str(current["id"]),
                              {"name": current["name"]})
        await bus.publish(conn, "mcp_servers", id=str(current["id"]))
    await mcp.manager.invalidate(str(current["id"]))
    mcp.forget_stderr_log(str(current["id"]))
    return {"status": "deleted", "id": str(current["id"]), "name": current["name"]}


async def list_server_tools(principal: Principal, server_id: str) -> dict:
    """Connect (or reuse the pooled session) and list the server's tools. 502 when the server cannot
    be reached or refuses, 504 when it does not answer within its timeout (at most 30 s)."""
    row = await _row(principal, server_id)
    try:
        cfg = mcp.config_from_row(row)
    except Exception:
        raise ApiError(409, "error.secrets_unreadable", "MCP server headers/env") from None
    try:
        await mcp.check_reachable_url(cfg)
        listed = await mcp.manager.list_tools(cfg, fresh=True, within_s=min(cfg.timeout_s,
                                                                             mcp.DISCOVERY_TIMEOUT_CAP_S))
    except mcp.McpTimeout as exc:
        raise ApiError(504, "error.mcp", str(exc)) from None
    except mcp.McpError as exc:
        raise ApiError(502, "error.mcp", str(exc)) from None
    tools = [
        {"name": t["name"], "tool_name": cfg.tool_name(t["name"]), "description": t["description"],
         "input_schema": t["input_schema"]}
        for t in listed
    ]
    return {"tools": tools, "server": cfg.name}
