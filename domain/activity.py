"""The audit trail: written in the same transaction as the change it records."""

from __future__ import annotations

import json
from typing import Any

import psycopg

import db
from auth import Principal
from domain.paging import page

INSERT_SQL = """
INSERT INTO activity_logs (actor_type, actor_id, action, entity_type, entity_id, details, ip_address)
VALUES (%s, %s, %s, %s, %s, %s, %s)
"""

FILTERS = ("actor_type", "actor_id", "action", "entity_type", "entity_id")

WHERE_SQL = """
WHERE (%(actor_type)s::text IS NULL OR actor_type = %(actor_type)s)
  AND (%(actor_id)s::text IS NULL OR actor_id = %(actor_id)s)
  AND (%(action)s::text IS NULL OR action = %(action)s)
  AND (%(entity_type)s::text IS NULL OR entity_type = %(entity_type)s)
  AND (%(entity_id)s::text IS NULL OR entity_id = %(entity_id)s)
"""
LIST_SQL = f"""
SELECT id, actor_type, actor_id, action, entity_type, entity_id, details, ip_address, created_at,
       count(*) OVER () AS total
FROM activity_logs {WHERE_SQL}
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s OFFSET %(offset)s
"""
COUNT_SQL = f"SELECT count(*) AS n FROM activity_logs {WHERE_SQL}"


async def record(
    conn: psycopg.AsyncConnection,
    principal: Principal,
    action: str,
    entity_type: str,
    entity_id: str | None,
    details: dict[str, Any] | None = None,
) -> None:
    actor_type = "api_key" if principal.kind == "api_key" and not principal.user_id else "user"
    await conn.execute(
        INSERT_SQL,
        (
            actor_type,
            principal.actor_id[:255],
            action,
            entity_type,
            entity_id,
            json.dumps(details) if details else None,
            (principal.ip or "")[:45] or None,
        ),
    )


async def list_activity(principal: Principal, limit: int, offset: int, **filters: str | None) -> dict:
    """Newest first. Admins see everything; other callers only what they did themselves."""
    limit, offset = page(limit, offset, max_limit=200)
    params: dict[str, Any] = {name: filters.get(name) or None for name in FILTERS}
    if not principal.is_admin:
        params["actor_id"] = principal.actor_id
    params.update(limit=limit, offset=offset)
    rows = await db.fetch_all(LIST_SQL, params)
    if rows:
        total = rows[0]["total"]
    else:  # past the last page the window count is unavailable
        total = (await db.fetch_one(COUNT_SQL, params))["n"] if offset else 0
    for row in rows:
        row.pop("total")
    return {"logs": rows, "total": total, "limit": limit, "offset": offset}
