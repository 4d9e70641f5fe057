"""Built-in tools (toggle + settings) and custom tools (CRUD), shared by HTTP and WebSocket.

Built-in tools are global: viewers read them, only admins change them (enabling `exec` gives every
agent a command runner). Custom tools run a command on the gateway host, so only admins define
or change them; any operator may delete what it owns. Tenancy: a custom tool belongs to the
tenant that created it (`owner_id` = X-GoClaw-User-Id, '' = shared); non-admins see their own
and shared ones, others' are 404. `env` values are stored encrypted and always shown as "***";
on update a "***" value keeps the stored one for that key.
"""

from __future__ import annotations

import json
import re
import shlex
import uuid
from typing import Any

from jsonschema import SchemaError
from jsonschema.validators import validator_for
from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb

import db
from agent.builtin import BUILTINS
from agent.custom import PLACEHOLDER, placeholders
from agent.tools import describe_error
from auth import Principal
from db import bus
from domain import activity
from domain import agents as agents_domain
from domain.paging import page
from gateway import state
from gateway.errors import ApiError, bad_request, conflict, not_found
from gateway.secrets import MASK, SecretError

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
MAX_ENV = 50
MAX_ENV_VALUE = 8192
MAX_SCHEMA_BYTES = 64 * 1024
MAX_ARGV = 2048  # the contract caps the list form at 64; a string may split into more
MAX_ARG = 4096
MAX_DESCRIPTION = 4000
DEFAULT_PARAMETERS = {"type": "object", "properties": {}}


def require_admin(principal: Principal, what: str) -> None:
    if not principal.is_admin:
        raise ApiError(403, "error.admin_only", what)


def parse_uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        raise ApiError(400, "error.invalid_id", what) from None


def visible(principal: Principal, owner_id: str) -> bool:
    return principal.is_admin or owner_id in (principal.user_id, "")


def modifiable(principal: Principal, owner_id: str) -> bool:
    """Owner or admin. Shared objects (owner '') are admin-only: a key that names no tenant must
    not become the owner of everything shared (with authentication disabled, anyone may)."""
    if principal.is_admin or principal.kind == "anonymous":
        return True
    return owner_id != "" and owner_id == principal.user_id


def require_tenant(principal: Principal) -> None:
    """Non-admins create objects for a tenant: without X-GoClaw-User-Id the object would be shared
    ('' owner) and reach every tenant's agents."""
    if not principal.is_admin and principal.kind != "anonymous" and not principal.user_id:
        raise ApiError(400, "error.user_id_header")


# --- shared validators (also used by MCP servers) ------------------------------------------------


def check_runtime_fields(body: dict) -> dict:
    """`timeout_seconds` (1..300) and `enabled`, as custom tools and MCP servers both take them."""
    values: dict[str, Any] = {}
    if "timeout_seconds" in body:
        timeout = body["timeout_seconds"]
        if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= 300:
            raise bad_request("timeout_seconds must be an integer between 1 and 300")
        values["timeout_seconds"] = timeout
    if "enabled" in body:
        if not isinstance(body["enabled"], bool):
            raise bad_request("enabled must be a boolean")
        values["enabled"] = body["enabled"]
    return values


