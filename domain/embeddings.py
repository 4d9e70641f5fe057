"""Embeddings for memory search: which provider/model/dimension an agent uses, and a cache.

Configuration lives in `agents.memory_config`:
  * `embedding_provider` — the provider row's name; default: the agent's own `provider`.
    `""` (or `"embeddings": false`) switches embeddings off: memory is then full-text only.
  * `embedding_model` — default `text-embedding-3-small`.
  * `dimensions` — requested output size (1..16000, sent as `dimensions`); default: the model's.

Vectors are cached in `embedding_cache`, keyed by (provider, model, requested dimensions,
sha256(text)): re-indexing an edited document only embeds the chunks that changed, and a repeated
query costs one indexed lookup instead of a provider call. Query vectors are also kept in a small
per-process LRU, so the hot path of a repeated search never leaves the process.
Entries older than GOCLAW_EMBEDDING_CACHE_DAYS are pruned (`prune_cache`): every distinct search
text is cached, so without a bound the table would only grow; a pruned text is embedded again
the next time it is needed.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass

import httpx

import db
from gateway.errors import ApiError
from llm.errors import UpstreamError

log = logging.getLogger("goclaw.embeddings")

DEFAULT_MODEL = "text-embedding-3-small"
MAX_DIMENSIONS = 16000  # pgvector's limit for the vector type (HNSW indexes stop at 2,000)
QUERY_TIMEOUT_S = 8.0  # a search falls back to full-text rather than wait longer for a provider
INGEST_TIMEOUT_S = 120.0
LRU_SIZE = 1024

CACHE_GET_SQL = """
SELECT hash, embedding::text AS embedding FROM embedding_cache
WHERE provider = %(provider)s AND model = %(model)s AND dims_requested = %(dims)s AND hash = ANY(%(hashes)s)
"""
CACHE_PUT_SQL = """
INSERT INTO embedding_cache (provider, model, dims_requested, hash, embedding)
VALUES (%s, %s, %s, %s, %s::vector)
ON CONFLICT (provider, model, dims_requested, hash) DO UPDATE SET embedding = EXCLUDED.embedding, created_at = now()
"""
PRUNE_SQL = "DELETE FROM embedding_cache WHERE created_at < now() - make_interval(days => %s)"


async def prune_cache(days: int) -> int:
    """Drop cached vectors stored more than `days` days ago; returns how many went."""
    async with db.transaction() as conn:
        cursor = await conn.execute(PRUNE_SQL, (days,))
        return cursor.rowcount


class EmbeddingUnavailable(Exception):
    """No vectors this time (provider missing, failing or answering nonsense); callers degrade."""


@dataclass(frozen=True, slots=True)
class EmbeddingConfig:
    provider: str
    model: str
    dimensions: int | None  # requested size; None → the model's default

    @property
    def dims_key(self) -> int:
        return self.dimensions or 0


def config_for(agent: dict) -> EmbeddingConfig | None:
    """The agent's embedding settings, or None when memory is full-text only."""
    cfg = agent.get("memory_config") or {}
    if not isinstance(cfg, dict) or cfg.get("embeddings") is False:
        return None
    provider = cfg.get("embedding_provider")
    if provider is None:
        provider = agent.get("provider") or ""
    if not isinstance(provider, str) or not provider:
        return None
    model = cfg.get("embedding_model") or DEFAULT_MODEL
    dims = cfg.get("dimensions")
    if not (isinstance(dims, int) and not isinstance(dims, bool) and 1 <= dims <= MAX_DIMENSIONS):
        dims = None
    return EmbeddingConfig(provider, str(model)[:200], dims)


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def to_literal(vector: list[float]) -> str:
    """pgvector's text form (`[1,2,3]`); also valid JSON, so `from_literal` is json.loads."""
    return json.dumps(vector, separators=(",", ":"))


def from_literal(text: str) -> list[float]:
    return json.loads(text)


_lru: OrderedDict[tuple, list[float]] = OrderedDict()


def _lru_get(key: tuple) -> list[float] | None:
    vector = _lru.get(key)
    if vector is not None:
        _lru.move_to_end(key)
    return vector


def _lru_put(key: tuple, vector: list[float]) -> None:
    _lru[key] = vector
    _lru.move_to_end(key)
    while len(_lru) > LRU_SIZE:
        _lru.popitem(last=False)


