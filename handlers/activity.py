"""Activity (audit log)."""

from auth import Principal
from domain import activity, usage


async def get_activity(
    principal: Principal,
    limit: int = 50,
    offset: int = 0,
    actor_type: str | None = None,
    actor_id: str | None = None,
    action: str | None = None,
    entity_type: str | None = None,
    entity_id: str | None = None,
):
    return await activity.list_activity(
        principal, limit, offset,
        actor_type=actor_type, actor_id=actor_id, action=action, entity_type=entity_type, entity_id=entity_id,
    )


async def get_delegations(principal: Principal, limit: int = 50, offset: int = 0, **filters):
    return await usage.list_delegations(principal, limit, offset, **filters)
