"""Memory: documents and hybrid search (domain/memory.py)."""

from auth import Principal
from domain import agents, memory


async def get_memory_documents(
    principal: Principal,
    agent_id: str | None = None,
    user_id: str | None = None,
    scope: str | None = None,
    path_prefix: str | None = None,
    limit: int = 50,
    offset: int = 0,
):
    return await memory.list_documents(principal, agent_id, user_id, scope, path_prefix, limit, offset)


async def post_agents_by_agentid_memory_search(principal: Principal, agentID: str, body: dict):
    agent = await agents.resolve(principal, agentID)
    limit = body.get("max_results", body.get("limit", memory.DEFAULT_LIMIT))
    return await memory.search(
        principal, agent, body.get("query", ""), limit,
        min_score=body.get("min_score", 0.0), user_id=body.get("user_id"),
    )


async def put_agents_by_agentid_memory_documents_by_path(principal: Principal, agentID: str, path: str, body: dict):
    agent = await agents.resolve(principal, agentID)
    saved = await memory.save_document(principal, agent, path, body["content"], bool(body.get("shared", False)))
    return saved, 201 if saved["created"] else 200


async def get_agents_by_agentid_memory_documents_by_path(
    principal: Principal, agentID: str, path: str, shared: bool = False
):
    agent = await agents.resolve(principal, agentID)
    return await memory.get_document(principal, agent, path, shared)


async def delete_agents_by_agentid_memory_documents_by_path(
    principal: Principal, agentID: str, path: str, shared: bool = False
):
    agent = await agents.resolve(principal, agentID)
    return await memory.delete_document(principal, agent, path, shared)


async def get_agents_by_agentid_memory_chunks_by_path(
    principal: Principal, agentID: str, path: str, shared: bool = False
):
    agent = await agents.resolve(principal, agentID)
    return await memory.list_chunks(principal, agent, path, shared)


async def post_agents_by_agentid_memory_reindex(principal: Principal, agentID: str):
    agent = await agents.resolve(principal, agentID)
    return await memory.reindex(principal, agent)
