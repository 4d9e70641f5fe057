"""Memory benchmark: hybrid search latency and recall on 100,000 chunks, ingest throughput, quality.

    .venv/bin/python bench/memory_bench.py [--chunks 100000] [--tenants 10] [--queries 200]

Uses GOCLAW_POSTGRES_DSN's server (a fresh database on it) or an embedded PostgreSQL. Prints:

* load: 100,000 chunks of 384-dim vectors for 10 tenants (agents; half of each tenant's documents
  personal, half shared) with synthetic topical text, and the time to build the HNSW index;
* search: p50/p99 of `domain.memory.ranked` (full-text + vector candidates, fusion) with the
  automatic strategy (HNSW over-fetch for these 10%-of-the-index scopes), next to the exact
  strategy; recall@10 of the vector candidates and of the final hybrid top 10 against exact brute
  force in the same scope. The query vector is given (embedding time is the provider's, not ours);
  vectors are clustered (topic → document → chunk) and queries are perturbed chunks, like passages
  a user asks about;
* ingest: chunks/s through `domain.memory.save_document` with the stub embedding server
  (tests/stubs/llm_stub.py), cold and with the embedding cache warm;
* quality: on tests/data (40 queries), how often the right document ranks first for the `simple`
  and `english` text-search configurations, with score fusion or reciprocal-rank fusion, with no
  vectors, with uninformative (hash) vectors like the stub's, and with informative (bag-of-words)
  vectors.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import math
import os
import random
import re
import statistics
import struct
import sys
import time
import uuid
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from common import start_stub  # noqa: E402

import db  # noqa: E402
from auth.principal import Principal, Role  # noqa: E402
from db.migrate import migrate  # noqa: E402
from domain import embeddings, memory  # noqa: E402
from tests.support.processes import Database  # noqa: E402

DIMS = 384
VECTOR_HEADER = struct.pack(">HH", 384, 0)
MODEL = "bench-embedding"
SYLLABLES = [a + b for a in "bdfgklmnprstvz" for b in ("a", "e", "i", "o", "u", "ar", "en", "is", "or", "ul")]


def word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))


def unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def noisy(rng: random.Random, base: list[float], scale: float) -> list[float]:
    amp = scale / math.sqrt(len(base) / 3)  # uniform noise whose norm is about `scale`
    r = rng.random
    return unit([b + amp * (2 * r() - 1) for b in base])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- load ---------------------------------------------------------------------------------------


def generate(rng: random.Random, chunks: int, tenants: int):
    """Chunk rows (text, packed vector) and, per tenant, a sample of (vector, topic words, words) for
    queries. Vectors: topic centroid → document (+ noise) → chunk (+ noise); the noise comes from a
    pool of pre-drawn vectors (two per chunk), which keeps 100,000 x 384 values fast in pure Python."""
    common = [word(rng) for _ in range(3000)]
    cum = list(itertools.accumulate(1 / (i + 1) for i in range(len(common))))
    topics = [([word(rng) for _ in range(40)], unit([rng.gauss(0, 1) for _ in range(DIMS)])) for _ in range(200)]
    amp = 0.35 / math.sqrt(DIMS / 3)
    pool = [[amp * (2 * rng.random() - 1) for _ in range(DIMS)] for _ in range(2048)]
    per_doc = 10
    samples: dict[int, list] = {t: [] for t in range(tenants)}
    rows = []
    for d in range(chunks // per_doc):
        tenant = d % tenants
        topic_words, centroid = topics[rng.randrange(len(topics))]
        doc_vector = noisy(rng, centroid, 0.8)
        doc_id = uuid.uuid4()
        user = f"user{tenant}" if d % 2 else ""
        for c in range(per_doc):
            words = rng.choices(topic_words, k=30) + rng.choices(common, cum_weights=cum, k=90)
            text = " ".join(words)
            vector = list(map(sum, zip(doc_vector, rng.choice(pool), rng.choice(pool), strict=True)))
            packed = array("f", vector)
            packed.byteswap()  # pgvector's binary format: int16 dims, int16 0, big-endian float4s
            rows.append((doc_id, tenant, user, d, c, text, VECTOR_HEADER + packed.tobytes()))
            if rng.random() < 0.01:
                samples[tenant].append((vector, topic_words, words))
    return rows, samples


async def load(dsn: str, rows: list, tenants: int) -> list[dict]:
    agents = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for t in range(tenants):
            row = conn.execute(
                "INSERT INTO agents (agent_key, owner_id) VALUES (%s, %s) RETURNING id",
                (f"bench-{t}", f"user{t}"),
            ).fetchone()
            agents.append({"id": row[0], "memory_config": {}, "owner_id": f"user{t}"})
        # bulk load without the secondary indexes, then rebuild them (as a restore would)
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN ('memory_chunks', %s)"
            " AND indexname NOT LIKE '%%pkey'", (f"memory_vectors_{DIMS}",)).fetchall()
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        docs = {}
        for doc_id, tenant, user, d, _, _, _ in rows:
            docs[doc_id] = (agents[tenant]["id"], user, f"notes/doc-{d}.md")
        with conn.cursor() as cur, cur.copy(
            "COPY memory_documents (id, agent_id, user_id, path, content, hash, chunk_count, embedded_count,"
            " embedding_model) FROM STDIN"
        ) as copy:
            for doc_id, (agent_id, user, path) in docs.items():
                copy.write_row((doc_id, agent_id, user, path, "", "0" * 64, 10, 10, MODEL))
        with conn.cursor() as cur, cur.copy(
            "COPY memory_chunks (document_id, agent_id, user_id, path, ord, start_line, end_line, text, hash,"
            " dims, emb_model) FROM STDIN"
        ) as copy:
            for doc_id, tenant, user, d, c, text, _ in rows:
                copy.write_row((doc_id, agents[tenant]["id"], user, f"notes/doc-{d}.md", c, 1, 1, text,
                                hashlib.sha256(text.encode()).hexdigest(), DIMS, MODEL))
        # identity values follow the COPY order
        ids = [r[0] for r in conn.execute("SELECT id FROM memory_chunks ORDER BY id")]
        with conn.cursor() as cur, cur.copy(
            f"COPY memory_vectors_{DIMS} (chunk_id, agent_id, user_id, emb_model, embedding) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            # the vector column is sent pre-encoded (bytea dumps bytes as they are)
            copy.set_types(["int8", "uuid", "varchar", "varchar", "bytea"])
            for chunk_id, (_, tenant, user, _, _, _, vector) in zip(ids, rows, strict=True):
                copy.write_row((chunk_id, agents[tenant]["id"], user, MODEL, vector))
        for _, indexdef in indexes:
            conn.execute(indexdef)
    return agents


# -- search -------------------------------------------------------------------------------------

VECTOR_ONLY = {
    "hnsw": "WITH " + memory._HNSW_CTE + " SELECT id FROM ann",
    "exact": "WITH " + memory._EXACT_CTE + " SELECT id FROM ann",
}


async def vector_ids(strategy: str, agent: dict, users: list[str], vector: list[float], k: int | None) -> list[int]:
    params = {"agent": agent["id"], "users": users, "vec": embeddings.to_literal(vector), "model": MODEL,
              "nv": 10, "k": k or 0}
    rows = await memory._run_search(VECTOR_ONLY[strategy], params, DIMS, max(k, 40) if k else None)
    return [r["id"] for r in rows]


async def bench_search(agents: list[dict], samples: dict, queries: int, rng: random.Random) -> dict:
    cases = []
    for i in range(queries):
        tenant = i % len(agents)
        vector, topic_words, words = rng.choice(samples[tenant])
        text = " ".join(rng.sample(topic_words, 2) + rng.sample(words, 1))
        cases.append((agents[tenant], [f"user{tenant}", ""], text, noisy(rng, vector, 0.3)))
    # warm-up: plans, caches, index pages
    for agent, users, text, vector in cases[:20]:
        await memory.ranked(agent, users, text, 10, vector, MODEL)
        await memory.ranked(agent, users, text, 10, vector, MODEL, force="exact")
    auto, exact, fulltext, vec_recall, hyb_recall = [], [], [], [], []
    strategies: dict[str, int] = {}
    for agent, users, text, vector in cases:
        t0 = time.perf_counter()
        got = await memory.ranked(agent, users, text, 10, vector, MODEL)
        auto.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        truth = await memory.ranked(agent, users, text, 10, vector, MODEL, force="exact")
        exact.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        await memory.ranked(agent, users, text, 10, None, None)
        fulltext.append((time.perf_counter() - t0) * 1000)
        key = lambda r: (r["document_id"], r["chunk_index"])  # noqa: E731
        truth_ids = {key(r) for r in truth["results"]}
        hyb_recall.append(len(truth_ids & {key(r) for r in got["results"]}) / max(1, len(truth_ids)))
        plan = await memory._vector_plan(agent["id"], users, DIMS, MODEL, 10)
        strategies[plan.strategy] = strategies.get(plan.strategy, 0) + 1
        approx = await vector_ids(plan.strategy, agent, users, vector, plan.k) if plan.strategy == "hnsw" else None
        real = await vector_ids("exact", agent, users, vector, None)
        vec_recall.append(len(set(real) & set(approx if approx is not None else real)) / max(1, len(real)))
    return {"auto": auto, "exact": exact, "fulltext": fulltext, "vec_recall": vec_recall,
            "hyb_recall": hyb_recall, "strategies": strategies}


# -- ingest -------------------------------------------------------------------------------------




async def bench_ingest(dsn: str, stub_base: str, documents: int, rng: random.Random) -> dict:
    import llm

    http = llm.create_http_client()
    client = llm.make_client("openai_compat", stub_base, "sk-bench", http)

    async def adapter(_name: str):
        return client

    embeddings._adapter = adapter  # the stub stands in for domain.providers
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO llm_providers (name, provider_type, api_base) VALUES ('stub', 'openai_compat', %s)",
                     (stub_base,))
        agent_id = conn.execute(
            "INSERT INTO agents (agent_key, owner_id, provider, memory_config) VALUES "
            "('bench-ingest', 'writer', 'stub', '{\"dimensions\": 384}') RETURNING id").fetchone()[0]
    agent = {"id": agent_id, "owner_id": "writer", "provider": "stub", "memory_config": {"dimensions": 384}}
    principal = Principal(role=Role.OPERATOR, kind="api_key", user_id="writer")
    paragraphs = [" ".join(word(rng) + ("." if rng.random() < 0.08 else "") for _ in range(rng.randint(40, 90)))
                  for _ in range(documents * 8)]
    texts = ["\n\n".join(paragraphs[i * 8:(i + 1) * 8]) for i in range(documents)]
    results = {}
    for label, prefix in (("cold", "a"), ("cached", "b")):
        sem = asyncio.Semaphore(4)

        async def save(i: int, prefix: str = prefix, sem: asyncio.Semaphore = sem) -> int:
            async with sem:
                saved = await memory.save_document(principal, agent, f"{prefix}/doc-{i}.md", texts[i])
                return saved["chunks"]

        t0 = time.perf_counter()
        total = sum(await asyncio.gather(*(save(i) for i in range(documents))))
        elapsed = time.perf_counter() - t0
        results[label] = (total, elapsed)
    await http.aclose()
    return results


# -- quality ------------------------------------------------------------------------------------


def hash_vector(text: str) -> list[float]:  # what the stub returns: noise
    raw = hashlib.shake_256(text.encode()).digest(DIMS * 2)
    return unit([v / 32767.5 - 1.0 for v in struct.unpack(f"<{DIMS}H", raw)])


def bow_vector(text: str, dims: int = 256) -> list[float]:  # crude but informative
    vector = [0.0] * dims
    for token in re.findall(r"\w+", text.lower()):
        if len(token) >= 3:
            h = int(hashlib.md5(token[:5].encode()).hexdigest(), 16)
            vector[h % dims] += 1.0 if (h >> 8) & 1 else -1.0
    return unit(vector)


def quality(dsn: str) -> list[str]:
    data = ROOT / "tests" / "data"
    queries = json.loads((data / "memory_queries.json").read_text())
    lines = []
    with psycopg.connect(dsn, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        conn.execute("""CREATE TEMP TABLE qc (id serial PRIMARY KEY, path text, text text,
            tsv_simple tsvector GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED,
            tsv_english tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED)""")
        vectors = {}
        for file in sorted((data / "memory_corpus").rglob("*.md")):
            for chunk in memory.chunk_text(file.read_text()):
                row = conn.execute("INSERT INTO qc (path, text) VALUES (%s, %s) RETURNING id",
                                   (str(file.relative_to(data / "memory_corpus")), chunk.text)).fetchone()
                vectors[row["id"]] = {"hash": hash_vector(chunk.text), "bow": bow_vector(chunk.text)}

        def first(query: str, config: str, kind: str | None, method: str) -> str | None:
            col = f"tsv_{config}"
            rows = conn.execute(f"""
                WITH q AS (SELECT replace(plainto_tsquery('{config}', %(q)s)::text, ' & ', ' | ')::tsquery AS tq,
                                  tsvector_to_array(to_tsvector('{config}', %(q)s)) AS lex)
                SELECT id, path, '' AS user_id, ts_rank({col}, tq) AS rank, lex,
                       ARRAY(SELECT l FROM unnest(lex) AS l WHERE length(ts_delete({col}, l)) < length({col}))
                         AS matched,
                       {col} @@ tq AS hit
                FROM qc, q""", {"q": query}).fetchall()
            qv = {"hash": hash_vector(query), "bow": bow_vector(query)}[kind] if kind else None
            for r in rows:
                r["similarity"] = sum(a * b for a, b in zip(vectors[r["id"]][kind], qv, strict=True)) if kind else None
            fts = sorted((r for r in rows if r["hit"]), key=lambda r: -r["rank"])[:20]
            vec = sorted(rows, key=lambda r: -r["similarity"])[:20] if kind else []
            candidates = list({r["id"]: r for r in fts + vec}.values())
            if not candidates:
                return None
            scored = memory.fuse(candidates, method, kind is not None, (memory.TEXT_WEIGHT, memory.VECTOR_WEIGHT))
            return max(scored, key=lambda s: s[0])[1]["path"]

        for config in ("simple", "english"):
            for kind in (None, "hash", "bow"):
                for method in ("score", "rrf") if kind else ("score",):
                    hits = sum(first(q["query"], config, kind, method) == q["expect"] for q in queries)
                    lines.append(f"  {config:8} vectors={kind!s:5} fusion={method:5} right document first: "
                                 f"{hits}/{len(queries)}")
    return lines


# -- main ---------------------------------------------------------------------------------------


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ingest-docs", type=int, default=150)
    parser.add_argument("--keep", action="store_true", help="keep the database (prints its DSN)")
    args = parser.parse_args()
    rng = random.Random(20261128)
    database = Database()
    stub, stub_root = start_stub()
    stub_base = stub_root + "/v1"
    try:
        dsn = database.dsn
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{database.name}" SET maintenance_work_mem = \'1GB\'')
        migrate(dsn)

        t0 = time.perf_counter()
        rows, samples = generate(rng, args.chunks, args.tenants)
        t_gen = time.perf_counter() - t0
        await db.connect(dsn, min_size=1, max_size=4)
        await memory.ensure_vector_table(DIMS, hnsw=False)  # the index is built after the load
        t0 = time.perf_counter()
        agents = await load(dsn, rows, args.tenants)
        t_load = time.perf_counter() - t0
        del rows
        t0 = time.perf_counter()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(memory._with_dims(memory.CREATE_HNSW_SQL, DIMS))
        t_index = time.perf_counter() - t0
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE memory_chunks")
            conn.execute(f"VACUUM ANALYZE memory_vectors_{DIMS}")
        print(f"load: {args.chunks:,} chunks x {DIMS} dims, {args.tenants} tenants — generated in {t_gen:.1f}s, "
              f"COPY {t_load:.1f}s ({args.chunks / t_load:,.0f} chunks/s), HNSW build {t_index:.1f}s")

        result = await bench_search(agents, samples, args.queries, rng)
        print(f"search ({args.queries} queries, limit 10, scope = {args.chunks // args.tenants:,} chunks per tenant; "
              f"strategies {result['strategies']}):")
        for label in ("auto", "exact", "fulltext"):
            values = result[label]
            print(f"  {label:9} p50 {statistics.median(values):6.1f} ms   p99 {pct(values, 0.99):6.1f} ms")
        print(f"  recall@10 vs exact brute force: vector candidates {statistics.mean(result['vec_recall']):.3f}, "
              f"hybrid top 10 {statistics.mean(result['hyb_recall']):.3f}")

        ingest = await bench_ingest(dsn, stub_base, args.ingest_docs, rng)
        for label, (chunks, elapsed) in ingest.items():
            print(f"ingest ({label} embedding cache): {chunks:,} chunks in {elapsed:.1f}s = "
                  f"{chunks / elapsed:,.0f} chunks/s (save_document, 4 concurrent, stub embeddings)")

        print("quality (tests/data corpus, 40 queries):")
        for line in quality(dsn):
            print(line)
        await db.disconnect()
    finally:
        stub.terminate()
        stub.wait()
        if args.keep:
            print("kept:", database.dsn)
        else:
            database.close()


if __name__ == "__main__":
    os.environ.setdefault("GOCLAW_LOG_LEVEL", "warning")
    asyncio.run(main())
