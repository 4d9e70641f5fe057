"""Knowledge Graph: entities, relations, traversal (domain/kg.py)."""

from auth import Principal
from domain import agents, kg


async def get_agents_by_agentid_kg_entities(
    principal: Principal,
    agentID: str,
    q: str | None = None,
    type: str | None = None,
    user_id: str | None = None,
    limit: int = 50,
    offset: int = 0,
):
    agent = await agents.resolve(principal, agentID)
    return await kg.search_entities(principal, agent, q, type, limit, offset, user_id=user_id)


async def post_agents_by_agentid_kg_entities(principal: Principal, agentID: str, body: dict):
    agent = await agents.resolve(principal, agentID)
    return await kg.upsert_entity(
        principal, agent, body["name"], body["entity_type"], body.get("description"), body.get("properties"),
        external_id=body.get("external_id"), source_id=body.get("source_id"),
        confidence=body.get("confidence"), shared=bool(body.get("shared", False)),
    )


async def get_agents_by_agentid_kg_entities_by_entityid(principal: Principal, agentID: str, entityID: str):
    agent = await agents.resolve(principal, agentID)
    return await kg.get_entity(principal, agent, entityID)


async def delete_agents_by_agentid_kg_entities_by_entityid(principal: Principal, agentID: str, entityID: str):
    agent = await agents.resolve(principal, agentID)
    return await kg.delete_entity(principal, agent, entityID)


async def post_agents_by_agentid_kg_relations(principal: Principal, agentID: str, body: dict):
    agent = await agents.resolve(principal, agentID)
    return await kg.upsert_relation(
        principal, agent, body["source_entity_id"], body["relation_type"], body["target_entity_id"],
        body.get("properties"), body.get("confidence"), shared=bool(body.get("shared", False)),
    )


async def post_agents_by_agentid_kg_traverse(principal: Principal, agentID: str, body: dict):
    agent = await agents.resolve(principal, agentID)
    return await kg.traverse(
        principal, agent, body["entity_id"], body.get("direction", "both"), body.get("max_depth", 2),
        body.get("max_nodes", kg.MAX_NODES), user_id=body.get("user_id"),
    )
