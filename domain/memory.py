"""Agent memory: markdown documents, chunked and indexed for hybrid (full-text + vector) search.

Scope. A document belongs to an agent and to one user of it (`user_id`, personal) or to everyone
using the agent (`user_id = ''`, shared). A caller reads the shared documents plus their own; only
the agent's owner (or an admin) writes shared ones. Other users' personal documents are invisible
(404), by path, by listing and by search.

Chunking (`chunk_text`). At most CHUNK_MAX (1,000) characters per chunk. Text is split into
paragraphs (blank lines) and paragraphs into sentences (., !, ?, ;, : or CJK stops followed by
space, and line breaks, so markdown lists split per item); sentences longer than CHUNK_MAX are cut
at the last space. Sentences are packed greedily: a chunk closes at a paragraph break once it holds
CHUNK_MIN (500) characters, before a markdown heading once it holds 250, and otherwise when the next
sentence would not fit. A chunk that closes inside a paragraph hands its last sentences (at most
CHUNK_OVERLAP = 200 characters) to the next chunk, so no sentence loses its context; chunks that
close at a paragraph break do not overlap. Each chunk keeps its 1-based start/end lines.

Dimensions: one table per size. `memory_chunks` holds text, lines and the generated `tsv`; a chunk's
vector lives in `memory_vectors_<dims>` (typed `vector(dims)`, PLAIN storage, btree on
(agent, user, model), HNSW cosine index up to 2,000 dimensions), created on demand the first time a
vector of that size is written (`ensure_vector_table`). So agents on 384-, 768- and 1536-dimension
models coexist, and `memory_chunks.dims`/`emb_model` say which table holds a chunk's vector.
Measured before choosing (20,000 random 384-dimension vectors, exact scan of one 2,000-row scope): an
untyped `vector` column in the chunk table keeps pgvector's EXTERNAL storage, so every vector is a
TOAST fetch — 23.7 ms; the same column with MAIN storage, 7.7 ms, but pglz then compresses
structured vectors and pays decompression per row; a typed per-dimension table with PLAIN storage,
7.3 ms, with narrow rows that only vector scans read and a plain HNSW index on the column (a shared
untyped column needs partial expression indexes `((embedding::vector(D))) WHERE dims = D` and
literal casts in every query). Vectors from another model are never compared: vector queries
filter `emb_model`. Chunk rows stay inline and uncompressed (toast_tuple_target 8160, MAIN), which
made ranking the full-text matches 3-4x cheaper than de-TOASTing `tsv` for each.

Full-text configuration: `english` (stemming + stop words). On the shipped corpus (40 queries,
bench/memory_bench.py) it ranks the right document first for 40/40 queries in full-text mode,
against 38/40 for `simple` (no stemming: "tomatoes" misses "tomato"; no stop words: "how"/"the"
dilute the query); non-English words pass through the English parser unchanged, so Vietnamese
notes still match word for word.

Search. Two candidate lists, then one exact scoring pass over their union:
  * full-text: the best max(2 × limit, 20) chunks by `ts_rank` matching any query term, in the
    caller's scope. Terms found in more than 5% of all chunks (ANALYZE's most-common-elements
    statistics, `common_lexemes`) do not select candidates — they would make every query rank
    thousands of rows — unless all terms are that common (then all must match) or the rarer terms
    find too few chunks (then the query runs again with every term);
  * vector (when the agent has an embedding provider and the query embeds): the max(limit, 10)
    nearest chunks of the same model in the caller's scope. pgvector 0.6 cannot filter inside an
    HNSW scan, so the strategy depends on how much of the table the scope covers (`_vector_plan`,
    counts cached for 30 s): a scope of at most EXACT_MAX_ROWS vectors is searched exactly (btree
    on the scope, exact distances); a larger one over-fetches from HNSW —
    `k = wanted / selectivity × OVERFETCH` rows with `hnsw.ef_search = k` via `SET LOCAL` — keeps
    the rows in scope and orders them by their exact distance; when k would exceed 1,000 (pgvector's
    ef_search ceiling) or the over-fetch still returns fewer rows than wanted, the exact search
    runs instead. So a search always returns `limit` results when the scope has them.
Every candidate then gets both scores, computed exactly: text = the IDF-weighted share of the
query's terms the chunk contains (IDF over the candidates), three quarters of it, plus a quarter
from `ts_rank` relative to the best candidate's; vector = cosine similarity clamped to 0..1. The
fused score is their weighted mean (text 0.4, vector 0.6; `memory_config.text_weight` /
`vector_weight` override) — in full-text mode the text score alone. When the caller has personal
notes in scope, a shared chunk's score is divided by 1.2 — the reference's ×1.2 boost for personal
chunks, kept inside 0..1 — so the caller's own notes win against equally relevant shared ones.

Why score fusion, not reciprocal-rank fusion (also implemented: `memory_config.fusion = "rrf"`):
scores stay absolute, in 0..1 and comparable across queries (so `min_score` means something), and
evidence that carries no signal adds almost nothing. Measured on the shipped corpus (right document
first, of 40): with informative vectors score fusion 39, RRF 35; with uninformative vectors (the
test stub's hash vectors, or a model that does not know the language) score fusion 39, RRF 21 —
RRF gives a random vector ranking the same say as a perfect text match.
"""

from __future__ import annotations

import bisect
import logging
import math
import re
import time
from dataclasses import dataclass

from psycopg import sql

import db
from auth import Principal
from domain import activity, embeddings
from domain import agents as agents_domain
from domain.embeddings import EmbeddingConfig, EmbeddingUnavailable
from domain.paging import page
from gateway.errors import ApiError, bad_request, not_found

