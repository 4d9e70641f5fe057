"""In-process cache of API-key lookups.

Positive and negative entries live `ttl` seconds; an entry also remembers the key's own expiry so
an expired key stops working on time. Any create/revoke, on any process, clears the cache through
the event bus (kind `api_keys`). `last_used_at` is collected here and written in batches off the
request path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import db
from auth.keys import hash_key, looks_like_key

log = logging.getLogger("goclaw.auth")

MAX_ENTRIES = 10_000

LOOKUP_SQL = """
SELECT id::text AS id, scopes, expires_at FROM api_keys
WHERE key_hash = %s AND NOT revoked AND (expires_at IS NULL OR expires_at > now())
"""
TOUCH_SQL = "UPDATE api_keys SET last_used_at = now() WHERE id = ANY(%s::uuid[])"


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: str
    scopes: frozenset[str]
    expires_at: datetime | None


class KeyCache:
    def __init__(self, ttl: float = 300.0) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, KeyInfo | None]] = {}
        self._touched: set[str] = set()

    def clear(self, _event: object = None) -> None:
        self._entries.clear()

    async def lookup(self, raw: str) -> KeyInfo | None:
        """The live key matching `raw`, or None. Database trouble propagates as a 503."""
        if not looks_like_key(raw):
            return None
        digest = hash_key(raw)
        now = time.monotonic()
        hit = self._entries.get(digest)
        if hit is not None and hit[0] > now:
            info = hit[1]
        else:
            row = await db.fetch_one(LOOKUP_SQL, (digest,))
            info = KeyInfo(row["id"], frozenset(row["scopes"]), row["expires_at"]) if row else None
            self._remember(digest, info, now)
        if info is None:
            return None
        if info.expires_at is not None and info.expires_at <= datetime.now(UTC):
            return None
        self._touched.add(info.id)
        return info

    def _remember(self, digest: str, info: KeyInfo | None, now: float) -> None:
        if len(self._entries) >= MAX_ENTRIES:
            if info is None:
                return  # don't let key spraying evict real keys
            self._entries.pop(next(iter(self._entries)))
        self._entries[digest] = (now + self.ttl, info)

    async def flush_last_used(self) -> None:
        if not self._touched:
            return
        ids, self._touched = list(self._touched), set()
        try:
            await db.execute(TOUCH_SQL, (ids,))
        except Exception as exc:
            log.warning("could not record api key use: %s", exc)

    async def run_flusher(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.flush_last_used()
