"""Gateway API keys: create (raw key shown once), list (never the hash), revoke."""

from __future__ import annotations

import uuid
from datetime import timedelta

import db
from auth import Principal
from auth import keys as key_material
from auth.principal import SCOPES
from db import bus
from domain import activity
from gateway import state
from gateway.errors import ApiError, bad_request, not_found

COLUMNS = (
    "id, name, prefix, scopes, expires_at, last_used_at, revoked,"
    " coalesce(created_by, '') AS created_by, created_at, updated_at"
)
LIST_SQL = f"SELECT {COLUMNS} FROM api_keys ORDER BY created_at DESC, id DESC"
INSERT_SQL = """
INSERT INTO api_keys (name, prefix, key_hash, scopes, expires_at, created_by)
VALUES (%s, %s, %s, %s, now() + %s, %s)
RETURNING id, name, prefix, scopes, expires_at, created_at
"""
REVOKE_SQL = "UPDATE api_keys SET revoked = true, updated_at = now() WHERE id = %s RETURNING id"
MAX_EXPIRES_IN = 100 * 365 * 24 * 3600


async def list_keys() -> list[dict]:
    return await db.fetch_all(LIST_SQL)


def _validate(name: str, scopes: list[str], expires_in: int | None) -> None:
    if not name or not name.strip():
        raise ApiError(400, "error.required", "name")
    if len(name) > 100:
        raise bad_request("name must be 100 characters or less")
    if not scopes:
        raise ApiError(400, "error.required", "scopes")
    for scope in scopes:
        if scope not in SCOPES:
            raise bad_request(f"invalid scope: {scope}")
    if expires_in is not None and (expires_in < 0 or expires_in > MAX_EXPIRES_IN):
        raise bad_request(f"expires_in must be between 0 and {MAX_EXPIRES_IN} seconds")


async def create(principal: Principal, name: str, scopes: list[str], expires_in: int | None = None) -> dict:
    _validate(name, scopes, expires_in)
    raw, prefix, digest = key_material.generate()
    ttl = timedelta(seconds=expires_in) if expires_in else None
    scopes = list(dict.fromkeys(scopes))
    async with db.transaction() as conn:
        row = await db.fetch_one(
            INSERT_SQL, (name.strip(), prefix, digest, scopes, ttl, principal.user_id or None), conn=conn
        )
        await activity.record(conn, principal, "api_key.created", "api_key", str(row["id"]), {"name": row["name"]})
        await bus.publish(conn, "api_keys", id=str(row["id"]))
    return {**row, "key": raw}


async def revoke(principal: Principal, key_id: str) -> dict:
    try:
        uid = uuid.UUID(key_id)
    except ValueError:
        raise ApiError(400, "error.invalid_id", "API key") from None
    async with db.transaction() as conn:
        row = await db.fetch_one(REVOKE_SQL, (uid,), conn=conn)
        if row is None:
            raise not_found("API key", key_id)
        await activity.record(conn, principal, "api_key.revoked", "api_key", str(uid))
        await bus.publish(conn, "api_keys", id=str(uid))
    state.key_cache.clear()  # this process stops honouring the key now, not after the NOTIFY
    return {"status": "revoked", "id": str(uid)}