log = logging.getLogger("goclaw.memory")

CHUNK_MAX = 1000
CHUNK_MIN = 500
CHUNK_OVERLAP = 200
MAX_PATH = 500
MAX_CONTENT = 65_536  # characters per document (JSON-escaped, the largest still fits the 1 MB body limit)
MAX_QUERY = 2000
MAX_LIMIT = 50
DEFAULT_LIMIT = 10
TS_CONFIG = "english"  # must match the generated `tsv` column in sql/0005_memory_kg.sql
TEXT_WEIGHT = 0.4
VECTOR_WEIGHT = 0.6
PERSONAL_BOOST = 1.2
RRF_K = 60
MAX_INDEXED_DIMS = 2000  # HNSW's limit
EXACT_MAX_ROWS = 3000  # searched exactly up to here: ~17 ms exact vs ~9 ms HNSW at 10,000 rows (bench)
OVERFETCH = 2.0
MAX_EF_SEARCH = 1000  # pgvector's ceiling for hnsw.ef_search
STATS_TTL_S = 30.0

# Path: slash-separated segments of letters, digits, '.', '_', '-'; no segment starts with '.',
# and the last one has an extension.
PATH_PATTERN = r"^([A-Za-z0-9_-][A-Za-z0-9._-]*/)*[A-Za-z0-9_-][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)+$"
_PATH_RE = re.compile(PATH_PATTERN)

# --------------------------------------------------------------------------------------------
# Chunking

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?;:。！？；…])\s+|\n\s*")


