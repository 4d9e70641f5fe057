"""The method table: name → required scope → domain call. One table, printed in the README.

Every method calls the same domain function as the HTTP operation of the same capability, so
validation, tenancy, audit rows and bus events are identical; a domain `ApiError` becomes an
error frame (`ws.protocol.error_code`). The required scope is checked with
`Principal.has_scope()` — the gateway token and admin keys hold every scope, a key holds what it
was given (any key may read), auth-disabled callers everything but `operator.admin`.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import db
from auth.security import resolve_token
from domain import agents, api_keys, channels, logs, providers, runs, sessions, skills, usage
from gateway import state
from gateway.errors import ApiError, bad_request, not_found
from gateway.i18n import SUPPORTED, translate
from ws import chat, events, protocol
from ws.connection import Connection
from ws.protocol import text_param

log = logging.getLogger("goclaw.ws")

MAX_DETACHED = 16  # detached calls in flight per connection; beyond, they run in order
READ, WRITE, ADMIN = "operator.read", "operator.write", "operator.admin"
ROLE_OF_SCOPE = {None: "any", READ: "viewer", WRITE: "operator", ADMIN: "admin"}

try:
    VERSION = importlib.metadata.version("goclaw-py")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    VERSION = "0.1.0"


@dataclass(frozen=True)
class Method:
    scope: str | None  # None: any authenticated caller (and `connect`: anyone)
    handler: Callable[..., Awaitable[Any]]
    summary: str
    detach: bool = False  # runs beside the reader (slow upstream calls), not in request order
    raw: bool = False  # handler(conn, req_id, params); may answer later (chat.send)


# ---- parameter helpers ----------------------------------------------------------------------------

def _int(params: dict, name: str, lo: int, hi: int) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise bad_request(f"{name} must be an integer between {lo} and {hi}")
    return value


def _object(params: dict, name: str) -> dict:
    value = params.get(name)
    if not isinstance(value, dict):
        raise bad_request(f"{name} must be an object")
    return value


def _principal(conn: Connection):
    assert conn.principal is not None
    return conn.principal


# ---- system ---------------------------------------------------------------------------------------

def _locale(raw: Any) -> str:
    if isinstance(raw, str) and raw[:2].lower() in SUPPORTED:
        return raw[:2].lower()
    return "en"


async def connect(conn: Connection, params: dict) -> dict:
    """Gateway token → admin; API key → role from its scopes; no token with auth disabled →
    operator. A missing or wrong token is an UNAUTHORIZED error (and the socket stays
    unauthenticated), never a silent downgrade."""
    conn.locale = _locale(params.get("locale"))
    token = params.get("token")
    if token is not None and not isinstance(token, str):
        raise bad_request("token must be a string")
    token = (token or "").strip() or None
    user = params.get("user_id")
    if user is not None and not isinstance(user, str):
        raise bad_request("user_id must be a string")
    try:
        principal = await resolve_token(token, user, conn.remote)
    except ApiError as exc:
        if exc.status == 401:
            events.detach(conn)
            conn.principal, conn.token = None, None
            conn.failed_connects += 1
            raise ApiError(401, "error.ws_token_required" if token is None else "error.invalid_auth") from None
        raise
    conn.principal = principal
    conn.token = token if principal.kind == "api_key" else None
    conn.failed_connects = 0
    events.attach(conn)
    return {
        "protocol": protocol.PROTOCOL,
        "role": principal.role.name.lower(),
        "user_id": principal.user_id,
        "scopes": sorted(s for s in ("operator.admin", "operator.read", "operator.write", "operator.approvals",
                                     "operator.pairing") if principal.has_scope(s)),
        "connectionId": conn.id,
        "server": {"name": protocol.SERVER_NAME, "version": VERSION},
    }


def _client(conn: Connection) -> dict:
    principal = conn.principal
    return {"id": conn.id, "remoteAddr": conn.remote, "userId": principal.user_id if principal else "",
            "role": principal.role.name.lower() if principal else "", "connectedAt": conn.connected_at}


async def health(conn: Connection, params: dict) -> dict:
    principal = _principal(conn)
    database = "ok" if await db.ping(2.0) else "error"
    clients = [_client(c) for c in events.connections()] if principal.is_admin else [_client(conn)]
    result = {
        "status": "ok" if database == "ok" else "degraded", "version": VERSION,
        "uptime": int((time.monotonic() - state.started_at) * 1000), "mode": "managed", "database": database,
        "protocol": protocol.PROTOCOL, "clients": clients, "currentId": conn.id,
    }
    if principal.is_admin:  # which process answers, and which peers it hears (cross-process routing)
        result.update(process=runs.PROCESS_ID, peers=runs.peers())
    return result


async def status(conn: Connection, params: dict) -> dict:
    principal = _principal(conn)
    listed = await agents.list_agents(principal, 100, 0)
    running = runs.running_agents()
    visible_runs = [e for e in runs.local_runs() if e.entitled(principal.user_id, principal.is_admin)]
    return {
        "agents": [{"id": a["agent_key"], "model": a["model"], "isRunning": a["agent_key"] in running}
                   for a in listed["agents"]],
        "agentTotal": listed["total"],
        "clients": events.count() if principal.is_admin else 1,
        "sessions": await sessions.count_sessions(principal),
        "runs": len(visible_runs),
    }


# ---- sessions -------------------------------------------------------------------------------------

def _session_info(row: dict) -> dict:
    """The reference's SessionInfo (note `userID`)."""
    info: dict[str, Any] = {
        "key": row["session_key"], "messageCount": row["message_count"], "created": row["created_at"],
        "updated": row["updated_at"], "inputTokens": row["input_tokens"], "outputTokens": row["output_tokens"],
        "agentId": row["agent_key"],
    }
    optional = {"label": row["label"], "channel": row["channel"], "userID": row["user_id"],
                "metadata": row["metadata"], "model": row["model"], "provider": row["provider"],
                "agentName": row["agent_name"]}
    info.update({k: v for k, v in optional.items() if v})
    return info