async def _adapter(provider_name: str):
    """The provider's adapter through domain.providers (name → (adapter, provider_row))."""
    try:
        from domain import providers
    except ImportError as exc:
        raise EmbeddingUnavailable("providers are not available") from exc
    try:
        result = providers.get_adapter(provider_name)
        if inspect.isawaitable(result):
            result = await result
    except (ApiError, LookupError, ValueError) as exc:
        raise EmbeddingUnavailable(f"provider {provider_name!r} is not usable: {exc}") from exc
    adapter = result[0] if isinstance(result, tuple) else result
    if adapter is None or not hasattr(adapter, "embed"):
        raise EmbeddingUnavailable(f"provider {provider_name!r} is not usable")
    return adapter


def _check(vectors: list, count: int) -> list[list[float]]:
    if not isinstance(vectors, list) or len(vectors) != count:
        raise EmbeddingUnavailable("the provider returned the wrong number of vectors")
    dims = None
    clean: list[list[float]] = []
    for vector in vectors:
        if not isinstance(vector, list) or not 1 <= len(vector) <= MAX_DIMENSIONS:
            raise EmbeddingUnavailable("the provider returned a vector of unusable size")
        if dims is None:
            dims = len(vector)
        elif len(vector) != dims:
            raise EmbeddingUnavailable("the provider returned vectors of different sizes")
        try:
            values = [float(v) for v in vector]
        except (TypeError, ValueError):
            raise EmbeddingUnavailable("the provider returned non-numeric vectors") from None
        if not all(math.isfinite(v) for v in values):
            raise EmbeddingUnavailable("the provider returned non-finite values")
        clean.append(values)
    return clean


async def _call(config: EmbeddingConfig, texts: list[str], within_s: float) -> list[list[float]]:
    adapter = await _adapter(config.provider)
    try:
        async with asyncio.timeout(within_s):
            vectors = await adapter.embed(texts, config.model, dimensions=config.dimensions)
    except UpstreamError as exc:
        raise EmbeddingUnavailable(f"embedding call failed: {exc}") from exc
    except (TimeoutError, httpx.HTTPError) as exc:
        raise EmbeddingUnavailable(f"embedding call failed: {exc.__class__.__name__}") from exc
    return _check(vectors, len(texts))


async def embed(config: EmbeddingConfig, texts: list[str], *, within_s: float = INGEST_TIMEOUT_S) -> list[list[float]]:
    """Vectors for `texts`, in order; cached ones come from `embedding_cache`. Raises EmbeddingUnavailable."""
    if not texts:
        return []
    hashes = [text_hash(t) for t in texts]
    params = {"provider": config.provider, "model": config.model, "dims": config.dims_key}
    rows = await db.fetch_all(CACHE_GET_SQL, {**params, "hashes": list(set(hashes))})
    found = {r["hash"]: from_literal(r["embedding"]) for r in rows}
    missing = list(dict.fromkeys(h for h in hashes if h not in found))
    if missing:
        by_hash = dict(zip(hashes, texts, strict=True))
        fresh = await _call(config, [by_hash[h] for h in missing], within_s)
        if found and len(next(iter(found.values()))) != len(fresh[0]):
            # the model changed its output size under the same name: the cached vectors are stale
            missing = list(dict.fromkeys(hashes))
            fresh = await _call(config, [by_hash[h] for h in missing], within_s)
        rows = [(config.provider, config.model, config.dims_key, h, to_literal(v))
                for h, v in zip(missing, fresh, strict=True)]
        async with db.transaction() as conn, conn.cursor() as cur:
            await cur.executemany(CACHE_PUT_SQL, rows)
        found.update(zip(missing, fresh, strict=True))
    return [found[h] for h in hashes]


async def embed_query(config: EmbeddingConfig, text: str) -> list[float]:
    """One query vector: process LRU → cache table → provider (bounded by QUERY_TIMEOUT_S)."""
    key = (config.provider, config.model, config.dims_key, text_hash(text))
    vector = _lru_get(key)
    if vector is None:
        vector = (await embed(config, [text], within_s=QUERY_TIMEOUT_S))[0]
        _lru_put(key, vector)
    return vector


def forget_cached_queries() -> None:
    _lru.clear()