def check_secret_map(field: str, value: Any, *, current: dict | None = None) -> dict:
    """A {name: string} map of secrets. "***" keeps the current value of that key."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request(f"{field} must be an object of strings")
    if len(value) > MAX_ENV:
        raise bad_request(f"{field} may have at most {MAX_ENV} entries")
    out: dict[str, str] = {}
    for key, item in value.items():
        # names are not policed here (the contract cannot state a rule for map keys): a name the OS
        # or HTTP refuses ('', "A=B", "bad header") is skipped when the process starts / fails the connect
        if not isinstance(item, str):
            raise bad_request(f"{field}.{key} must be a string")
        if len(item) > MAX_ENV_VALUE:
            raise bad_request(f"{field}.{key} must be {MAX_ENV_VALUE} characters or less")
        if any(ch in item for ch in "\r\n\x00"):
            raise bad_request(f"{field}.{key} must not contain line breaks")
        if item == MASK:
            if current is None or key not in current:
                raise bad_request(f"{field}.{key}: \"***\" keeps a stored value, but there is none")
            item = current[key]
        out[key] = item
    return out


def seal_map(values: dict[str, str]) -> str | None:
    return state.box().encrypt_json(values) if values else None


def open_map(stored: str | None, what: str) -> dict[str, str]:
    if not stored:
        return {}
    try:
        value = state.box().decrypt_json(stored)
    except SecretError:
        raise ApiError(409, "error.secret_unreadable", what) from None
    return value if isinstance(value, dict) else {}


def masked(stored: str | None) -> dict[str, str]:
    """Names of a sealed map with masked values, without needing the key ({"TOKEN": "***"})."""
    if not stored:
        return {}
    try:
        return {k: MASK for k in state.box().decrypt_json(stored)}
    except (SecretError, ValueError, TypeError):
        return {}


async def resolve_agent_ids(principal: Principal, refs: Any, field: str = "agent_ids") -> list[uuid.UUID]:
    if refs is None:
        return []
    if not isinstance(refs, list) or len(refs) > 100:
        raise bad_request(f"{field} must be a list of at most 100 agent ids or keys")
    ids: list[uuid.UUID] = []
    for ref in refs:
        if not isinstance(ref, str) or not ref or len(ref) > 100:
            raise bad_request(f"{field}: invalid agent reference")
        agent = await agents_domain.resolve(principal, ref)  # 404 for an agent the caller cannot see
        if agent["id"] not in ids:
            ids.append(agent["id"])
    return ids


# --- built-in tools ------------------------------------------------------------------------------

BUILTIN_COLUMNS = (
    "name, display_name, description, category, parameters, enabled, settings, requires, metadata,"
    " created_at, updated_at"
)
BUILTIN_LIST_SQL = f"SELECT {BUILTIN_COLUMNS} FROM builtin_tools ORDER BY category, name"
BUILTIN_GET_SQL = f"SELECT {BUILTIN_COLUMNS} FROM builtin_tools WHERE name = %s"
BUILTIN_UPDATE_SQL = f"""
UPDATE builtin_tools SET enabled = %(enabled)s, settings = %(settings)s, updated_at = now()
WHERE name = %(name)s RETURNING {BUILTIN_COLUMNS}
"""


def public_builtin(row: dict) -> dict:
    builtin = BUILTINS.get(row["name"])
    out = dict(row)
    out["settings"] = builtin.effective_settings(row["settings"]) if builtin else (row["settings"] or {})
    out["settings_schema"] = builtin.settings_schema if builtin else {"type": "object"}
    out["requires"] = list(row["requires"] or [])
    return out


async def list_builtin(principal: Principal) -> dict:
    return {"tools": [public_builtin(r) for r in await db.fetch_all(BUILTIN_LIST_SQL)]}


async def get_builtin(principal: Principal, name: str) -> dict:
    row = await db.fetch_one(BUILTIN_GET_SQL, (name,))
    if row is None:
        raise not_found("tool", name)
    return public_builtin(row)


def _all_settings_keys() -> dict[str, dict]:
    keys: dict[str, dict] = {}
    for builtin in BUILTINS.values():
        keys.update(builtin.settings_schema.get("properties", {}))
    return keys


SETTINGS_SCHEMA = {"type": "object", "additionalProperties": False, "properties": _all_settings_keys()}


def _check_settings(name: str, settings: Any) -> dict:
    """Validated against every built-in's settings keys (what the contract lists); the keys that do
    not apply to this tool are dropped, so the answer shows what took effect."""
    if not isinstance(settings, dict):
        raise bad_request("settings must be an object")
    for schema in (SETTINGS_SCHEMA, (BUILTINS[name].settings_schema if name in BUILTINS else None)):
        if schema is None:
            continue
        own = set(schema.get("properties", {}))
        subject = settings if schema is SETTINGS_SCHEMA else {k: v for k, v in settings.items() if k in own}
        errors = list(validator_for(schema)(schema).iter_errors(subject))
        if errors:
            raise bad_request(f"settings: {describe_error(errors[0])}")
    if name in BUILTINS:
        own = set(BUILTINS[name].settings_schema.get("properties", {}))
        return {k: v for k, v in settings.items() if k in own}
    return settings


async def update_builtin(principal: Principal, name: str, body: Any) -> dict:
    require_admin(principal, "change built-in tools")
    if not isinstance(body, dict) or not ({"enabled", "settings"} & set(body)):
        raise bad_request("give enabled and/or settings")
    unknown = set(body) - {"enabled", "settings"}
    if unknown:
        raise bad_request(f"unknown field: {sorted(unknown)[0]}")
    if "enabled" in body and not isinstance(body["enabled"], bool):
        raise bad_request("enabled must be a boolean")
    async with db.transaction() as conn:
        current = await db.fetch_one(BUILTIN_GET_SQL + " FOR UPDATE", (name,), conn=conn)
        if current is None:
            raise not_found("tool", name)
        settings = _check_settings(name, body["settings"]) if "settings" in body else current["settings"]
        row = await db.fetch_one(
            BUILTIN_UPDATE_SQL,
            {"name": name, "enabled": body.get("enabled", current["enabled"]), "settings": Jsonb(settings)},
            conn=conn,
        )
        details = {"fields": sorted(body), "enabled": row["enabled"]}
        await activity.record(conn, principal, "builtin_tool.updated", "builtin_tool", name, details)
        await bus.publish(conn, "builtin_tools", name=name)
    return public_builtin(row)


# --- custom tools --------------------------------------------------------------------------------

CUSTOM_COLUMNS = """
t.id, t.name, t.description, t.parameters, t.command, t.timeout_seconds, t.env, t.agent_id, t.owner_id,
t.enabled, t.created_by, t.created_at, t.updated_at
"""
CUSTOM_WHERE = """
(%(admin)s OR t.owner_id IN (%(user)s, ''))
AND (%(agent)s::uuid IS NULL OR t.agent_id = %(agent)s)
AND (%(search)s::text IS NULL OR t.name ILIKE %(search)s ESCAPE '\\' OR t.description ILIKE %(search)s ESCAPE '\\')
AND (%(enabled)s::boolean IS NULL OR t.enabled = %(enabled)s)
"""
CUSTOM_LIST_SQL = f"""
SELECT {CUSTOM_COLUMNS}, count(*) OVER () AS total FROM custom_tools t WHERE {CUSTOM_WHERE}
ORDER BY t.name, t.id LIMIT %(limit)s OFFSET %(offset)s
"""
CUSTOM_COUNT_SQL = f"SELECT count(*) AS n FROM custom_tools t WHERE {CUSTOM_WHERE}"
CUSTOM_GET_SQL = f"SELECT {CUSTOM_COLUMNS} FROM custom_tools t WHERE t.id = %s"
CUSTOM_INSERT_SQL = f"""
INSERT INTO custom_tools AS t (name, description, parameters, command, timeout_seconds, env, agent_id, owner_id,
                               enabled, created_by)
