"""Knowledge graph: entities and typed, directed relations, per agent and per user.

Scope works as for memory: `user_id = ''` is the agent's shared graph, anything else one user's
personal graph. A caller sees the shared graph plus their own (admins see everything when
listing); only the agent's owner or an admin writes the shared graph. A relation lives in one
scope and may only connect entities visible from it (a shared relation joins shared entities, a
personal one shared or own entities), so a traversal never reaches an entity its caller could not
read.

Entities are upserted by (agent, user, lower(name), entity_type): the same name with another type
is another entity. Omitted fields keep their stored values; `properties` are merged key by key.

Search without pg_trgm: `tsv` (generated) holds the name (weight A), the type (B) and the
description (C) under the `simple` configuration (no stemming, so names stay as written). The query
is split into words and every word becomes a prefix term (`'ali':*`), OR-ed together, so "ali"
finds "Alice" and "alice smith" ranks "Alice Smith" above "Alice Jones". Order: exact
(case-insensitive) name match, then `ts_rank` (name hits weigh most), then confidence, then
recency. Substrings inside a word ("lice" in "Alice") do not match — the price of no trigrams.

Traversal is one breadth-first `WITH RECURSIVE` query whose single row per level carries the
frontier and the set of entities already seen: each level expands the frontier through
`kg_relations` (out, in or both directions, index-only scans on the INCLUDE indexes) and keeps only
entities not seen before. So every entity appears once, at its shortest distance; cycles cannot
loop; the work per level is bounded by the frontier, not by the number of paths (a path-array CTE
is exponential on dense graphs). Two budgets keep hubs in check: the node budget (`max_nodes`,
≤ 500) cuts the frontier inside the recursion, and each level reads at most SCAN_PER_LEVEL
relations per direction; either marks the result `truncated`. Depth 0 is the start entity;
`max_depth` ≤ 3 hops. The edges are collected during the walk, so no second pass re-reads the
index: every relation the walk read (all relations of each expanded entity, in the walked
directions) whose two ends were returned, once, with the depth of its deeper end, at most MAX_EDGES.
Entities at the last depth are not expanded, so a relation between two of them is not listed.
The whole traversal runs under `SET LOCAL statement_timeout`, in one round trip.
"""

from __future__ import annotations

import json
import re
import uuid

import db
from auth import Principal
from domain import activity
from domain.memory import can_write_shared
from domain.paging import page
from gateway.errors import ApiError, bad_request, not_found

MAX_NAME = 500
MAX_TYPE = 100
MAX_DESCRIPTION = 10_000
MAX_QUERY = 500
MAX_PROPERTIES = 100
MAX_DEPTH = 3
MAX_NODES = 500
MAX_EDGES = 2000
MAX_RELATIONS_SHOWN = 200
SCAN_PER_LEVEL = 4 * MAX_NODES  # relations read per level and direction at most
TRAVERSE_TIMEOUT = "3s"
TYPE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
_TYPE_RE = re.compile(TYPE_PATTERN)
_WORD = re.compile(r"[^\W_]+")
DIRECTIONS = ("both", "out", "in")