@dataclass(frozen=True, slots=True)
class Chunk:
    index: int
    text: str
    start_line: int
    end_line: int


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _units(text: str) -> list[tuple[int, int, int]]:
    """(start, end, paragraph number) of every sentence; sentences over CHUNK_MAX are cut at a space."""
    units: list[tuple[int, int, int]] = []
    paragraph_start = 0
    breaks = [*_PARAGRAPH_BREAK.finditer(text), None]
    for number, match in enumerate(breaks):
        paragraph_end = match.start() if match else len(text)
        piece_start = paragraph_start
        for sentence in [*_SENTENCE_BREAK.finditer(text, paragraph_start, paragraph_end), None]:
            start, end = _trimmed(text, piece_start, sentence.start() if sentence else paragraph_end)
            while end - start > CHUNK_MAX:
                cut = text.rfind(" ", start + CHUNK_MAX // 2, start + CHUNK_MAX)
                cut = cut if cut > start else start + CHUNK_MAX
                units.append((start, cut, number))
                start, end = _trimmed(text, cut, end)
            if end > start:
                units.append((start, end, number))
            if sentence:
                piece_start = sentence.end()
        if match:
            paragraph_start = match.end()
    return units


def chunk_text(text: str) -> list[Chunk]:
    """Split a document into chunks (rules in the module docstring)."""
    units = _units(text)
    line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
    chunks: list[Chunk] = []
    current: list[tuple[int, int, int]] = []

    def close() -> None:
        start, end = current[0][0], current[-1][1]
        chunks.append(
            Chunk(len(chunks), text[start:end], bisect.bisect_right(line_starts, start),
                  bisect.bisect_right(line_starts, end - 1))
        )

    for unit in units:
        if current:
            size = current[-1][1] - current[0][0]
            new_paragraph = unit[2] != current[-1][2]
            heading = new_paragraph and text.startswith("#", unit[0])
            if new_paragraph and (size >= CHUNK_MIN or (heading and size >= CHUNK_MIN // 2)):
                close()
                current = []
            elif unit[1] - current[0][0] > CHUNK_MAX:
                close()
                carry: list[tuple[int, int, int]] = []
                if not new_paragraph:
                    for previous in reversed(current):
                        if current[-1][1] - previous[0] > CHUNK_OVERLAP or unit[1] - previous[0] > CHUNK_MAX:
                            break
                        carry.insert(0, previous)
                current = carry
        current.append(unit)
    if current:
        close()
    return chunks


# --------------------------------------------------------------------------------------------
# SQL

DOC_COLUMNS = """
d.id, d.agent_id, d.user_id, d.path, d.hash, d.size, d.chunk_count, d.embedded_count,
d.embedding_model, d.created_at, d.updated_at
"""
FIND_DOC_SQL = f"""
SELECT {DOC_COLUMNS} FROM memory_documents d
WHERE d.agent_id = %(agent)s AND d.path = %(path)s AND d.user_id = ANY(%(users)s)
ORDER BY (d.user_id = '') LIMIT 1
"""
GET_DOC_SQL = f"""
SELECT {DOC_COLUMNS}, d.content FROM memory_documents d
WHERE d.agent_id = %(agent)s AND d.path = %(path)s AND d.user_id = ANY(%(users)s)
ORDER BY (d.user_id = '') LIMIT 1
"""
UPSERT_DOC_SQL = f"""
INSERT INTO memory_documents AS d
    (agent_id, user_id, path, content, hash, size, chunk_count, embedded_count, embedding_model)
VALUES (%(agent)s, %(user)s, %(path)s, %(content)s, %(hash)s, %(size)s, %(chunks)s, %(embedded)s, %(model)s)
ON CONFLICT (agent_id, user_id, path) DO UPDATE SET
    content = EXCLUDED.content, hash = EXCLUDED.hash, size = EXCLUDED.size,
    chunk_count = EXCLUDED.chunk_count, embedded_count = EXCLUDED.embedded_count,
    embedding_model = EXCLUDED.embedding_model, updated_at = now()
RETURNING {DOC_COLUMNS}, (xmax = 0) AS created
"""
DELETE_CHUNKS_SQL = "DELETE FROM memory_chunks WHERE document_id = %s"
INSERT_CHUNK_SQL = """
INSERT INTO memory_chunks (document_id, agent_id, user_id, path, ord, start_line, end_line, text, hash, dims, emb_model)
VALUES (%(doc)s, %(agent)s, %(user)s, %(path)s, %(ord)s, %(start)s, %(end)s, %(text)s, %(hash)s, NULL, NULL)
"""
# `{vectors}` (table) and `{dims}` are filled by _with_dims: identifiers and type modifiers cannot be
# parameters.
INSERT_CHUNK_VECTOR_SQL = """
WITH c AS (
    INSERT INTO memory_chunks
        (document_id, agent_id, user_id, path, ord, start_line, end_line, text, hash, dims, emb_model)
    VALUES (%(doc)s, %(agent)s, %(user)s, %(path)s, %(ord)s, %(start)s, %(end)s, %(text)s, %(hash)s, {dims}, %(model)s)
    RETURNING id
)
INSERT INTO {vectors} (chunk_id, agent_id, user_id, emb_model, embedding)
SELECT c.id, %(agent)s, %(user)s, %(model)s, %(vec)s::vector({dims}) FROM c
"""
DELETE_DOC_SQL = """
DELETE FROM memory_documents WHERE agent_id = %(agent)s AND user_id = %(user)s AND path = %(path)s
RETURNING id
"""
CHUNKS_SQL = """
SELECT id, ord AS index, start_line, end_line, text, hash, dims, emb_model
FROM memory_chunks WHERE document_id = %s ORDER BY ord
"""
SCOPE_DOCS_SQL = """
SELECT id, user_id, path, content FROM memory_documents
WHERE agent_id = %(agent)s AND (%(users)s::text[] IS NULL OR user_id = ANY(%(users)s))
ORDER BY path, user_id
"""
LIST_DOCS_SQL = f"""
SELECT {DOC_COLUMNS} FROM memory_documents d
WHERE (%(agent)s::uuid IS NULL OR d.agent_id = %(agent)s)
  AND (%(user)s::text IS NULL OR d.user_id = %(user)s)
  AND (%(scope)s::text IS NULL OR (d.user_id = '') = (%(scope)s = 'shared'))
  AND (%(prefix)s::text IS NULL OR starts_with(d.path, %(prefix)s))
  AND (%(admin)s OR (
        (d.user_id = '' OR d.user_id = %(me)s)
        AND EXISTS (SELECT 1 FROM agents a WHERE a.id = d.agent_id AND (a.owner_id = %(me)s
                    OR EXISTS (SELECT 1 FROM agent_shares s WHERE s.agent_id = a.id AND s.user_id = %(me)s)))))
ORDER BY d.updated_at DESC, d.id DESC
LIMIT %(limit)s OFFSET %(offset)s
"""
VECTOR_TABLES_SQL = r"SELECT relname FROM pg_class WHERE relkind = 'r' AND relname ~ '^memory_vectors_[0-9]+$'"
TABLE_LOCK_SQL = "SELECT pg_advisory_xact_lock(%s, %s)"
TABLE_LOCK_KEY = 0x6D656D  # with the dimension as the second key
CREATE_VECTOR_TABLE_SQL = """
CREATE TABLE IF NOT EXISTS {vectors} (
    chunk_id  bigint PRIMARY KEY REFERENCES memory_chunks (id) ON DELETE CASCADE,
    agent_id  uuid         NOT NULL,
    user_id   varchar(255) NOT NULL,
    emb_model varchar(200) NOT NULL,
    embedding vector({dims}) NOT NULL
)"""
CREATE_SCOPE_INDEX_SQL = "CREATE INDEX IF NOT EXISTS {scope_index} ON {vectors} (agent_id, user_id, emb_model)"
# PLAIN: vectors stay in the row, uncompressed (pgvector's default, EXTERNAL, moves them to TOAST)
PLAIN_STORAGE_SQL = "ALTER TABLE {vectors} ALTER COLUMN embedding SET STORAGE PLAIN"
CREATE_HNSW_SQL = "CREATE INDEX IF NOT EXISTS {hnsw_index} ON {vectors} USING hnsw (embedding vector_cosine_ops)"
SCOPE_COUNT_SQL = """
SELECT count(*) AS n FROM {vectors}
WHERE agent_id = %(agent)s AND user_id = ANY(%(users)s) AND emb_model = %(model)s
"""
TABLE_ROWS_SQL = "SELECT greatest(c.reltuples, 0)::bigint AS n FROM pg_class c WHERE c.relname = %s"
TABLE_COUNT_SQL = "SELECT count(*) AS n FROM {vectors}"
EF_SEARCH_SQL = "SELECT set_config('hnsw.ef_search', %s, true)"
COMMON_LEXEMES_SQL = """
SELECT most_common_elems::text::text[] AS lexemes, most_common_elem_freqs AS freqs
FROM pg_stats WHERE tablename = 'memory_chunks' AND attname = 'tsv'
"""

# The query's terms (`lex`) and the full-text candidate query (`tq`): any of the query's terms that
# is not among the table's most common lexemes (`common`, from pg_stats) may match; when every term
# is common, all of them must. Lexemes are quoted for tsquery (quotes and backslashes doubled).
_QUOTED = r"'''' || replace(replace(l, '\', '\\'), '''', '''''') || ''''"
_TERMS = f"""
q0 AS (SELECT tsvector_to_array(to_tsvector('{TS_CONFIG}', %(q)s)) AS lex),
q AS (
    SELECT q0.lex, coalesce(
        (SELECT string_agg({_QUOTED}, ' | ') FROM unnest(q0.lex) AS l WHERE NOT l = ANY(%(common)s)),
        (SELECT string_agg({_QUOTED}, ' & ') FROM unnest(q0.lex) AS l),
        '')::tsquery AS tq
    FROM q0
),
fts AS (
    SELECT c.id FROM memory_chunks c, q
    WHERE c.agent_id = %(agent)s AND c.user_id = ANY(%(users)s) AND c.tsv @@ q.tq
    ORDER BY ts_rank(c.tsv, q.tq) DESC, c.id
    LIMIT %(n)s
)"""
_SCORE_SELECT = """
SELECT c.id, c.document_id, c.path, c.user_id, c.ord, c.start_line, c.end_line, c.text,
       ts_rank(c.tsv, q.tq) AS rank, q.lex,
       ARRAY(SELECT l FROM unnest(q.lex) AS l WHERE length(ts_delete(c.tsv, l)) < length(c.tsv)) AS matched,
       {similarity} AS similarity,
       (SELECT count(*) FROM fts) AS fts_count,
       {ann_count} AS ann_count
FROM cand JOIN memory_chunks c USING (id) CROSS JOIN q
"""
FULLTEXT_SEARCH_SQL = (
    "WITH " + _TERMS + ", cand AS (SELECT id FROM fts)"
    + _SCORE_SELECT.format(similarity="NULL::float8", ann_count="0")
)
# HNSW over-fetch: the k nearest of the whole dimension table, then the caller's scope.
_HNSW_CTE = """
ann AS (
    SELECT a.chunk_id AS id FROM (
        SELECT chunk_id, agent_id, user_id, emb_model, embedding <=> %(vec)s::vector({dims}) AS distance
        FROM {vectors}
        ORDER BY embedding <=> %(vec)s::vector({dims})
        LIMIT %(k)s
    ) a
    WHERE a.agent_id = %(agent)s AND a.user_id = ANY(%(users)s) AND a.emb_model = %(model)s
    ORDER BY a.distance, a.chunk_id
    LIMIT %(nv)s
)"""
# Exact: every vector in the scope (btree), exact distances. `+ 0` keeps the planner from using the
# HNSW index here, which would filter after the index scan and could return fewer than n rows.
_EXACT_CTE = """
ann AS (
    SELECT chunk_id AS id FROM {vectors}
    WHERE agent_id = %(agent)s AND user_id = ANY(%(users)s) AND emb_model = %(model)s
    ORDER BY (embedding <=> %(vec)s::vector({dims})) + 0, chunk_id
    LIMIT %(nv)s
)"""
_HYBRID_TAIL = (
    ", cand AS (SELECT id FROM fts UNION SELECT id FROM ann)"
    + _SCORE_SELECT.format(
        similarity="1 - (SELECT v.embedding <=> %(vec)s::vector({dims}) FROM {vectors} v"
        " WHERE v.chunk_id = c.id AND v.emb_model = %(model)s)",
        ann_count="(SELECT count(*) FROM ann)",
    )
)
HYBRID_HNSW_SQL = "WITH " + _TERMS + "," + _HNSW_CTE + _HYBRID_TAIL
HYBRID_EXACT_SQL = "WITH " + _TERMS + "," + _EXACT_CTE + _HYBRID_TAIL


def vector_table(dims: int) -> str:
    if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= embeddings.MAX_DIMENSIONS:
        raise ValueError(f"bad vector dimension {dims!r}")
    return f"memory_vectors_{dims}"


def _with_dims(template: str, dims: int) -> sql.Composed:
    """`template` with `{dims}` as an integer literal and `{vectors}`, `{scope_index}`, `{hnsw_index}`
    as identifiers; psycopg.sql keeps the `%(name)s` placeholders for the parameters."""
    table = vector_table(dims)
    escaped = template.replace("{", "{{").replace("}", "}}")
    for name in ("dims", "vectors", "scope_index", "hnsw_index"):
        escaped = escaped.replace("{{" + name + "}}", "{" + name + "}")
    return sql.SQL(escaped).format(
        dims=sql.Literal(dims), vectors=sql.Identifier(table),
        scope_index=sql.Identifier(f"{table}_scope_idx"), hnsw_index=sql.Identifier(f"{table}_hnsw_idx"),
    )


# --------------------------------------------------------------------------------------------
# Scope and validation


def validate_path(path: str) -> str:
    if not isinstance(path, str) or not path or len(path) > MAX_PATH or not _PATH_RE.match(path):
        raise bad_request(
            "path must be a relative file path of letters, digits, '.', '_', '-' and '/', "
            f"ending in an extension, at most {MAX_PATH} characters"
        )
    return path


def _visible_users(user: str) -> list[str]:
    """Users whose documents a caller acting as `user` reads: the shared scope plus their own."""
    return [user, ""] if user else [""]


def _scope_user(principal: Principal, requested: str | None = None) -> str:
    """Whose personal memory a call acts on: the caller's; admins may name another user."""
    if requested is not None and principal.is_admin:
        return requested
    return principal.user_id


def can_write_shared(principal: Principal, agent: dict) -> bool:
    return principal.is_admin or bool(principal.user_id and principal.user_id == agent.get("owner_id"))


def _target_user(principal: Principal, agent: dict, shared: bool) -> str:
    """The exact scope a write or delete addresses; the shared scope needs the owner or an admin."""
    user = "" if shared else principal.user_id
    if not user and not can_write_shared(principal, agent):
        raise ApiError(403, "error.owner_only", "write shared memory")
    return user


def _ms(value) -> int:
    return int(value.timestamp() * 1000)


def _document_out(row: dict) -> dict:
    return {
        "id": str(row["id"]),
        "agent_id": str(row["agent_id"]),
        "user_id": row["user_id"],
        "scope": "personal" if row["user_id"] else "shared",
        "path": row["path"],
        "hash": row["hash"],
        "size": row["size"],
        "chunks": row["chunk_count"],
        "embedded_chunks": row["embedded_count"],
        "embedding_model": row["embedding_model"] or None,
        "created_at": _ms(row["created_at"]),
        "updated_at": _ms(row["updated_at"]),
    }


# --------------------------------------------------------------------------------------------
# Vector tables and statistics (per process, short-lived)

_vector_tables: set[int] = set()
_stats: dict[tuple, tuple[float, int]] = {}
_common: tuple[float, list[str]] = (0.0, [])
PLAIN_MAX_DIMS = 1800  # a PLAIN row must fit one 8 KB page; larger vectors keep pgvector's EXTERNAL
COMMON_LEXEME_FREQ = 0.05  # terms in more than 5% of all chunks do not select full-text candidates
COMMON_TTL_S = 300.0


async def ensure_vector_table(dims: int, *, hnsw: bool = True) -> str:
    """Create `memory_vectors_<dims>` (typed column, PLAIN storage, scope btree, HNSW index up to
    2,000 dimensions) if missing; returns its name. Safe when several processes race."""
    table = vector_table(dims)
    if dims in _vector_tables:
        return table
    for row in await db.fetch_all(VECTOR_TABLES_SQL):
        _vector_tables.add(int(row["relname"].rsplit("_", 1)[-1]))
    if dims not in _vector_tables:
        async with db.transaction() as conn:
            await conn.execute(TABLE_LOCK_SQL, (TABLE_LOCK_KEY, dims))
            await conn.execute(_with_dims(CREATE_VECTOR_TABLE_SQL, dims))
            if dims <= PLAIN_MAX_DIMS:
                await conn.execute(_with_dims(PLAIN_STORAGE_SQL, dims))
            await conn.execute(_with_dims(CREATE_SCOPE_INDEX_SQL, dims))
            if hnsw and dims <= MAX_INDEXED_DIMS:
                await conn.execute(_with_dims(CREATE_HNSW_SQL, dims))
        log.info("created vector table %s", table)
        _vector_tables.add(dims)
    return table


async def _cached(key: tuple, query, params) -> int:
    now = time.monotonic()
    hit = _stats.get(key)
    if hit and hit[0] > now:
        return hit[1]
    row = await db.fetch_one(query, params)
    value = int(row["n"]) if row else 0
    _stats[key] = (now + STATS_TTL_S, value)
    return value


def _forget_stats(agent_id) -> None:
    for key in [k for k in _stats if k[0] == "scope" and k[1] == str(agent_id)]:
        _stats.pop(key, None)


async def _table_rows(dims: int) -> int:
    total = await _cached(("reltuples", dims), TABLE_ROWS_SQL, (vector_table(dims),))
    if total <= 0:  # never analysed yet
        total = await _cached(("count", dims), _with_dims(TABLE_COUNT_SQL, dims), None)
    return total


async def common_lexemes() -> list[str]:
    """Lexemes in more than COMMON_LEXEME_FREQ of all chunks (ANALYZE's statistics; cached)."""
    global _common
    now = time.monotonic()
    if _common[0] > now:
        return _common[1]
    row = await db.fetch_one(COMMON_LEXEMES_SQL)
    common: list[str] = []
    if row and row["lexemes"] and row["freqs"]:
        common = [lex for lex, freq in zip(row["lexemes"], row["freqs"], strict=False) if freq > COMMON_LEXEME_FREQ]
    _common = (now + COMMON_TTL_S, common)
    return common


@dataclass(frozen=True, slots=True)
class VectorPlan:
    strategy: str  # "exact" | "hnsw" | "none"
    k: int = 0  # HNSW rows to fetch (and ef_search)
    scope_rows: int = 0


async def _vector_plan(agent_id, users: list[str], dims: int, model: str, wanted: int) -> VectorPlan:
    if dims not in _vector_tables:
        for row in await db.fetch_all(VECTOR_TABLES_SQL):
            _vector_tables.add(int(row["relname"].rsplit("_", 1)[-1]))
        if dims not in _vector_tables:  # nothing of this size was ever stored
            return VectorPlan("none")
    scope_rows = await _cached(
        ("scope", str(agent_id), tuple(users), dims, model), _with_dims(SCOPE_COUNT_SQL, dims),
        {"agent": agent_id, "users": users, "model": model},
    )
    if scope_rows == 0:
        return VectorPlan("none")
    if scope_rows <= EXACT_MAX_ROWS or dims > MAX_INDEXED_DIMS:
        return VectorPlan("exact", scope_rows=scope_rows)
    total = max(await _table_rows(dims), scope_rows)
    k = math.ceil(wanted * total / scope_rows * OVERFETCH)
    if k > MAX_EF_SEARCH:
        return VectorPlan("exact", scope_rows=scope_rows)
    return VectorPlan("hnsw", k=max(k, wanted), scope_rows=scope_rows)


# --------------------------------------------------------------------------------------------
# Writing


async def _prepare(content: str, config: EmbeddingConfig | None) -> tuple[list[Chunk], list | None]:
    """Chunks and (when possible) their vectors; an embedding failure leaves the vectors None."""
    chunks = chunk_text(content)
    if config is None or not chunks:
        return chunks, None
    try:
        vectors = await embeddings.embed(config, [c.text for c in chunks])
    except EmbeddingUnavailable as exc:
        log.warning("memory chunks stored without vectors: %s", exc)
        return chunks, None
    await ensure_vector_table(len(vectors[0]))
    return chunks, vectors


async def _store(conn, agent_id, user: str, path: str, content: str, chunks: list[Chunk],
                 vectors: list | None, config: EmbeddingConfig | None) -> dict:
    model = config.model if (config and vectors) else ""
    row = await db.fetch_one(
        UPSERT_DOC_SQL,
        {"agent": agent_id, "user": user, "path": path, "content": content,
         "hash": embeddings.text_hash(content), "size": len(content), "chunks": len(chunks),
         "embedded": len(chunks) if vectors else 0, "model": model},
        conn=conn,
    )
    await conn.execute(DELETE_CHUNKS_SQL, (row["id"],))
    if chunks:
        query = _with_dims(INSERT_CHUNK_VECTOR_SQL, len(vectors[0])) if vectors else INSERT_CHUNK_SQL
        async with conn.cursor() as cur:
            await cur.executemany(query, [
                {"doc": row["id"], "agent": agent_id, "user": user, "path": path, "ord": c.index,
                 "start": c.start_line, "end": c.end_line, "text": c.text, "hash": embeddings.text_hash(c.text),
                 "model": model, "vec": embeddings.to_literal(vectors[i]) if vectors else None}
                for i, c in enumerate(chunks)
            ])
    return row


async def save_document(principal: Principal, agent: dict, path: str, content: str, shared: bool = False) -> dict:
    """Create or replace one memory document and re-index it (skipped when nothing changed).

    `agent` is the row from `domain.agents.resolve()`. Personal to the caller unless `shared`
    (owner or admin only). Returns the document summary plus `changed`, `created` and `mode`."""
    path = validate_path(path)
    if not isinstance(content, str) or len(content) > MAX_CONTENT:
        raise bad_request(f"content must be a string of at most {MAX_CONTENT} characters")
    user = _target_user(principal, agent, shared)
    config = embeddings.config_for(agent)
    existing = await db.fetch_one(FIND_DOC_SQL, {"agent": agent["id"], "path": path, "users": [user]})
    if (
        existing is not None
        and existing["hash"] == embeddings.text_hash(content)
        and (config is None or (existing["embedding_model"] == config.model
                                and existing["embedded_count"] == existing["chunk_count"]))
    ):
        return {**_document_out(existing), "changed": False, "created": False,
                "mode": "hybrid" if existing["embedding_model"] else "fulltext"}
    chunks, vectors = await _prepare(content, config)
    async with db.transaction() as conn:
        row = await _store(conn, agent["id"], user, path, content, chunks, vectors, config)
        await activity.record(
            conn, principal, "memory.document_saved", "memory_document", str(row["id"]),
            {"agent_id": str(agent["id"]), "path": path, "scope": "personal" if user else "shared",
             "chunks": len(chunks)},
        )
    _forget_stats(agent["id"])
    return {**_document_out(row), "changed": True, "created": bool(row["created"]),
            "mode": "hybrid" if vectors else "fulltext"}


async def get_document(principal: Principal, agent: dict, path: str, shared: bool = False) -> dict:
    """The caller's personal copy of `path`, else the shared one (only the shared one if `shared`)."""
    path = validate_path(path)
    users = [""] if shared else _visible_users(principal.user_id)
    row = await db.fetch_one(GET_DOC_SQL, {"agent": agent["id"], "path": path, "users": users})
    if row is None:
        raise not_found("memory document", path)
    return {**_document_out(row), "content": row["content"]}


async def list_chunks(principal: Principal, agent: dict, path: str, shared: bool = False) -> dict:
    path = validate_path(path)
    users = [""] if shared else _visible_users(principal.user_id)
    doc = await db.fetch_one(FIND_DOC_SQL, {"agent": agent["id"], "path": path, "users": users})
    if doc is None:
        raise not_found("memory document", path)
    rows = await db.fetch_all(CHUNKS_SQL, (doc["id"],))
    chunks = [
        {"id": r["id"], "index": r["index"], "start_line": r["start_line"], "end_line": r["end_line"],
         "text": r["text"], "hash": r["hash"], "dims": r["dims"], "embedding_model": r["emb_model"]}
        for r in rows
    ]
    return {"document": _document_out(doc), "chunks": chunks, "count": len(chunks)}


async def delete_document(principal: Principal, agent: dict, path: str, shared: bool = False) -> dict:
    """Delete exactly one scope's copy: the caller's personal one, or the shared one if `shared`."""
    path = validate_path(path)
    user = _target_user(principal, agent, shared)
    async with db.transaction() as conn:
        row = await db.fetch_one(DELETE_DOC_SQL, {"agent": agent["id"], "user": user, "path": path}, conn=conn)
        if row is None:
            raise not_found("memory document", path)
        await activity.record(
            conn, principal, "memory.document_deleted", "memory_document", str(row["id"]),
            {"agent_id": str(agent["id"]), "path": path, "scope": "personal" if user else "shared"},
        )
    _forget_stats(agent["id"])
    return {"status": "deleted", "id": str(row["id"]), "path": path}


async def reindex(principal: Principal, agent: dict) -> dict:
    """Re-chunk and re-embed the agent's documents: all of them for its owner or an admin, otherwise
    the caller's own and the shared ones. Unchanged chunks come from the embedding cache."""
    everyone = can_write_shared(principal, agent)
    users = None if everyone else _visible_users(principal.user_id)
    docs = await db.fetch_all(SCOPE_DOCS_SQL, {"agent": agent["id"], "users": users})
    config = embeddings.config_for(agent)
    totals = {"documents": 0, "chunks": 0, "embedded_chunks": 0}
    failed = False
    for doc in docs:
        chunks, vectors = await _prepare(doc["content"], None if failed else config)
        failed = failed or (config is not None and bool(chunks) and vectors is None)
        async with db.transaction() as conn:
            await _store(conn, agent["id"], doc["user_id"], doc["path"], doc["content"], chunks, vectors, config)
        totals["documents"] += 1
        totals["chunks"] += len(chunks)
        totals["embedded_chunks"] += len(chunks) if vectors else 0
    async with db.transaction() as conn:
        await activity.record(conn, principal, "memory.reindexed", "agent", str(agent["id"]), dict(totals))
    _forget_stats(agent["id"])
    mode = "hybrid" if config is not None and not failed else "fulltext"
    return {**totals, "mode": mode}


# --------------------------------------------------------------------------------------------
# Reading


async def list_documents(
    principal: Principal,
    agent_ref: str | None = None,
    user: str | None = None,
    scope: str | None = None,
    path_prefix: str | None = None,
    limit: int | None = None,
    offset: int | None = None,
) -> list[dict]:
    """Newest first. Admins see every document; others the shared and their own documents of the
    agents they can see. `user` narrows to one user's documents (for non-admins only their own)."""
    limit, offset = page(limit, offset, max_limit=200)
    agent_id = None
    if agent_ref:
        agent_id = (await agents_domain.resolve(principal, agent_ref))["id"]
    if scope not in (None, "shared", "personal"):
        raise bad_request("scope must be 'shared' or 'personal'")
    rows = await db.fetch_all(
        LIST_DOCS_SQL,
        {"agent": agent_id, "user": user, "scope": scope, "prefix": path_prefix or None,
         "admin": principal.is_admin, "me": principal.user_id, "limit": limit, "offset": offset},
    )
    return [_document_out(r) for r in rows]


def _weights(agent: dict) -> tuple[float, float]:
    cfg = agent.get("memory_config") or {}
    text_w, vector_w = cfg.get("text_weight", TEXT_WEIGHT), cfg.get("vector_weight", VECTOR_WEIGHT)
    if not all(isinstance(w, int | float) and not isinstance(w, bool) and 0 <= w <= 1 for w in (text_w, vector_w)):
        return TEXT_WEIGHT, VECTOR_WEIGHT
    if text_w + vector_w == 0:
        return TEXT_WEIGHT, VECTOR_WEIGHT
    return float(text_w), float(vector_w)


def _text_scores(rows: list[dict]) -> dict[int, float]:
    """Text relevance in 0..1: the IDF-weighted share of the query's terms a chunk contains (IDF
    over the candidate set: a term most candidates share says little), three quarters of the
    score, plus a quarter from ts_rank relative to the best candidate's (term frequency)."""
    best = max((r["rank"] for r in rows), default=0.0) or 1.0
    lexemes = rows[0]["lex"] if rows else []
    n = len(rows)
    df = {lex: 0 for lex in lexemes}
    for r in rows:
        for lex in r["matched"]:
            df[lex] = df.get(lex, 0) + 1
    weight = {lex: math.log(1 + (n + 1) / (count + 0.5)) for lex, count in df.items()}
    total = sum(weight[lex] for lex in lexemes) or 1.0
    scores = {}
    for r in rows:
        coverage = sum(weight.get(lex, 0.0) for lex in r["matched"]) / total
        scores[r["id"]] = coverage * (0.75 + 0.25 * min(1.0, r["rank"] / best)) if coverage > 0 else 0.0
    return scores


def fuse(rows: list[dict], method: str, hybrid: bool, weights: tuple[float, float]) -> list[tuple[float, dict]]:
    """(score, row) best first; scores in 0..1 before the personal boost is applied by the caller."""
    text = _text_scores(rows)
    text_w, vector_w = weights
    if method == "rrf":
        by_text = sorted((r for r in rows if text[r["id"]] > 0), key=lambda r: (-text[r["id"]], r["id"]))
        text_rank = {r["id"]: i for i, r in enumerate(by_text, 1)}
        by_vec = sorted((r for r in rows if r["similarity"] is not None), key=lambda r: (-r["similarity"], r["id"]))
        vec_rank = {r["id"]: i for i, r in enumerate(by_vec, 1)}
        text_w, vector_w = (text_w, vector_w) if hybrid else (1.0, 0.0)
        top = (text_w + vector_w) / (RRF_K + 1)
        scored = []
        for r in rows:
            s = text_w / (RRF_K + text_rank[r["id"]]) if r["id"] in text_rank else 0.0
            s += vector_w / (RRF_K + vec_rank[r["id"]]) if r["id"] in vec_rank else 0.0
            scored.append((s / top, r))
        return scored
    scored = []
    for r in rows:
        if hybrid:
            similarity = max(0.0, min(1.0, r["similarity"] or 0.0))
            s = (text_w * text[r["id"]] + vector_w * similarity) / (text_w + vector_w)
        else:
            s = text[r["id"]]
        scored.append((s, r))
    return scored


async def _run_search(template: str, params: dict, dims: int | None, ef_search: int | None) -> list[dict]:
    query = _with_dims(template, dims) if dims else template
    if ef_search is None:
        return await db.fetch_all(query, params)
    async with db.transaction() as conn:
        async with conn.pipeline():  # SET LOCAL and the search in one round trip
            await conn.execute(EF_SEARCH_SQL, (str(ef_search),))
            cursor = await conn.execute(query, params)
        return await cursor.fetchall()


async def search_rows(agent: dict, users: list[str], query: str, limit: int,
                      vector: list[float] | None, model: str | None, *, force: str | None = None) -> tuple[list, str]:
    """Candidates with both scores: the best max(2 × limit, 20) full-text matches and the
    max(limit, 10) nearest vectors. Returns (rows, strategy); `force` ("exact"/"hnsw") is for benches."""
    wanted, nearest = max(2 * limit, 20), max(limit, 10)
    common = await common_lexemes()
    params = {"q": query, "agent": agent["id"], "users": users, "n": wanted, "nv": nearest, "common": common}

    async def run(template: str, dims: int | None = None, ef_search: int | None = None, **extra) -> list[dict]:
        rows = await _run_search(template, {**params, **extra}, dims, ef_search)
        # the rarer terms found too little: let the common ones select candidates as well
        fts_count = rows[0]["fts_count"] if rows else 0
        if common and fts_count < wanted and (not rows or set(rows[0]["lex"]) & set(common)):
            rows = await _run_search(template, {**params, **extra, "common": []}, dims, ef_search)
        return rows

    if vector is None:
        return await run(FULLTEXT_SEARCH_SQL), "fulltext"
    dims = len(vector)
    params.update(vec=embeddings.to_literal(vector), model=model)
    plan = await _vector_plan(agent["id"], users, dims, model, nearest)
    strategy = force or plan.strategy
    if strategy == "none":
        return await run(FULLTEXT_SEARCH_SQL), "fulltext"
    if strategy == "hnsw":
        k = plan.k or min(MAX_EF_SEARCH, nearest * 20)
        rows = await run(HYBRID_HNSW_SQL, dims, max(k, 40), k=k)
        found = rows[0]["ann_count"] if rows else 0
        if found >= min(nearest, plan.scope_rows) or force:
            return rows, "hnsw"
    return await run(HYBRID_EXACT_SQL, dims), "exact"


def _validate_query(query: str, limit: int | None) -> tuple[str, int]:
    if not isinstance(query, str) or not query.strip():
        raise ApiError(400, "error.required", "query")
    if len(query) > MAX_QUERY:
        raise bad_request(f"query must be at most {MAX_QUERY} characters")
    limit = DEFAULT_LIMIT if limit is None else limit
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise bad_request(f"limit must be between 1 and {MAX_LIMIT}")
    return query.strip(), limit


async def search(principal: Principal, agent: dict, query: str, limit: int | None = DEFAULT_LIMIT, *,
                 min_score: float = 0.0, user_id: str | None = None) -> dict:
    """Hybrid search over the caller's scope (their personal documents + the shared ones).

    Returns `{"results": [{path, start_line, end_line, score, snippet, source, scope, document_id,
    chunk_index}], "count", "mode": "hybrid"|"fulltext"}`; scores in 0..1, best first."""
    query, limit = _validate_query(query, limit)
    if not 0 <= min_score <= 1:
        raise bad_request("min_score must be between 0 and 1")
    users = _visible_users(_scope_user(principal, user_id))
    config = embeddings.config_for(agent)
    vector = None
    if config is not None:
        try:
            vector = await embeddings.embed_query(config, query)
        except EmbeddingUnavailable as exc:
            log.warning("memory search falls back to full-text: %s", exc)
    return await ranked(agent, users, query, limit, vector, config.model if config else None, min_score=min_score)


async def ranked(agent: dict, users: list[str], query: str, limit: int, vector: list[float] | None,
                 model: str | None, *, min_score: float = 0.0, force: str | None = None) -> dict:
    """The search after the query is embedded (or not): candidates, fusion, scope weighting."""
    rows, strategy = await search_rows(agent, users, query, limit, vector, model, force=force)
    hybrid = strategy != "fulltext"
    method = (agent.get("memory_config") or {}).get("fusion", "score")
    scored = fuse(rows, "rrf" if method == "rrf" else "score", hybrid, _weights(agent))
    # the caller's own notes outrank shared ones: with a personal scope in play, shared chunks count
    # 1/1.2 of their relevance (the reference's ×1.2 personal boost, kept inside 0..1)
    shared_factor = 1 / PERSONAL_BOOST if len(users) > 1 else 1.0
    results = []
    for score, row in scored:
        boosted = score if row["user_id"] else score * shared_factor
        if boosted <= 0 or boosted < min_score:
            continue
        results.append((boosted, score, row))
    results.sort(key=lambda item: (-item[0], -item[1], not item[2]["user_id"], item[2]["path"], item[2]["ord"]))
    out = [
        {"path": row["path"], "start_line": row["start_line"], "end_line": row["end_line"],
         "score": round(boosted, 6), "snippet": row["text"], "source": "memory",
         "scope": "personal" if row["user_id"] else "shared",
         "document_id": str(row["document_id"]), "chunk_index": row["ord"]}
        for boosted, _, row in results[:limit]
    ]
    return {"results": out, "count": len(out), "mode": "hybrid" if hybrid else "fulltext"}