VALUES (%(name)s, %(description)s, %(parameters)s, %(command)s, %(timeout_seconds)s, %(env)s, %(agent_id)s,
        %(owner_id)s, %(enabled)s, %(created_by)s)
RETURNING {CUSTOM_COLUMNS}
"""
CUSTOM_UPDATE_SQL = f"""
UPDATE custom_tools t SET name = %(name)s, description = %(description)s, parameters = %(parameters)s,
       command = %(command)s, timeout_seconds = %(timeout_seconds)s, env = %(env)s, agent_id = %(agent_id)s,
       enabled = %(enabled)s, updated_at = now()
WHERE t.id = %(id)s
RETURNING {CUSTOM_COLUMNS}
"""
CUSTOM_DELETE_SQL = "DELETE FROM custom_tools WHERE id = %s"
CUSTOM_FIELDS = {"name", "description", "parameters", "command", "timeout_seconds", "env", "agent_id", "enabled"}


def public_custom(row: dict) -> dict:
    out = {k: v for k, v in row.items() if k not in ("env", "total")}
    out["env"] = masked(row.get("env"))
    return out


def check_parameters(value: Any) -> dict:
    """A JSON Schema for an object of arguments (checked against its meta-schema)."""
    if not isinstance(value, dict):
        raise bad_request("parameters must be a JSON Schema object")
    if len(json.dumps(value)) > MAX_SCHEMA_BYTES:
        raise bad_request(f"parameters must be at most {MAX_SCHEMA_BYTES} bytes of JSON")
    if value.get("type", "object") != "object":
        raise bad_request('parameters must describe an object ("type": "object")')
    try:
        validator_for(value).check_schema(value)
    except SchemaError as exc:
        raise bad_request(f"parameters is not a valid JSON Schema: {describe_error(exc)}") from None
    except Exception as exc:  # e.g. an unresolvable $schema or a regex the engine rejects
        raise bad_request(f"parameters is not a valid JSON Schema: {exc.__class__.__name__}") from None
    return {"type": "object", **value}


def check_command(value: Any) -> list[str]:
    if isinstance(value, str):
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            raise bad_request(f"command: {exc}") from None
    elif isinstance(value, list) and all(isinstance(a, str) for a in value):
        argv = list(value)
    else:
        raise bad_request("command must be a string or a list of strings")
    if not argv or not argv[0]:
        raise bad_request("command must name a program")
    if len(argv) > MAX_ARGV or any(len(a) > MAX_ARG for a in argv):
        raise bad_request(f"command: at most {MAX_ARGV} elements of {MAX_ARG} characters")
    if PLACEHOLDER.search(argv[0]):
        raise bad_request("command: the program (first element) cannot be a placeholder")
    return argv


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise bad_request("name must start with a letter and use only a-z, 0-9, _ and - (at most 64 characters)")
    if name.startswith("mcp_"):
        raise bad_request("names starting with mcp_ are reserved for MCP server tools")  # the contract says so too
    if name in BUILTINS:
        raise ApiError(409, "error.conflict", f"tool name already exists: {name} is a built-in tool")
    return name


def _clean_custom(body: Any, *, partial: bool) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request("body must be a JSON object")
    unknown = set(body) - CUSTOM_FIELDS
    if unknown:
        raise bad_request(f"unknown field: {sorted(unknown)[0]}")
    if not partial:
        for field in ("name", "command"):
            if body.get(field) in (None, "", []):
                raise ApiError(400, "error.required", field)
    values: dict[str, Any] = {}
    if "name" in body:
        values["name"] = _check_name(body["name"])
    if "description" in body:
        description = body["description"] if body["description"] is not None else ""
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
            raise bad_request(f"description must be a string of at most {MAX_DESCRIPTION} characters")
        values["description"] = description
    if "parameters" in body:
        values["parameters"] = check_parameters(body["parameters"] if body["parameters"] is not None
                                                else DEFAULT_PARAMETERS)
    if "command" in body:
        values["command"] = check_command(body["command"])
    values.update(check_runtime_fields(body))
    if "agent_id" in body and body["agent_id"] is not None and not isinstance(body["agent_id"], str):
        raise bad_request("agent_id must be an agent id or key")
    return values


def _check_placeholders(argv: list[str], parameters: dict, status: int = 400) -> None:
    """Every {{placeholder}} of the command must be a declared parameter. On update the clash can
    be with the stored command or parameters (a valid request meeting the current state: 409)."""
    properties = parameters.get("properties") or {}
    missing = sorted(placeholders(argv) - set(properties))
    if missing:
        message = f"command uses {{{{{missing[0]}}}}} but parameters has no property {missing[0]!r}"
        raise bad_request(message) if status == 400 else ApiError(status, "error.conflict", message)


async def _agent_scope(principal: Principal, ref: str | None) -> uuid.UUID | None:
    if not ref:
        return None
    return (await resolve_agent_ids(principal, [ref], "agent_id"))[0]


async def list_custom(
    principal: Principal, limit: int | None = None, offset: int | None = None, agent_id: str | None = None,
    search: str | None = None, enabled: bool | None = None,
) -> dict:
    limit, offset = page(limit, offset)
    agent = parse_uuid(agent_id, "agent") if agent_id is not None else None
    pattern = None
    if search:
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    params = {
        "admin": principal.is_admin, "user": principal.user_id, "agent": agent, "search": pattern,
        "enabled": enabled, "limit": limit, "offset": offset,
    }
    rows = await db.fetch_all(CUSTOM_LIST_SQL, params)
    total = rows[0]["total"] if rows else ((await db.fetch_one(CUSTOM_COUNT_SQL, params))["n"] if offset else 0)
    return {"tools": [public_custom(r) for r in rows], "total": total, "limit": limit, "offset": offset}


async def _custom_row(principal: Principal, tool_id: str, *, conn=None, lock: bool = False) -> dict:
    uid = parse_uuid(tool_id, "tool")
    row = await db.fetch_one(CUSTOM_GET_SQL + (" FOR UPDATE" if lock else ""), (uid,), conn=conn)
    if row is None or not visible(principal, row["owner_id"]):
        raise not_found("tool", tool_id)
    return row


async def get_custom(principal: Principal, tool_id: str) -> dict:
    return public_custom(await _custom_row(principal, tool_id))


async def create_custom(principal: Principal, body: Any) -> dict:
    require_admin(principal, "define custom tools (they run commands on the gateway host)")
    values = _clean_custom(body, partial=False)
    parameters = values.get("parameters", DEFAULT_PARAMETERS)
    _check_placeholders(values["command"], parameters)
    env = check_secret_map("env", body.get("env"))
    agent_id = await _agent_scope(principal, body.get("agent_id"))
    params = {
        "name": values["name"],
        "description": values.get("description", ""),
        "parameters": Jsonb(parameters),
        "command": Jsonb(values["command"]),
        "timeout_seconds": values.get("timeout_seconds", 60),
        "env": seal_map(env),
        "agent_id": agent_id,
        "owner_id": principal.user_id,
        "enabled": values.get("enabled", True),
        "created_by": principal.actor_id[:255],
    }
    try:
        async with db.transaction() as conn:
            row = await db.fetch_one(CUSTOM_INSERT_SQL, params, conn=conn)
            details = {"name": row["name"], "agent_id": str(agent_id) if agent_id else None}
            await activity.record(conn, principal, "custom_tool.created", "custom_tool", str(row["id"]), details)
            await bus.publish(conn, "custom_tools", id=str(row["id"]))
    except pg_errors.UniqueViolation:
        raise conflict("tool", values["name"]) from None
    return public_custom(row)


async def update_custom(principal: Principal, tool_id: str, body: Any) -> dict:
    require_admin(principal, "change custom tools (they run commands on the gateway host)")
    values = _clean_custom(body, partial=True)
    try:
        async with db.transaction() as conn:
            current = await _custom_row(principal, tool_id, conn=conn, lock=True)
            parameters = values.get("parameters", current["parameters"])
            command = values.get("command", current["command"])
            both_given = {"command", "parameters"} <= set(values)
            _check_placeholders(command, parameters, status=400 if both_given else 409)
            env_sealed = current["env"]
            if "env" in body:
                env = check_secret_map("env", body["env"], current=open_map(current["env"], "tool env"))
                env_sealed = seal_map(env)
            agent_id = current["agent_id"]
            if "agent_id" in body:
                agent_id = await _agent_scope(principal, body["agent_id"])
            params = {
                "id": current["id"],
                "name": values.get("name", current["name"]),
                "description": values.get("description", current["description"]),
                "parameters": Jsonb(parameters),
                "command": Jsonb(command),
                "timeout_seconds": values.get("timeout_seconds", current["timeout_seconds"]),
                "env": env_sealed,
                "agent_id": agent_id,
                "enabled": values.get("enabled", current["enabled"]),
            }
            row = await db.fetch_one(CUSTOM_UPDATE_SQL, params, conn=conn)
            details = {"name": row["name"], "fields": sorted(body)}
            await activity.record(conn, principal, "custom_tool.updated", "custom_tool", str(row["id"]), details)
            await bus.publish(conn, "custom_tools", id=str(row["id"]))
    except pg_errors.UniqueViolation:
        raise conflict("tool", values.get("name")) from None
    return public_custom(row)


async def delete_custom(principal: Principal, tool_id: str) -> dict:
    async with db.transaction() as conn:
        current = await _custom_row(principal, tool_id, conn=conn, lock=True)
        if not modifiable(principal, current["owner_id"]):
            raise ApiError(403, "error.admin_only", "delete a shared custom tool")
        await db.execute(CUSTOM_DELETE_SQL, (current["id"],), conn=conn)
        await activity.record(conn, principal, "custom_tool.deleted", "custom_tool", str(current["id"]),
                              {"name": current["name"]})
        await bus.publish(conn, "custom_tools", id=str(current["id"]))
    return {"status": "deleted", "id": str(current["id"]), "name": current["name"]}
