"""Custom Tools: operator-defined commands the agents may call (see domain/tools.py)."""

from auth import Principal
from domain import tools


async def get_tools_custom(
    principal: Principal, limit: int | None = None, offset: int | None = None, agent_id: str | None = None,
    search: str | None = None, enabled: bool | None = None,
):
    return await tools.list_custom(principal, limit, offset, agent_id=agent_id, search=search, enabled=enabled)


async def post_tools_custom(principal: Principal, body: dict):
    return await tools.create_custom(principal, body), 201


async def get_tools_custom_by_id(principal: Principal, id: str):
    return await tools.get_custom(principal, id)


async def put_tools_custom_by_id(principal: Principal, id: str, body: dict):
    return await tools.update_custom(principal, id, body)


async def delete_tools_custom_by_id(principal: Principal, id: str):
    return await tools.delete_custom(principal, id)
