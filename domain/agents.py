"""Agents: who may see and use which agent, and the CRUD rules.

An agent is visible to its owner, to users it is shared with, to everyone when it is a default
agent (`is_default`), and to admins/owners; everyone else gets 404 (not 403) so ids and slugs
don't leak. Only the owner or an admin may change or delete an agent (others: 404 as well), and
only an admin may make an agent a default one, since that exposes it to every tenant.

An agent is named by its UUID or its slug (`agent_key`, `name` on the wire) on every call.
Writes take an explicit whitelist of fields (`FIELDS`); anything else is a 400, so `id`,
`owner_id`, `workspace` and the timestamps cannot be set by a client. `provider` must name an
existing provider (409 otherwise; the database enforces it too, and follows a provider rename).
"""

from __future__ import annotations

import re
import secrets
import uuid
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb

import db
from auth import Principal
from db import bus
from domain import activity
from domain.paging import page
from gateway.errors import ApiError, bad_request, conflict, not_found

SLUG_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
LONE_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"
MAX_SLUG = 100
INT4_MAX = 2_147_483_647
DEFAULT_MEMORY_CONFIG = {"enabled": True}

AGENT_COLUMNS = """
a.id, a.agent_key AS name, a.agent_key, a.display_name, a.description, a.frontmatter, a.system_prompt,
a.owner_id, coalesce(a.provider, '') AS provider, a.model, a.context_window, a.max_tool_iterations,
a.workspace, a.restrict_to_workspace, a.agent_type, a.is_default, a.status, a.budget_monthly_cents,
a.tools_config, a.memory_config, a.other_config, a.created_at, a.updated_at
"""

# What a caller may see: its own, shared with it, default agents; admins everything.
VISIBLE_WHERE = """
(%(admin)s OR a.owner_id = %(user)s OR a.is_default
 OR EXISTS (SELECT 1 FROM agent_shares s WHERE s.agent_id = a.id AND s.user_id = %(user)s))
"""
# A ref that is both some agent's UUID and another's slug means the UUID.
BY_REF = "(a.id = %(id)s OR a.agent_key = %(key)s)"
REF_ORDER = "ORDER BY (a.id IS NOT DISTINCT FROM %(id)s) DESC LIMIT 1"

VISIBLE_SQL = f"SELECT {AGENT_COLUMNS} FROM agents a WHERE {BY_REF} AND {VISIBLE_WHERE} {REF_ORDER}"
OWNED_FOR_UPDATE_SQL = f"""
SELECT {AGENT_COLUMNS} FROM agents a
WHERE {BY_REF} AND (%(admin)s OR a.owner_id = %(user)s) {REF_ORDER} FOR UPDATE
"""
LIST_SQL = f"""
SELECT {AGENT_COLUMNS}, count(*) OVER () AS total FROM agents a
WHERE {VISIBLE_WHERE}
ORDER BY a.created_at DESC, a.id DESC
LIMIT %(limit)s OFFSET %(offset)s
"""
COUNT_SQL = f"SELECT count(*) AS n FROM agents a WHERE {VISIBLE_WHERE}"
PROVIDER_EXISTS_SQL = "SELECT 1 FROM llm_providers WHERE name = %s"
INSERT_SQL = f"""
INSERT INTO agents AS a (agent_key, display_name, description, frontmatter, system_prompt, owner_id, provider,
                         model, context_window, max_tool_iterations, agent_type, is_default, status,
                         budget_monthly_cents, tools_config, memory_config, other_config)
VALUES (%(agent_key)s, %(display_name)s, %(description)s, %(frontmatter)s, %(system_prompt)s, %(owner_id)s,
        %(provider)s, %(model)s, %(context_window)s, %(max_tool_iterations)s, %(agent_type)s, %(is_default)s,
        %(status)s, %(budget_monthly_cents)s, %(tools_config)s, %(memory_config)s, %(other_config)s)
RETURNING {AGENT_COLUMNS}
"""
DELETE_SQL = "DELETE FROM agents WHERE id = %s"


