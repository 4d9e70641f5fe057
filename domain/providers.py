"""LLM providers: CRUD with the API key sealed at rest, model listing, verification, and the
adapter cache the chat path uses.

* `api_key` is stored only as `gateway.state.box().encrypt(...)` (`aes-gcm:...`); every answer shows
  `"***"` (set) or `""` (not set) plus `has_api_key`. On update `"***"` or an absent key keeps the
  stored one, `""`/null clears it. Keys never reach logs or activity details.
* `api_base` is optional (empty → the type's default from `llm.PROVIDER_TYPES`). A given base must be
  an http(s) URL and must not resolve to a private/reserved address (`gateway.netguard`), else 400.
  A host that does not resolve (yet) is accepted; every call checks the base again before use.
* Providers are global (not per tenant): viewers read, operators write (the HTTP role ladder).
  `{id}` is the UUID (400 otherwise). A provider that agents use cannot be deleted (409).
* `get_adapter(name)` caches one adapter per provider name. The cache is dropped on every process
  by the bus kind `providers` (published in each change's transaction, plus `resync` when the
  listener reconnects), and at once in the process that made the change. It subscribes when this
  module is imported; `register()` is idempotent and may also be called from the app lifespan.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import uuid
from typing import Any
from urllib.parse import urlsplit

from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb

import db
import llm
from auth import Principal
from db import bus
from domain import activity
from domain.agents import LONE_SURROGATE
from gateway import netguard, state
from gateway.errors import ApiError, bad_request, conflict, not_found
from gateway.secrets import MASK, SecretError
from llm import Adapter, UpstreamError, UpstreamTimeout

SLUG_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
KEY_RE = re.compile(r"^[!-~]*$")  # printable ASCII: the key travels in an HTTP header
HOST_RE = re.compile(r"^[a-z0-9_]([a-z0-9_.-]*[a-z0-9_.])?$")
MODELS_TIMEOUT = 15.0

COLUMNS = """
p.id, p.name, coalesce(p.display_name, '') AS display_name, p.provider_type, coalesce(p.api_base, '') AS api_base,
p.api_key, p.enabled, p.settings, coalesce(p.created_by, '') AS created_by, p.created_at, p.updated_at
"""
LIST_SQL = f"SELECT {COLUMNS} FROM llm_providers p ORDER BY p.name"
GET_SQL = f"SELECT {COLUMNS} FROM llm_providers p WHERE p.id = %s"
GET_FOR_UPDATE_SQL = f"{GET_SQL} FOR UPDATE"
BY_NAME_SQL = f"SELECT {COLUMNS} FROM llm_providers p WHERE p.name = %s"
INSERT_SQL = f"""
INSERT INTO llm_providers AS p (name, display_name, provider_type, api_base, api_key, enabled, settings, created_by)
VALUES (%(name)s, %(display_name)s, %(provider_type)s, %(api_base)s, %(api_key)s, %(enabled)s, %(settings)s,
        %(created_by)s)
RETURNING {COLUMNS}
"""
UPDATE_SQL = f"""
UPDATE llm_providers p SET name = %(name)s, display_name = %(display_name)s, provider_type = %(provider_type)s,
       api_base = %(api_base)s, api_key = %(api_key)s, enabled = %(enabled)s, settings = %(settings)s,
       updated_at = now()
WHERE p.id = %(id)s
RETURNING {COLUMNS}
"""
AGENTS_USING_SQL = "SELECT count(*) AS n FROM agents WHERE provider = %s"
DELETE_SQL = "DELETE FROM llm_providers WHERE id = %s"

# wire name → (kind, bound); openapi_ext/providers.json states the same bounds
FIELDS: dict[str, tuple[str, Any]] = {
    "name": ("slug", 50),
    "display_name": ("str", 255),
    "provider_type": ("enum", tuple(llm.PROVIDER_TYPES)),
    "api_base": ("str?", 2048),
    "api_key": ("str?", 4096),
    "enabled": ("bool", None),
    "settings": ("object", None),
}


# -- rows and their public shape ----------------------------------------------------------------


def public(row: dict) -> dict:
    """A provider as every answer shows it: the key masked, never decrypted."""
    out = {k: v for k, v in row.items() if k != "api_key"}
    out["api_key"] = MASK if row.get("api_key") else ""
    out["has_api_key"] = bool(row.get("api_key"))
    default_model = (row.get("settings") or {}).get("default_model")
    out["default_model"] = default_model if isinstance(default_model, str) else ""
    return out


def _provider_id(ref: str) -> uuid.UUID:
    """`{id}` is a UUID (the contract says `format: uuid`); anything else is a 400."""
    try:
        return uuid.UUID(ref)
    except ValueError:
        raise ApiError(400, "error.invalid_id", "provider") from None


async def _row(ref: str, *, conn=None, for_update: bool = False) -> dict:
    row = await db.fetch_one(GET_FOR_UPDATE_SQL if for_update else GET_SQL, (_provider_id(ref),), conn=conn)
    if row is None:
        raise not_found("provider", ref)
    return row


# -- input ---------------------------------------------------------------------------------------


def _check(field: str, value: Any) -> Any:
    kind, bound = FIELDS[field]
    if kind.endswith("?") and value is None:
        return None
    if kind in ("str", "str?", "slug"):
        if not isinstance(value, str):
            raise bad_request(f"{field} must be a string")
        value = LONE_SURROGATE.sub("\ufffd", value)  # PostgreSQL stores UTF-8 only (as with NUL)
        if len(value) > bound:
            raise bad_request(f"{field} must be {bound} characters or less")
        if kind == "slug" and not SLUG_RE.match(value):
            raise ApiError(400, "error.invalid_slug", field)
        if field == "api_key" and not KEY_RE.match(value):
            raise bad_request("api_key must be printable ASCII without spaces")
        return value
    if kind == "enum":
        if value not in bound:
            raise bad_request(f"{field} must be one of: {', '.join(bound)}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad_request(f"{field} must be a boolean")
        return value
    if not isinstance(value, dict):
        raise bad_request(f"{field} must be an object")
    default_model = value.get("default_model")
    if default_model is not None and (not isinstance(default_model, str) or len(default_model) > 200):
        raise bad_request("settings.default_model must be a string of 200 characters or less")
    return value


def _clean(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise bad_request(f"unknown field(s): {', '.join(unknown)}")
    return {field: _check(field, value) for field, value in body.items()}


def _base_syntax_error(url: str) -> str | None:
    """Why `url` is not a usable http(s) base URL, or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return "api_base must be an http(s) URL"
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host or any(ch.isspace() or ord(ch) < 32 for ch in url):
        return "api_base must be an http(s) URL"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not HOST_RE.match(host):
            return "api_base has an invalid host name"
    return None


