"""Agents: CRUD by UUID or slug, with tenancy (see domain/agents.py)."""

from auth import Principal
from domain import agents, chat


async def get_agents(principal: Principal, limit: int | None = None, offset: int | None = None):
    return await agents.list_agents(principal, limit, offset)


async def post_agents(principal: Principal, body: dict):
    return await agents.create(principal, body), 201


async def get_agents_by_id(principal: Principal, id: str):
    return await agents.resolve(principal, id)


async def put_agents_by_id(principal: Principal, id: str, body: dict):
    return await agents.update(principal, id, body)


async def delete_agents_by_id(principal: Principal, id: str):
    return await agents.delete(principal, id)


async def post_agents_by_id_wake(principal: Principal, id: str, body: dict):
    """Run the agent on one message (webhooks, automation) and return its reply and run id."""
    return await chat.wake(principal, id, body.get("message", ""), body.get("user_id"))