ENTITY_COLUMNS = """
e.id, e.agent_id, e.user_id, e.external_id, e.name, e.entity_type, e.description, e.properties,
e.source_id, e.confidence, e.created_at, e.updated_at
"""
UPSERT_ENTITY_SQL = f"""
INSERT INTO kg_entities AS e
    (agent_id, user_id, external_id, name, entity_type, description, properties, source_id, confidence)
VALUES (%(agent)s, %(user)s, coalesce(%(external_id)s, ''), %(name)s, %(type)s, coalesce(%(description)s, ''),
        coalesce(%(properties)s::jsonb, '{{}}'), coalesce(%(source_id)s, ''), coalesce(%(confidence)s, 1.0))
ON CONFLICT (agent_id, user_id, lower(name), entity_type) DO UPDATE SET
    name = EXCLUDED.name,
    external_id = coalesce(%(external_id)s, e.external_id),
    description = coalesce(%(description)s, e.description),
    properties = e.properties || coalesce(%(properties)s::jsonb, '{{}}'),
    source_id = coalesce(%(source_id)s, e.source_id),
    confidence = coalesce(%(confidence)s, e.confidence),
    updated_at = now()
RETURNING {ENTITY_COLUMNS}, (xmax = 0) AS created
"""
GET_ENTITY_SQL = f"""
SELECT {ENTITY_COLUMNS} FROM kg_entities e
WHERE e.id = %(id)s AND e.agent_id = %(agent)s AND (%(users)s::text[] IS NULL OR e.user_id = ANY(%(users)s))
"""
LIST_SQL = f"""
SELECT {ENTITY_COLUMNS}, NULL::real AS score FROM kg_entities e
WHERE e.agent_id = %(agent)s AND (%(users)s::text[] IS NULL OR e.user_id = ANY(%(users)s))
  AND (%(type)s::text IS NULL OR e.entity_type = %(type)s)
ORDER BY e.updated_at DESC, e.id DESC
LIMIT %(limit)s OFFSET %(offset)s
"""
SEARCH_SQL = f"""
SELECT {ENTITY_COLUMNS}, ts_rank(e.tsv, q.tq) AS score
FROM kg_entities e, (SELECT to_tsquery('simple', %(tq)s) AS tq) q
WHERE e.agent_id = %(agent)s AND (%(users)s::text[] IS NULL OR e.user_id = ANY(%(users)s))
  AND (%(type)s::text IS NULL OR e.entity_type = %(type)s)
  AND e.tsv @@ q.tq
ORDER BY (lower(e.name) = lower(%(q)s)) DESC, ts_rank(e.tsv, q.tq) DESC, e.confidence DESC,
         e.updated_at DESC, e.id
LIMIT %(limit)s OFFSET %(offset)s
"""
DELETE_ENTITY_SQL = "DELETE FROM kg_entities WHERE id = %s"
RELATIONS_OF_SQL = """
SELECT r.id, r.user_id, r.source_entity_id, r.relation_type, r.target_entity_id, r.confidence,
       r.properties, r.created_at, r.updated_at,
       o.id AS other_id, o.name AS other_name, o.entity_type AS other_type
FROM kg_relations r
JOIN kg_entities o ON o.id = CASE WHEN r.source_entity_id = %(id)s THEN r.target_entity_id ELSE r.source_entity_id END
WHERE (r.source_entity_id = %(id)s OR r.target_entity_id = %(id)s)
  AND (%(users)s::text[] IS NULL OR r.user_id = ANY(%(users)s))
ORDER BY r.created_at DESC, r.id
LIMIT %(limit)s
"""
ENDPOINTS_SQL = """
SELECT id, user_id FROM kg_entities WHERE id = ANY(%(ids)s) AND agent_id = %(agent)s AND user_id = ANY(%(users)s)
"""
UPSERT_RELATION_SQL = """
INSERT INTO kg_relations AS r
    (agent_id, user_id, source_entity_id, relation_type, target_entity_id, confidence, properties)
VALUES (%(agent)s, %(user)s, %(source)s, %(type)s, %(target)s, coalesce(%(confidence)s, 1.0),
        coalesce(%(properties)s::jsonb, '{}'))
ON CONFLICT (agent_id, user_id, source_entity_id, relation_type, target_entity_id) DO UPDATE SET
    confidence = coalesce(%(confidence)s, r.confidence),
    properties = r.properties || coalesce(%(properties)s::jsonb, '{}'),
    updated_at = now()
RETURNING id, user_id, source_entity_id, relation_type, target_entity_id, confidence, properties,
          created_at, updated_at, (xmax = 0) AS created
"""
TIMEOUT_SQL = "SELECT set_config('statement_timeout', %s, true)"
# Breadth-first, one row per level: (depth, frontier, seen, truncated). See the module docstring.
# Each direction reads at most %(scan)s relations per level, so a hub cannot make a level expensive.
TRAVERSE_SQL = """
WITH RECURSIVE bfs(depth, frontier, seen, truncated, e_id, e_user, e_source, e_type, e_target, e_confidence) AS (
    SELECT 0, ARRAY[e.id], ARRAY[e.id], false, NULL::uuid[], NULL::text[], NULL::uuid[], NULL::text[], NULL::uuid[],
           NULL::float8[]
    FROM kg_entities e
    WHERE e.id = %(start)s AND e.agent_id = %(agent)s AND e.user_id = ANY(%(users)s)
  UNION ALL
    SELECT b.depth + 1,
           n.ids[1:%(max_nodes)s - cardinality(b.seen)],
           b.seen || n.ids[1:%(max_nodes)s - cardinality(b.seen)],
           cardinality(n.ids) > %(max_nodes)s - cardinality(b.seen) OR n.scanned >= %(scan)s,
           n.e_id, n.e_user, n.e_source, n.e_type, n.e_target, n.e_confidence
    FROM bfs b
    CROSS JOIN LATERAL (
        SELECT coalesce(array_agg(DISTINCT x.other ORDER BY x.other) FILTER (WHERE NOT x.other = ANY(b.seen)), '{}')
                 AS ids,
               max(x.rn) AS scanned,
               array_agg(x.id) AS e_id, array_agg(x.user_id::text) AS e_user, array_agg(x.source_entity_id) AS e_source,
               array_agg(x.relation_type::text) AS e_type, array_agg(x.target_entity_id) AS e_target,
               array_agg(x.confidence) AS e_confidence
        FROM (
            (SELECT r.id, r.user_id, r.source_entity_id, r.relation_type, r.target_entity_id, r.confidence,
                    r.target_entity_id AS other, row_number() OVER () AS rn
             FROM kg_relations r
             WHERE %(out)s AND r.source_entity_id = ANY(b.frontier) AND r.user_id = ANY(%(users)s)
             LIMIT %(scan)s)
            UNION ALL
            (SELECT r.id, r.user_id, r.source_entity_id, r.relation_type, r.target_entity_id, r.confidence,
                    r.source_entity_id AS other, row_number() OVER () AS rn
             FROM kg_relations r
             WHERE %(in)s AND r.target_entity_id = ANY(b.frontier) AND r.user_id = ANY(%(users)s)
             LIMIT %(scan)s)
        ) x
    ) n
    WHERE b.depth < %(max_depth)s AND cardinality(b.frontier) > 0 AND NOT b.truncated
),
levels AS (SELECT b.depth, u.id FROM bfs b, unnest(b.frontier) AS u(id)),
-- the relations the walk read whose two ends were returned, once each (hash-joined on the levels)
edges AS (
    SELECT DISTINCT ON (r.id) r.id, r.user_id, r.source, r.relation_type, r.target, r.confidence,
           greatest(s.depth, t.depth) AS depth
    FROM bfs b
    CROSS JOIN LATERAL unnest(b.e_id, b.e_user, b.e_source, b.e_type, b.e_target, b.e_confidence)
        AS r(id, user_id, source, relation_type, target, confidence)
    JOIN levels s ON s.id = r.source
    JOIN levels t ON t.id = r.target
)
SELECT e.id, e.agent_id, e.user_id, e.external_id, e.name, e.entity_type, e.description, e.properties,
       e.source_id, e.confidence, e.created_at, e.updated_at, l.depth,
       (SELECT bool_or(truncated) FROM bfs) AS truncated,
       -- the edges, once, on the first row: [id, user_id, source, type, target, confidence, depth]
       CASE WHEN row_number() OVER (ORDER BY l.depth, e.name, e.id) = 1 THEN
           (SELECT coalesce(json_agg(json_build_array(g.id, g.user_id, g.source, g.relation_type, g.target,
                                                      g.confidence, g.depth)
                                     ORDER BY g.source, g.relation_type, g.target), '[]')
            FROM (SELECT * FROM edges ORDER BY source, relation_type, target LIMIT %(max_edges)s + 1) g)
       END AS edges
FROM levels l JOIN kg_entities e ON e.id = l.id
ORDER BY l.depth, e.name, e.id
"""


