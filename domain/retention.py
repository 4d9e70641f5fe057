"""Housekeeping that keeps stores bounded: run at startup, then every RETENTION_INTERVAL_S.

Today that is the embedding cache (GOCLAW_EMBEDDING_CACHE_DAYS; 0 keeps it forever). Every
process runs the sweep; deleting what is already gone costs nothing, so no coordination."""

from __future__ import annotations

import asyncio
import logging

from domain import embeddings
from gateway import state

log = logging.getLogger("goclaw.retention")

RETENTION_INTERVAL_S = 3600.0


async def sweep() -> None:
    days = state.settings.embedding_cache_days
    if days > 0:
        dropped = await embeddings.prune_cache(days)
        if dropped:
            log.info("embedding cache: dropped %d vectors older than %d days", dropped, days)


async def run_forever() -> None:
    while True:
        try:
            await sweep()
        except Exception as exc:  # the database may be away for a while: try again next round
            log.warning("retention sweep failed: %s", exc.__class__.__name__)
        await asyncio.sleep(RETENTION_INTERVAL_S)