async def guard_api_base(url: str) -> str | None:
    """None when `url` may be called now; otherwise the reason. A host that does not resolve is
    not refused here (it cannot reach anything; the call itself fails)."""
    if reason := _base_syntax_error(url):
        return reason
    parts = urlsplit(url)
    try:
        await asyncio.get_running_loop().getaddrinfo(parts.hostname, parts.port or 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    try:
        await netguard.check_url(url, "api_base")
    except ApiError as exc:
        return exc.args_[0] if exc.args_ else exc.message()
    return None


async def _check_api_base(url: str | None) -> None:
    if url and (reason := await guard_api_base(url)):
        raise bad_request(reason)


def _seal(api_key: str | None) -> str | None:
    return state.box().encrypt(api_key) if api_key and api_key != MASK else None


# -- CRUD ----------------------------------------------------------------------------------------


async def list_providers(principal: Principal) -> dict:
    return {"providers": [public(row) for row in await db.fetch_all(LIST_SQL)]}


async def get(principal: Principal, ref: str) -> dict:
    return public(await _row(ref))


async def create(principal: Principal, body: Any) -> dict:
    values = _clean(body)
    for field in ("name", "provider_type"):
        if field not in values:
            raise ApiError(400, "error.required", field)
    await _check_api_base(values.get("api_base"))
    params = {
        "name": values["name"],
        "display_name": values.get("display_name") or None,
        "provider_type": values["provider_type"],
        "api_base": values.get("api_base") or None,
        "api_key": _seal(values.get("api_key")),
        "enabled": values.get("enabled", True),
        "settings": Jsonb(values.get("settings") or {}),
        "created_by": principal.user_id or None,
    }
    try:
        async with db.transaction() as conn:
            row = await db.fetch_one(INSERT_SQL, params, conn=conn)
            details = {"name": row["name"]}
            await activity.record(conn, principal, "provider.created", "provider", str(row["id"]), details)
            await bus.publish(conn, "providers", id=str(row["id"]), name=row["name"], action="created")
    except pg_errors.UniqueViolation:
        raise conflict("provider", values["name"]) from None
    invalidate()
    return public(row)


async def update(principal: Principal, ref: str, body: Any) -> dict:
    """Change the fields given (partial update)."""
    values = _clean(body)
    if "api_base" in values:
        await _check_api_base(values["api_base"])
    try:
        async with db.transaction() as conn:
            current = await _row(ref, conn=conn, for_update=True)
            params = {
                "id": current["id"],
                "name": values.get("name", current["name"]),
                "display_name": values.get("display_name", current["display_name"]) or None,
                "provider_type": values.get("provider_type", current["provider_type"]),
                "api_base": values.get("api_base", current["api_base"]) or None,
                "api_key": current["api_key"],
                "enabled": values.get("enabled", current["enabled"]),
                "settings": Jsonb(values.get("settings", current["settings"])),
            }
            if "api_key" in values and values["api_key"] != MASK:
                params["api_key"] = _seal(values["api_key"])
            moved = (params["api_base"] or "") != (current["api_base"] or "")
            if moved and current["api_key"] and params["api_key"] == current["api_key"] and not principal.is_admin:
                # the stored key goes wherever api_base points: only an admin may send it somewhere new
                raise bad_request("api_key must be given again to change api_base (the stored key stays with its base)")
            row = await db.fetch_one(UPDATE_SQL, params, conn=conn)
            details = {"name": row["name"], "fields": sorted(values)}
            await activity.record(conn, principal, "provider.updated", "provider", str(row["id"]), details)
            event = {"id": str(row["id"]), "name": row["name"], "action": "updated"}
            if row["name"] != current["name"]:
                event["old_name"] = current["name"]
                await bus.publish(conn, "agents", resync=True)  # their `provider` followed the rename
            await bus.publish(conn, "providers", **event)
    except pg_errors.UniqueViolation:
        raise conflict("provider", values.get("name")) from None
    invalidate()
    return public(row)


async def delete(principal: Principal, ref: str) -> dict:
    try:
        async with db.transaction() as conn:
            current = await _row(ref, conn=conn, for_update=True)
            using = (await db.fetch_one(AGENTS_USING_SQL, (current["name"],), conn=conn))["n"]
            if using:
                raise ApiError(409, "error.provider_in_use", current["name"], using)
            await db.execute(DELETE_SQL, (current["id"],), conn=conn)
            provider_id = str(current["id"])
            details = {"name": current["name"]}
            await activity.record(conn, principal, "provider.deleted", "provider", provider_id, details)
            await bus.publish(conn, "providers", id=provider_id, name=current["name"], action="deleted")
    except pg_errors.ForeignKeyViolation:  # an agent started using it meanwhile
        raise ApiError(409, "error.provider_in_use", current["name"], 1) from None
    invalidate()
    return {"status": "deleted", "id": provider_id, "name": current["name"]}


# -- adapters ------------------------------------------------------------------------------------


async def _build_adapter(row: dict) -> Adapter:
    """An adapter for a provider row (with its sealed key); 409 when the key is unreadable,
    502 when the base may not be called."""
    api_key = None
    if row.get("api_key"):
        try:
            api_key = state.box().decrypt(row["api_key"])
        except SecretError:
            raise ApiError(409, "error.secret_unreadable", row["name"]) from None
    if row.get("api_base") and (reason := await guard_api_base(row["api_base"])):
        raise ApiError(502, "error.upstream", reason)
    try:
        timeout = (row.get("settings") or {}).get("timeout_seconds")
        return llm.make_client(row["provider_type"], row.get("api_base") or None, api_key, state.http, timeout)
    except ValueError as exc:
        raise ApiError(409, "error.conflict", str(exc)) from None


_adapters: dict[str, tuple[Adapter, dict]] = {}
_generation = 0
_registered = False


def invalidate(_event: object = None) -> None:
    """Drop every cached adapter (a bus `providers` event, a resync, or a change made here)."""
    global _generation
    _generation += 1
    _adapters.clear()


def register() -> None:
    """Subscribe the adapter cache to the bus (idempotent)."""
    global _registered
    if not _registered:
        bus.subscribe("providers", invalidate)
        _registered = True


register()


async def get_adapter(name: str) -> tuple[Adapter, dict]:
    """The adapter for the provider called `name` and its public row (key masked).
    404 when there is no such provider, 409 when it is disabled."""
    hit = _adapters.get(name)
    if hit is not None:
        return hit[0], dict(hit[1])
    generation = _generation
    row = await db.fetch_one(BY_NAME_SQL, (name,)) if name else None
    if row is None:
        raise not_found("provider", name or "(none configured)")
    if not row["enabled"]:
        raise ApiError(409, "error.provider_disabled", name)
    adapter = await _build_adapter(row)
    shown = public(row)
    if generation == _generation:  # no change arrived while we were reading
        _adapters[name] = (adapter, shown)
    return adapter, dict(shown)


def _upstream(exc: UpstreamError) -> ApiError:
    if isinstance(exc, UpstreamTimeout):
        return ApiError(504, "error.upstream_timeout")
    return ApiError(502, "error.upstream", str(exc))


async def _models(adapter: Adapter) -> list[llm.Model]:
    try:
        async with asyncio.timeout(MODELS_TIMEOUT):
            return await adapter.list_models()
    except TimeoutError:
        raise ApiError(504, "error.upstream_timeout") from None
    except UpstreamError as exc:
        raise _upstream(exc) from None


async def list_models(principal: Principal, ref: str) -> dict:
    """The upstream's model list; its failure is a 502 carrying the upstream's reason."""
    adapter = await _build_adapter(await _row(ref))
    return {"models": [{"id": m.id, "name": m.name or m.id} for m in await _models(adapter)]}


async def verify(principal: Principal, ref: str, model: str | None = None) -> dict:
    """Always an answer (`valid` + `error`) for an existing provider: one 1-token call.
    Without `model`: the provider's `settings.default_model`, else the first model it lists."""
    row = await _row(ref)
    try:
        adapter = await _build_adapter(row)
        model = model or public(row)["default_model"]
        if not model:
            models = await _models(adapter)
            if not models:
                return {"valid": False, "error": "no model given and the provider lists none", "model": ""}
            model = models[0].id
    except ApiError as exc:
        return {"valid": False, "error": exc.message(), "model": model or ""}
    valid, error = await llm.verify(adapter, model)
    return {"valid": valid, "error": error, "model": model}
