"""Knowledge-graph benchmark: traversal and entity search on 100,000 entities / 300,000 relations.

    .venv/bin/python bench/kg_bench.py [--entities 100000] [--relations 300000] [--starts 200]

Uses GOCLAW_POSTGRES_DSN's server (a fresh database on it) or an embedded PostgreSQL. The graph is
one agent's shared graph; relation targets are skewed towards low ids (a few hubs with thousands of
neighbours, most entities with a handful), so some walks hit the 500-node budget. Prints p50/p99 of
`domain.kg.traverse` by depth and direction with the average number of nodes returned, and of
`domain.kg.search_entities` (ranked prefix search).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

import db  # noqa: E402
from auth.principal import Principal, Role  # noqa: E402
from db.migrate import migrate  # noqa: E402
from domain import kg  # noqa: E402
from tests.support.processes import Database  # noqa: E402

TYPES = ["person", "organization", "project", "task", "event", "concept", "location"]
RELATIONS = ["works_on", "manages", "reports_to", "collaborates_with", "part_of", "depends_on", "related_to"]
SYLLABLES = [a + b for a in "bdfgklmnprstvz" for b in ("a", "e", "i", "o", "u", "ar", "en", "is")]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def name(rng: random.Random) -> str:
    return " ".join("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).title() for _ in range(2))


def load(dsn: str, entities: int, relations: int, rng: random.Random) -> tuple[uuid.UUID, list[uuid.UUID], list[str]]:
    ids = [uuid.uuid4() for _ in range(entities)]
    names = [f"{name(rng)} {i}" for i in range(entities)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        agent = conn.execute("INSERT INTO agents (agent_key, owner_id) VALUES ('kg-bench', 'owner') RETURNING id"
                             ).fetchone()[0]
        with conn.cursor() as cur, cur.copy(
            "COPY kg_entities (id, agent_id, user_id, name, entity_type, description) FROM STDIN"
        ) as copy:
            for i, (eid, entity_name) in enumerate(zip(ids, names, strict=True)):
                copy.write_row((eid, agent, "", entity_name, TYPES[i % len(TYPES)],
                                f"{TYPES[i % len(TYPES)]} number {i} in the benchmark graph"))
        edges = set()
        while len(edges) < relations:
            source = rng.randrange(entities)
            target = int(entities * rng.random() ** 2)  # skewed: low ids are hubs
            if source != target:
                edges.add((source, RELATIONS[rng.randrange(len(RELATIONS))], target))
        with conn.cursor() as cur, cur.copy(
            "COPY kg_relations (id, agent_id, user_id, source_entity_id, relation_type, target_entity_id)"
            " FROM STDIN"
        ) as copy:
            for source, relation, target in edges:
                copy.write_row((uuid.uuid4(), agent, "", ids[source], relation, ids[target]))
        conn.execute("VACUUM ANALYZE kg_entities")
        conn.execute("VACUUM ANALYZE kg_relations")
    return agent, ids, names


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--relations", type=int, default=300_000)
    parser.add_argument("--starts", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="keep the database (prints its DSN)")
    args = parser.parse_args()
    rng = random.Random(20261128)
    database = Database()
    try:
        migrate(database.dsn)
        t0 = time.perf_counter()
        agent_id, ids, names = load(database.dsn, args.entities, args.relations, rng)
        print(f"load: {args.entities:,} entities, {args.relations:,} relations in {time.perf_counter() - t0:.1f}s")
        await db.connect(database.dsn, min_size=1, max_size=2)
        agent = {"id": agent_id, "owner_id": "owner"}
        principal = Principal(role=Role.OPERATOR, kind="api_key", user_id="")
        starts = [ids[rng.randrange(len(ids))] for _ in range(args.starts)]
        for start in starts[:20]:  # warm-up
            await kg.traverse(principal, agent, start, "both", 3)
        print(f"traverse ({args.starts} random start entities):")
        for direction, depth in (("out", 3), ("both", 1), ("both", 2), ("both", 3)):
            times, nodes, truncated = [], [], 0
            for start in starts:
                t0 = time.perf_counter()
                result = await kg.traverse(principal, agent, start, direction, depth)
                times.append((time.perf_counter() - t0) * 1000)
                nodes.append(len(result["nodes"]))
                truncated += result["truncated"]
            print(f"  depth {depth} {direction:4}  p50 {statistics.median(times):6.1f} ms  "
                  f"p99 {pct(times, 0.99):6.1f} ms  nodes avg {statistics.mean(nodes):5.0f}  "
                  f"hit the 500-node budget: {truncated}")
        times = []
        queries = [names[rng.randrange(len(names))].split()[rng.randrange(2)][:4] for _ in range(args.starts)]
        for q in queries:
            t0 = time.perf_counter()
            await kg.search_entities(principal, agent, q, limit=20)
            times.append((time.perf_counter() - t0) * 1000)
        print(f"search (prefix of a name word, limit 20): p50 {statistics.median(times):.1f} ms  "
              f"p99 {pct(times, 0.99):.1f} ms")
        await db.disconnect()
    finally:
        if args.keep:
            print("kept:", database.dsn)
        else:
            database.close()


if __name__ == "__main__":
    os.environ.setdefault("GOCLAW_LOG_LEVEL", "warning")
    asyncio.run(main())