async def sessions_list(conn: Connection, params: dict) -> dict:
    await chat.settle()  # read-your-writes: turns are written behind
    listed = await sessions.list_sessions(
        _principal(conn), text_param(params, "agentId", limit=100), _int(params, "limit", 1, 200),
        _int(params, "offset", 0, 2_000_000_000),
    )
    return {**listed, "sessions": [_session_info(r) for r in listed["sessions"]]}


async def sessions_preview(conn: Connection, params: dict) -> dict:
    key = sessions.check_key(params.get("key"))
    await chat.settle(key)
    return await sessions.preview(_principal(conn), key,
                                  _int(params, "limit", 1, 1000) or 200)


async def sessions_patch(conn: Connection, params: dict) -> dict:
    key = sessions.check_key(params.get("key"))
    await chat.settle(key)
    return await sessions.patch(_principal(conn), key, label=params.get("label"),
                                model=params.get("model"), metadata=params.get("metadata"))


async def sessions_delete(conn: Connection, params: dict) -> dict:
    key = sessions.check_key(params.get("key"))
    if runs.busy(key) is not None:
        raise ApiError(409, "error.session_busy", key, runs.busy(key) or "starting")
    await chat.settle(key)
    return await sessions.delete(_principal(conn), key)


async def sessions_reset(conn: Connection, params: dict) -> dict:
    key = sessions.check_key(params.get("key"))
    if runs.busy(key) is not None:
        raise ApiError(409, "error.session_busy", key, runs.busy(key) or "starting")
    await chat.settle(key)
    return await sessions.reset(_principal(conn), key)


# ---- agents, models, skills -----------------------------------------------------------------------

def _agent_info(row: dict, running: set[str]) -> dict:
    return {"id": row["agent_key"], "uuid": row["id"], "name": row["display_name"] or row["agent_key"],
            "displayName": row["display_name"], "model": row["model"], "provider": row["provider"],
            "agentType": row["agent_type"], "status": row["status"], "isDefault": row["is_default"],
            "isRunning": row["agent_key"] in running}