# -- the whitelist -------------------------------------------------------------------------------
# wire name → (column, kind, bound). Kinds: str (max length), int ((min, max)), bool, enum (values),
# object. The OpenAPI fragment openapi_ext/agents.json states the same bounds.
FIELDS: dict[str, tuple[str, str, Any]] = {
    "name": ("agent_key", "slug", MAX_SLUG),
    "display_name": ("display_name", "str", 255),
    "description": ("description", "str", 10_000),
    "frontmatter": ("frontmatter", "str", 10_000),
    "system_prompt": ("system_prompt", "str", 50_000),  # every schema-valid body fits in 1 MiB
    "provider": ("provider", "str", 50),
    "model": ("model", "str", 200),
    "agent_type": ("agent_type", "enum", ("open", "predefined")),
    "status": ("status", "enum", ("active", "inactive")),
    "context_window": ("context_window", "int", (1, 10_000_000)),
    "max_tool_iterations": ("max_tool_iterations", "int", (1, 1000)),
    "budget_monthly_cents": ("budget_monthly_cents", "int?", (0, INT4_MAX)),
    "is_default": ("is_default", "bool", None),
    "tools_config": ("tools_config", "object", None),
    "memory_config": ("memory_config", "object", None),
    "other_config": ("other_config", "object", None),
}
UPDATABLE = tuple(column for column, _, _ in FIELDS.values())
JSON_COLUMNS = frozenset({"tools_config", "memory_config", "other_config"})

# One constant statement: each column is set only when its flag is true.
UPDATE_SQL = (
    "UPDATE agents a SET "
    + ", ".join(f"{c} = CASE WHEN %({c}__set)s THEN %({c})s ELSE a.{c} END" for c in UPDATABLE)
    + f", updated_at = now() WHERE a.id = %(id)s RETURNING {AGENT_COLUMNS}"
)


def parse_ref(ref: str) -> tuple[uuid.UUID | None, str]:
    """An agent reference is its UUID or its slug (agent_key)."""
    try:
        return uuid.UUID(ref), ref
    except ValueError:
        return None, ref


def _ref_params(principal: Principal, ref: str) -> dict:
    agent_id, key = parse_ref(ref)
    return {"id": agent_id, "key": key, "admin": principal.is_admin, "user": principal.user_id}


async def resolve(principal: Principal, ref: str, *, conn=None) -> dict:
    """The agent `ref` names, if the caller may see it; otherwise 404."""
    row = await db.fetch_one(VISIBLE_SQL, _ref_params(principal, ref), conn=conn)
    if row is None:
        raise not_found("agent", ref)
    return row


