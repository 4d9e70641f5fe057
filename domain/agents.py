"""Agents: who may see and use which agent.

An agent is visible to its owner, to users it is shared with, and to admins/owners; everyone
else gets 404 (not 403) so ids and slugs don't leak."""

from __future__ import annotations

import uuid

import db
from auth import Principal
from gateway.errors import not_found

AGENT_COLUMNS = """
a.id, a.agent_key, a.display_name, a.description, a.frontmatter, a.system_prompt, a.owner_id,
a.provider, a.model, a.context_window, a.max_tool_iterations, a.workspace, a.restrict_to_workspace,
a.agent_type, a.is_default, a.status, a.budget_monthly_cents, a.tools_config, a.memory_config,
a.other_config, a.created_at, a.updated_at
"""

VISIBLE_SQL = f"""
SELECT {AGENT_COLUMNS} FROM agents a
WHERE (a.id = %(id)s OR (%(id)s::uuid IS NULL AND a.agent_key = %(key)s))
  AND (%(admin)s OR a.owner_id = %(user)s
       OR EXISTS (SELECT 1 FROM agent_shares s WHERE s.agent_id = a.id AND s.user_id = %(user)s))
"""


def parse_ref(ref: str) -> tuple[uuid.UUID | None, str]:
    """An agent reference is its UUID or its slug (agent_key)."""
    try:
        return uuid.UUID(ref), ref
    except ValueError:
        return None, ref


async def resolve(principal: Principal, ref: str, *, conn=None) -> dict:
    """The agent `ref` names, if the caller may see it; otherwise 404."""
    agent_id, key = parse_ref(ref)
    row = await db.fetch_one(
        VISIBLE_SQL,
        {"id": agent_id, "key": key, "admin": principal.is_admin, "user": principal.user_id},
        conn=conn,
    )
    if row is None:
        raise not_found("agent", ref)
    return row