async def agents_list(conn: Connection, params: dict) -> dict:
    listed = await agents.list_agents(_principal(conn), _int(params, "limit", 1, 500),
                                      _int(params, "offset", 0, 2_000_000_000))
    running = runs.running_agents()
    return {**listed, "agents": [_agent_info(a, running) for a in listed["agents"]]}


async def agent(conn: Connection, params: dict) -> dict:
    row = await agents.resolve(_principal(conn), text_param(params, "agentId", limit=100) or "default")
    return _agent_info(row, runs.running_agents())


async def agent_identity(conn: Connection, params: dict) -> dict:
    """Display identity; like the reference it never fails: an agent the caller cannot see
    (or that does not exist) answers with just its id."""
    ref = chat.agent_ref(params)
    try:
        row = await agents.resolve(_principal(conn), ref)
    except ApiError as exc:
        if exc.status == 404:
            return {"agentId": ref}
        raise
    identity = {"agentId": row["agent_key"], "name": row["display_name"] or row["agent_key"]}
    if row["description"]:
        identity["description"] = row["description"]
    for name in ("emoji", "avatar"):
        value = (row["other_config"] or {}).get(name)
        if isinstance(value, str) and value:
            identity[name] = value
    return identity


async def models_list(conn: Connection, params: dict) -> dict:
    """The upstream's models (GET /v1/providers/{id}/models) of `provider`, or of the provider
    of `agentId` (default: the default agent)."""
    principal = _principal(conn)
    ref = text_param(params, "provider", limit=100)
    if ref is None:
        row = await agents.resolve(principal, text_param(params, "agentId", limit=100) or "default")
        ref = row["provider"]
        if not ref:
            raise bad_request(f"agent {row['agent_key']} has no provider")
    known = (await providers.list_providers(principal))["providers"]
    provider = next((p for p in known if ref in (str(p["id"]), p["name"])), None)
    if provider is None:
        raise not_found("provider", ref)
    return {"provider": provider["name"], **await providers.list_models(principal, str(provider["id"]))}


async def skills_list(conn: Connection, params: dict) -> dict:
    return await skills.list_skills(_principal(conn))


# ---- API keys ---------------------------------------------------------------------------------------

async def api_keys_list(conn: Connection, params: dict) -> list:
    return await api_keys.list_keys()  # a bare array, as the reference


async def api_keys_create(conn: Connection, params: dict) -> dict:
    name = text_param(params, "name", required=True, limit=100)
    scopes = params.get("scopes")
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise bad_request("scopes must be a list of strings")
    expires_in = _int(params, "expires_in", 0, api_keys.MAX_EXPIRES_IN)
    return await api_keys.create(_principal(conn), name or "", scopes, expires_in)


async def api_keys_revoke(conn: Connection, params: dict) -> dict:
    return await api_keys.revoke(_principal(conn), text_param(params, "id", required=True, limit=100) or "")


# ---- channel instances ------------------------------------------------------------------------------

async def instances_list(conn: Connection, params: dict) -> dict:
    return await channels.list_instances(
        _principal(conn), search=text_param(params, "search", limit=200),
        channel_type=text_param(params, "channel_type", limit=50),
        limit=_int(params, "limit", 1, 200), offset=_int(params, "offset", 0, 2_000_000_000),
    )


async def instances_get(conn: Connection, params: dict) -> dict:
    return await channels.get_instance(_principal(conn), text_param(params, "id", required=True, limit=100) or "")


async def instances_create(conn: Connection, params: dict) -> dict:
    return await channels.create_instance(_principal(conn), params)


async def instances_update(conn: Connection, params: dict) -> dict:
    """`{id, updates: {...}}` as the reference (the fields beside `id` are accepted too)."""
    ident = text_param(params, "id", required=True, limit=100) or ""
    changes = _object(params, "updates") if "updates" in params else {k: v for k, v in params.items() if k != "id"}
    return await channels.update_instance(_principal(conn), ident, changes)


async def instances_delete(conn: Connection, params: dict) -> dict:
    return await channels.delete_instance(_principal(conn), text_param(params, "id", required=True, limit=100) or "")