def _check_value(field: str, value: Any) -> Any:
    _, kind, bound = FIELDS[field]
    if kind in ("str", "slug"):
        if not isinstance(value, str):
            raise bad_request(f"{field} must be a string")
        value = LONE_SURROGATE.sub(REPLACEMENT, value)  # PostgreSQL stores UTF-8 only (as with NUL)
        if len(value) > bound:
            raise bad_request(f"{field} must be {bound} characters or less")
        if kind == "slug" and not SLUG_RE.match(value):
            raise ApiError(400, "error.invalid_slug", field)
        return value
    if kind in ("int", "int?"):
        if value is None and kind == "int?":
            return None
        if not isinstance(value, int) or isinstance(value, bool) or not bound[0] <= value <= bound[1]:
            raise bad_request(f"{field} must be an integer between {bound[0]} and {bound[1]}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad_request(f"{field} must be a boolean")
        return value
    if kind == "enum":
        if value not in bound:
            raise bad_request(f"{field} must be one of: {', '.join(bound)}")
        return value
    if not isinstance(value, dict):
        raise bad_request(f"{field} must be an object")
    return value


def clean_input(body: Any) -> dict[str, Any]:
    """The whitelisted, checked fields of a create/update body, keyed by column."""
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise bad_request(f"unknown field(s): {', '.join(unknown)}")
    values = {FIELDS[field][0]: _check_value(field, value) for field, value in body.items()}
    if "provider" in values:
        values["provider"] = values["provider"] or None  # '' = no provider
    return values


def slugify(text: str | None) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", (text or "").lower()).strip("-")
    return slug[:MAX_SLUG].rstrip("-")


def _db(value: Any, column: str) -> Any:
    return Jsonb(value) if column in JSON_COLUMNS and value is not None else value


async def _check_provider(conn: psycopg.AsyncConnection, name: str | None) -> None:
    if name is not None and await db.fetch_one(PROVIDER_EXISTS_SQL, (name,), conn=conn) is None:
        raise ApiError(409, "error.not_found", "provider", name)


def _check_default_flag(principal: Principal, wanted: bool | None, current: bool = False) -> None:
    if wanted is not None and wanted != current and not principal.is_admin:
        raise ApiError(403, "error.admin_only", "change is_default")


async def list_agents(principal: Principal, limit: int | None = None, offset: int | None = None) -> dict:
    """Newest first: the caller's, shared with it and default agents (admins: all)."""
    limit, offset = page(limit, offset, default=100, max_limit=500)
    params = {"admin": principal.is_admin, "user": principal.user_id, "limit": limit, "offset": offset}
    rows = await db.fetch_all(LIST_SQL, params)
    if rows:
        total = rows[0]["total"]
    else:
        total = (await db.fetch_one(COUNT_SQL, params))["n"] if offset else 0
    for row in rows:
        row.pop("total")
    return {"agents": rows, "total": total, "limit": limit, "offset": offset}


async def create(principal: Principal, body: Any) -> dict:
    """A new agent owned by the caller. Without `name`, the slug comes from `display_name`."""
    if not principal.user_id:
        raise ApiError(400, "error.user_id_header")
    values = clean_input(body)
    _check_default_flag(principal, values.get("is_default"))
    given = values.pop("agent_key", None)
    base = slugify(values.get("display_name")) or "agent"
    candidates = [given] if given else [base] + [f"{base[:MAX_SLUG - 9]}-{secrets.token_hex(4)}" for _ in range(3)]
    params = {
        "display_name": None, "description": None, "frontmatter": None, "system_prompt": None,
        "provider": None, "model": "", "context_window": 200_000, "max_tool_iterations": 20,
        "agent_type": "open", "is_default": False, "status": "active", "budget_monthly_cents": None,
        "tools_config": {}, "memory_config": DEFAULT_MEMORY_CONFIG, "other_config": {},
        **values, "owner_id": principal.user_id,
    }
    params = {column: _db(value, column) for column, value in params.items()}
    for key in candidates:
        try:
            async with db.transaction() as conn:
                await _check_provider(conn, params["provider"])
                row = await db.fetch_one(INSERT_SQL, {**params, "agent_key": key}, conn=conn)
                await activity.record(conn, principal, "agent.created", "agent", str(row["id"]), {"agent_key": key})
                await bus.publish(conn, "agents", id=str(row["id"]), agent_key=key, action="created")
            return row
        except pg_errors.UniqueViolation:
            if given:
                raise conflict("agent", key) from None
        except pg_errors.ForeignKeyViolation:  # the provider went away meanwhile
            raise ApiError(409, "error.not_found", "provider", params["provider"]) from None
    raise conflict("agent", base)


async def update(principal: Principal, ref: str, body: Any) -> dict:
    """Change the whitelisted fields given; owner or admin only (others: 404)."""
    values = clean_input(body)
    try:
        async with db.transaction() as conn:
            current = await db.fetch_one(OWNED_FOR_UPDATE_SQL, _ref_params(principal, ref), conn=conn)
            if current is None:
                raise not_found("agent", ref)
            _check_default_flag(principal, values.get("is_default"), current["is_default"])
            changed = {
                column: value for column, value in values.items()
                if value != (current[column] if column != "provider" else current["provider"] or None)
            }
            if not changed:
                return current
            if "provider" in changed:
                await _check_provider(conn, changed["provider"])
            params: dict[str, Any] = {"id": current["id"]}
            for column in UPDATABLE:
                params[f"{column}__set"] = column in changed
                params[column] = _db(changed.get(column), column)
            row = await db.fetch_one(UPDATE_SQL, params, conn=conn)
            details = {"agent_key": row["agent_key"], "fields": sorted(changed)}
            await activity.record(conn, principal, "agent.updated", "agent", str(row["id"]), details)
            event: dict[str, Any] = {"id": str(row["id"]), "agent_key": row["agent_key"], "action": "updated"}
            if current["agent_key"] != row["agent_key"]:
                event["old_agent_key"] = current["agent_key"]
            if current["status"] != row["status"]:
                event.update(old_status=current["status"], new_status=row["status"])
            await bus.publish(conn, "agents", **event)
        return row
    except pg_errors.UniqueViolation:
        raise conflict("agent", values.get("agent_key")) from None
    except pg_errors.ForeignKeyViolation:
        raise ApiError(409, "error.not_found", "provider", values.get("provider")) from None


async def delete(principal: Principal, ref: str) -> dict:
    """Really delete (the slug becomes free again); sessions and shares go with it."""
    try:
        async with db.transaction() as conn:
            current = await db.fetch_one(OWNED_FOR_UPDATE_SQL, _ref_params(principal, ref), conn=conn)
            if current is None:
                raise not_found("agent", ref)
            await db.execute(DELETE_SQL, (current["id"],), conn=conn)
            agent_id, key = str(current["id"]), current["agent_key"]
            await activity.record(conn, principal, "agent.deleted", "agent", agent_id, {"agent_key": key})
            await bus.publish(conn, "agents", id=agent_id, agent_key=key, action="deleted")
    except pg_errors.ForeignKeyViolation as exc:  # a table that does not cascade still points at it
        raise ApiError(409, "error.conflict", f"agent {ref} is still referenced: {exc.diag.table_name}") from None
    return {"status": "deleted", "id": agent_id, "agent_key": current["agent_key"]}