def _ms(value) -> int:
    return int(value.timestamp() * 1000)


def _entity_out(row: dict) -> dict:
    out = {
        "id": str(row["id"]),
        "agent_id": str(row["agent_id"]),
        "user_id": row["user_id"],
        "scope": "personal" if row["user_id"] else "shared",
        "external_id": row["external_id"],
        "name": row["name"],
        "entity_type": row["entity_type"],
        "description": row["description"],
        "properties": row["properties"],
        "source_id": row["source_id"],
        "confidence": row["confidence"],
        "created_at": _ms(row["created_at"]),
        "updated_at": _ms(row["updated_at"]),
    }
    if row.get("score") is not None:
        out["score"] = round(float(row["score"]), 6)
    if "depth" in row:
        out["depth"] = row["depth"]
    return out


def _relation_out(row: dict) -> dict:
    return {
        "id": str(row["id"]),
        "user_id": row["user_id"],
        "scope": "personal" if row["user_id"] else "shared",
        "source_entity_id": str(row["source_entity_id"]),
        "relation_type": row["relation_type"],
        "target_entity_id": str(row["target_entity_id"]),
        "confidence": row["confidence"],
        "properties": row["properties"],
        "created_at": _ms(row["created_at"]),
        "updated_at": _ms(row["updated_at"]),
    }