# ---- usage, logs --------------------------------------------------------------------------------------

async def usage_summary(conn: Connection, params: dict) -> dict:
    period = text_param(params, "period", limit=10) or "24h"
    if period != "today" and period not in usage.SUMMARY_PERIODS:
        raise bad_request("period must be one of today, " + ", ".join(usage.SUMMARY_PERIODS))
    return await usage.summary(_principal(conn), period, text_param(params, "agentId", limit=100))


async def logs_tail(conn: Connection, params: dict) -> dict:
    """start: replay the recent records at or above `level` as `log` events, then stream new
    ones (this process's log); stop: end it."""
    action = params.get("action")
    if action == "stop":
        events.tail(conn, None)
        return {"status": "stopped"}
    if action != "start":
        raise bad_request("action must be start or stop")
    level = logs.parse_level(params.get("level"))
    for record in logs.recent(level, _int(params, "replay", 0, 1000) or 100):
        conn.push(protocol.event("log", logs.public(record)), droppable=True)
    events.tail(conn, level)
    return {"status": "tailing", "level": params.get("level") or "info"}


# ---- the table -----------------------------------------------------------------------------------------

METHODS: dict[str, Method] = {
    "connect": Method(None, connect, "authenticate `{token, user_id, locale}`; must come first"),
    "health": Method(None, health, "status, uptime, database, clients (admins: all; others: own)"),
    "status": Method(READ, status, "visible agents with `isRunning`, session and client counts"),
    "chat.send": Method(WRITE, chat.send, "run the agent on a message; streams `agent` events", raw=True),
    "chat.history": Method(READ, chat.history, "a session's messages (`[]` for unknown/foreign keys)"),
    "chat.abort": Method(WRITE, chat.abort, "cancel a run by `runId` or every run of `sessionKey`"),
    "chat.inject": Method(WRITE, chat.inject, "add a message to the session's running turn (or a note)"),
    "sessions.list": Method(READ, sessions_list, "the caller's sessions, newest first"),
    "sessions.preview": Method(READ, sessions_preview, "one session's messages and summary"),
    "sessions.patch": Method(WRITE, sessions_patch, "set label / model / metadata"),
    "sessions.delete": Method(WRITE, sessions_delete, "delete a session and its messages"),
    "sessions.reset": Method(WRITE, sessions_reset, "clear a session's messages and summary"),
    "agents.list": Method(READ, agents_list, "visible agents (GET /v1/agents)"),
    "agent": Method(READ, agent, "one agent (GET /v1/agents/{id})"),
    "agent.identity.get": Method(READ, agent_identity, "display name, description, emoji, avatar"),
    "models.list": Method(READ, models_list, "a provider's models (GET /v1/providers/{id}/models)", detach=True),
    "skills.list": Method(READ, skills_list, "visible skills (GET /v1/skills)"),
    "api_keys.list": Method(ADMIN, api_keys_list, "API keys, never the hash (GET /v1/api-keys)"),
    "api_keys.create": Method(ADMIN, api_keys_create, "create a key; the raw key is shown once"),
    "api_keys.revoke": Method(ADMIN, api_keys_revoke, "revoke a key (everywhere within a second)"),
    "channels.instances.list": Method(READ, instances_list, "channel instances (GET /v1/channels/instances)"),
    "channels.instances.get": Method(READ, instances_get, "one instance, credentials masked"),
    "channels.instances.create": Method(WRITE, instances_create, "create an instance"),
    "channels.instances.update": Method(WRITE, instances_update, "change an instance: `{id, updates}`"),
    "channels.instances.delete": Method(WRITE, instances_delete, "delete an instance"),
    "usage.summary": Method(READ, usage_summary, "usage totals (GET /v1/usage/summary)"),
    "logs.tail": Method(ADMIN, logs_tail, "`{action: start or stop, level}`: this process's log as `log` events"),
}


def table() -> str:
    """The permission matrix as a Markdown table (README "WebSocket RPC")."""
    lines = ["| Method | Scope | Lowest role | What |", "|---|---|---|---|"]
    for name, method in METHODS.items():
        scope = f"`{method.scope}`" if method.scope else ("none" if name == "connect" else "authenticated")
        lines.append(f"| `{name}` | {scope} | {ROLE_OF_SCOPE[method.scope]} | {method.summary} |")
    return "\n".join(lines)


# ---- dispatch ---------------------------------------------------------------------------------------------

def _fail(conn: Connection, req_id: str, code: str, key: str, *args: object) -> None:
    conn.push(protocol.error_response(req_id, code, translate(conn.locale, key, *args)))


async def handle(conn: Connection, raw: str | bytes) -> None:
    """One inbound message → at most one `res` (now, or later for chat.send / detached methods)."""
    try:
        frame = protocol.decode(raw)
    except ValueError as exc:
        _fail(conn, "", protocol.INVALID_REQUEST, "error.ws_invalid_frame", str(exc).split(":")[0])
        return
    if not isinstance(frame, dict):
        _fail(conn, "", protocol.INVALID_REQUEST, "error.ws_invalid_frame", "expected a JSON object")
        return
    kind = frame.get("type")
    if kind != "req":
        shown = kind if isinstance(kind, str) else json.dumps(kind)
        _fail(conn, "", protocol.INVALID_REQUEST, "error.ws_unexpected_frame", shown[:50])
        return
    req_id, name, params = frame.get("id"), frame.get("method"), frame.get("params")
    if not isinstance(req_id, str) or len(req_id) > 256:
        _fail(conn, "", protocol.INVALID_REQUEST, "error.ws_malformed", "id must be a string of at most 256 characters")
        return
    if not isinstance(name, str) or not name:
        _fail(conn, "", protocol.INVALID_REQUEST, "error.ws_malformed", "method must be a non-empty string")
        return
    if name != "connect" and not conn.authenticated:
        _fail(conn, req_id, protocol.UNAUTHORIZED, "error.ws_connect_first")
        return
    method = METHODS.get(name)
    if method is None:
        _fail(conn, req_id, protocol.INVALID_REQUEST, "error.ws_unknown_method", name[:100])
        return
    if params is None:
        params = {}
    if not isinstance(params, dict):
        _fail(conn, req_id, protocol.INVALID_REQUEST, "error.invalid_request", "params must be an object")
        return
    if method.detach and len(conn.tasks) < MAX_DETACHED:
        task = _spawn(conn, _call(conn, name, method, req_id, params))
        conn.tasks.add(task)
        task.add_done_callback(conn.tasks.discard)
    else:
        await _call(conn, name, method, req_id, params)


def _spawn(conn: Connection, coro) -> asyncio.Task:
    return asyncio.get_running_loop().create_task(coro, name=f"ws-call-{conn.id[:8]}")


async def _call(conn: Connection, name: str, method: Method, req_id: str, params: dict) -> None:
    try:
        if name != "connect":
            await _check_credential(conn)
            principal = _principal(conn)
            if method.scope is not None and not principal.has_scope(method.scope):
                raise ApiError(403, "error.permission_denied", name)
        result = await (method.handler(conn, req_id, params) if method.raw else method.handler(conn, params))
    except ApiError as exc:
        conn.push(protocol.error_response(req_id, protocol.error_code(exc), exc.message(conn.locale),
                                          retry_after_ms=protocol.retry_after_ms(exc)))
        return
    except Exception:
        log.exception("ws method %s failed", name)
        conn.push(protocol.error_response(req_id, protocol.INTERNAL, translate(conn.locale, "error.internal", name)))
        return
    if result is not chat.DEFERRED:
        conn.push(protocol.response(req_id, result))


async def _check_credential(conn: Connection) -> None:
    """An API key must still be live (not revoked, not expired) at every request."""
    principal = _principal(conn)
    if principal.kind == "api_key" and (conn.token is None or await state.key_cache.lookup(conn.token) is None):
        events.detach(conn)
        conn.principal, conn.token = None, None
        raise ApiError(401, "error.invalid_auth")