def _edge_out(edge: list) -> dict:
    """A relation as TRAVERSE_SQL lists it: [id, user_id, source, type, target, confidence, depth]."""
    rid, user, source, relation_type, target, confidence, depth = edge
    return {"id": rid, "scope": "personal" if user else "shared", "source_entity_id": source,
            "relation_type": relation_type, "target_entity_id": target, "confidence": confidence, "depth": depth}


def _uuid(value, what: str) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError:
        raise ApiError(400, "error.invalid_id", what) from None


def _visible(principal: Principal, requested: str | None = None) -> list[str]:
    user = requested if (requested is not None and principal.is_admin) else principal.user_id
    return [user, ""] if user else [""]


def _listing_users(principal: Principal, requested: str | None) -> list[str] | None:
    """None (= every user) for admins who name nobody; otherwise the shared graph plus one user's."""
    if principal.is_admin and requested is None:
        return None
    return _visible(principal, requested)


def _write_scope(principal: Principal, agent: dict, shared: bool) -> str:
    user = "" if shared else principal.user_id
    if not user and not can_write_shared(principal, agent):
        raise ApiError(403, "error.owner_only", "write the shared knowledge graph")
    return user


def _entity_type(value: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_TYPE or not _TYPE_RE.match(value):
        raise bad_request("entity_type must be 1-100 letters, digits, '_', '.', ':' or '-'")
    return value.lower()


def _properties(value) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > MAX_PROPERTIES:
        raise bad_request(f"properties must be an object with at most {MAX_PROPERTIES} keys")
    return json.dumps(value)


def _confidence(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise bad_request("confidence must be between 0 and 1")
    return float(value)


def _optional_text(value, what: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise bad_request(f"{what} must be a string of at most {limit} characters")
    return value


async def upsert_entity(
    principal: Principal,
    agent: dict,
    name: str,
    entity_type: str,
    description: str | None = None,
    properties: dict | None = None,
    *,
    external_id: str | None = None,
    source_id: str | None = None,
    confidence: float | None = None,
    shared: bool = False,
) -> dict:
    """Create or update the entity (agent, caller's scope, name, type). Returns
    `{"status": "ok", "created": bool, "entity": {...}}`."""
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise bad_request(f"name must be a non-blank string of at most {MAX_NAME} characters")
    params = {
        "agent": agent["id"],
        "user": _write_scope(principal, agent, shared),
        "name": name.strip(),
        "type": _entity_type(entity_type),
        "description": _optional_text(description, "description", MAX_DESCRIPTION),
        "properties": _properties(properties),
        "external_id": _optional_text(external_id, "external_id", 255),
        "source_id": _optional_text(source_id, "source_id", 255),
        "confidence": _confidence(confidence),
    }
    async with db.transaction() as conn:
        row = await db.fetch_one(UPSERT_ENTITY_SQL, params, conn=conn)
        await activity.record(
            conn, principal, "kg.entity_created" if row["created"] else "kg.entity_updated", "kg_entity",
            str(row["id"]), {"agent_id": str(agent["id"]), "name": row["name"], "entity_type": row["entity_type"]},
        )
    return {"status": "ok", "created": bool(row["created"]), "entity": _entity_out(row)}


def prefix_query(text: str) -> str | None:
    """`'word1':* | 'word2':*` for to_tsquery('simple', …); None when the text has no words."""
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(text)))[:32]
    return " | ".join(f"'{w}':*" for w in words) or None


async def search_entities(
    principal: Principal,
    agent: dict,
    query: str | None = None,
    entity_type: str | None = None,
    limit: int | None = 50,
    offset: int | None = 0,
    *,
    user_id: str | None = None,
) -> list[dict]:
    """Entities of the agent the caller may see; ranked by relevance when `query` has words,
    otherwise most recently updated first. Admins see every user's entities unless they name one."""
    limit, offset = page(limit, offset, max_limit=200)
    if query is not None and len(query) > MAX_QUERY:
        raise bad_request(f"q must be at most {MAX_QUERY} characters")
    params = {
        "agent": agent["id"], "users": _listing_users(principal, user_id),
        "type": _entity_type(entity_type) if entity_type else None, "limit": limit, "offset": offset,
    }
    tsquery = prefix_query(query) if query else None
    if tsquery is None:
        rows = await db.fetch_all(LIST_SQL, params)
    else:
        rows = await db.fetch_all(SEARCH_SQL, {**params, "tq": tsquery, "q": query.strip()})
    return [_entity_out(r) for r in rows]


async def _find_entity(principal: Principal, agent: dict, entity_id, *, conn=None) -> dict:
    eid = _uuid(entity_id, "entity")
    users = None if principal.is_admin else _visible(principal)
    row = await db.fetch_one(GET_ENTITY_SQL, {"id": eid, "agent": agent["id"], "users": users}, conn=conn)
    if row is None:
        raise not_found("entity", entity_id)
    return row


async def get_entity(principal: Principal, agent: dict, entity_id) -> dict:
    """One entity with its relations (both directions) visible from its scope, newest first."""
    row = await _find_entity(principal, agent, entity_id)
    users = [row["user_id"], ""] if row["user_id"] else [""]
    if not principal.is_admin:
        users = _visible(principal)
    relations = await db.fetch_all(RELATIONS_OF_SQL, {"id": row["id"], "users": users, "limit": MAX_RELATIONS_SHOWN})
    out = _entity_out(row)
    out["relations"] = [
        {**_relation_out(r), "direction": "out" if r["source_entity_id"] == row["id"] else "in",
         "other": {"id": str(r["other_id"]), "name": r["other_name"], "entity_type": r["other_type"]}}
        for r in relations
    ]
    return out


async def delete_entity(principal: Principal, agent: dict, entity_id) -> dict:
    """Delete an entity and (by cascade) its relations. Shared entities: owner or admin only."""
    async with db.transaction() as conn:
        row = await _find_entity(principal, agent, entity_id, conn=conn)
        if not row["user_id"] and not can_write_shared(principal, agent):
            raise ApiError(403, "error.owner_only", "delete shared knowledge-graph entities")
        await conn.execute(DELETE_ENTITY_SQL, (row["id"],))
        await activity.record(conn, principal, "kg.entity_deleted", "kg_entity", str(row["id"]),
                              {"agent_id": str(agent["id"]), "name": row["name"]})
    return {"status": "deleted", "id": str(row["id"])}


async def upsert_relation(
    principal: Principal,
    agent: dict,
    source_entity_id,
    relation_type: str,
    target_entity_id,
    properties: dict | None = None,
    confidence: float | None = None,
    *,
    shared: bool = False,
) -> dict:
    """Create or update the relation source -[relation_type]-> target in the caller's scope (or the
    shared one). Both entities must be visible from that scope (otherwise 409). Returns
    `{"status": "ok", "created": bool, "relation": {...}}`."""
    source = _uuid(source_entity_id, "source entity")
    target = _uuid(target_entity_id, "target entity")
    user = _write_scope(principal, agent, shared)
    params = {
        "agent": agent["id"], "user": user, "source": source, "target": target,
        "type": _entity_type(relation_type), "properties": _properties(properties),
        "confidence": _confidence(confidence),
    }
    async with db.transaction() as conn:
        found = {r["id"] for r in await db.fetch_all(
            ENDPOINTS_SQL, {"ids": [source, target], "agent": agent["id"], "users": [user, ""] if user else [""]},
            conn=conn)}
        for eid, raw in ((source, source_entity_id), (target, target_entity_id)):
            if eid not in found:  # the body names it: a conflict with the graph, not a missing URL
                raise ApiError(409, "error.conflict", f"no such entity in this graph: {raw}")
        row = await db.fetch_one(UPSERT_RELATION_SQL, params, conn=conn)
        await activity.record(
            conn, principal, "kg.relation_created" if row["created"] else "kg.relation_updated", "kg_relation",
            str(row["id"]), {"agent_id": str(agent["id"]), "source": str(source), "target": str(target),
                             "relation_type": row["relation_type"]},
        )
    return {"status": "ok", "created": bool(row["created"]), "relation": _relation_out(row)}


async def traverse(
    principal: Principal,
    agent: dict,
    entity_id,
    direction: str = "both",
    max_depth: int = 2,
    max_nodes: int = MAX_NODES,
    *,
    user_id: str | None = None,
) -> dict:
    """Entities within `max_depth` hops of `entity_id` (each once, at its shortest distance) and the
    relations among them. `{"root", "direction", "max_depth", "nodes": [entity + depth],
    "edges": [relation + depth], "truncated"}`."""
    if direction not in DIRECTIONS:
        raise bad_request("direction must be one of both, out, in")
    if isinstance(max_depth, bool) or not isinstance(max_depth, int) or not 1 <= max_depth <= MAX_DEPTH:
        raise bad_request(f"max_depth must be between 1 and {MAX_DEPTH}")
    if isinstance(max_nodes, bool) or not isinstance(max_nodes, int) or not 1 <= max_nodes <= MAX_NODES:
        raise bad_request(f"max_nodes must be between 1 and {MAX_NODES}")
    start = _uuid(entity_id, "entity")
    if principal.is_admin and user_id is None:
        # admins walk the graph as the start entity's owner sees it
        row = await _find_entity(principal, agent, start)
        users = [row["user_id"], ""] if row["user_id"] else [""]
    else:
        users = _visible(principal, user_id)
    params = {"start": start, "agent": agent["id"], "users": users, "max_depth": max_depth,
              "max_nodes": max_nodes, "scan": SCAN_PER_LEVEL, "max_edges": MAX_EDGES,
              "out": direction in ("both", "out"), "in": direction in ("both", "in")}
    async with db.transaction() as conn:
        async with conn.pipeline():  # one round trip for the timeout and the walk
            await conn.execute(TIMEOUT_SQL, (TRAVERSE_TIMEOUT,))
            cursor = await conn.execute(TRAVERSE_SQL, params)
        rows = await cursor.fetchall()
    if not rows:
        raise not_found("entity", entity_id)
    edges = rows[0]["edges"]
    return {
        "root": str(start),
        "direction": direction,
        "max_depth": max_depth,
        "nodes": [_entity_out(r) for r in rows],
        "edges": [_edge_out(e) for e in edges[:MAX_EDGES]],
        "truncated": bool(rows[0]["truncated"]) or len(edges) > MAX_EDGES,
    }
