"""Write-behind for data that must not slow the response path (traces, spans, usage rollups,
chat transcripts, ...). Writes are queued and committed in batches, the whole batch one
transaction: all rows of one SQL statement become one `executemany`, statements run in the order
each first appeared in the batch, rows in the order they were queued. So queued writes must be
inserts/upserts whose parents are queued first (a session before its messages, a trace before
its spans) — never an update of a row a later statement of the same batch inserts.

If a batch fails because the database is unreachable, it stays queued and is retried. If it fails
because of one bad row, the rows are retried one by one and only the bad one is dropped (logged).
`close()` flushes everything that is queued, so a clean shutdown loses nothing.

Plain inserts of many rows (traces, spans) can be queued as `CopyInto(table, columns)`: they are
written with COPY, about half the client CPU per row of an `executemany`.

Rollups (`add_sum`) are added up in memory first: every request bumps the same hourly usage rows,
so a batch carries one upsert per row touched instead of one per request."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import psycopg

import db
from db.text import storable
from gateway.errors import ApiError

log = logging.getLogger("goclaw.batch")

MAX_QUEUED = 200_000  # beyond this (a long outage) the oldest writes are dropped, loudly


REFUSALS = (psycopg.Error, ApiError, UnicodeError)  # how a row the database cannot take fails


class CopyInto(str):
    """An INSERT of `columns` into `table` (its text), written with COPY when batched."""

    table: str
    columns: tuple[str, ...]

    def __new__(cls, table: str, columns: tuple[str, ...]) -> CopyInto:
        names = ", ".join(columns)
        statement = super().__new__(cls, f"INSERT INTO {table} ({names}) VALUES ({', '.join(['%s'] * len(columns))})")
        statement.table, statement.columns = table, columns
        return statement

    @property
    def copy_statement(self) -> str:
        return f"COPY {self.table} ({', '.join(self.columns)}) FROM STDIN"


class BatchWriter:
    def __init__(self, interval: float = 0.1, max_batch: int = 2_000) -> None:
        self.interval = interval
        self.max_batch = max_batch
        self._queue: list[tuple[str, Sequence[Any]]] = []
        # rollup rows still waiting in the queue, by (statement, key): later sums are added in place
        self._sums: dict[tuple[str, tuple], list[Any]] = {}
        self._wakeup = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self.dropped = 0
        self._added = 0  # writes ever queued (dropped ones included)
        self._written = 0  # writes ever taken off the queue (written, refused or dropped)

    def add(self, sql: str, params: Sequence[Any]) -> None:
        self._queue.append((sql, params))
        self._added += 1
        if len(self._queue) > MAX_QUEUED:
            del self._queue[0]
            self._written += 1
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.error("write-behind queue full; dropped %d writes so far", self.dropped)
        if len(self._queue) >= self.max_batch:
            self._wakeup.set()

    def add_sum(self, sql: str, key: tuple, counts: tuple) -> None:
        """Queue an upsert that adds `counts` to the row named by `key` (its parameters are the key,
        then the counts). If a row for the same statement and key is still queued, the counts are
        added to it instead. With no counts this de-duplicates (e.g. "this user was active today")."""
        queued = self._sums.get((sql, key))
        if queued is not None:
            width = len(key)
            queued[width:] = [a + b for a, b in zip(queued[width:], counts, strict=True)]
            return
        params = [*key, *counts]
        self._sums[(sql, key)] = params
        self.add(sql, params)

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def flush(self) -> None:
        """Commit everything queued before this call (callers needing read-your-writes await
        this). Writes queued meanwhile wait for the next flush, so under steady load a caller
        never waits for more than what was there when it asked."""
        target = self._added
        async with self._lock:
            while self._queue and self._written < target:
                batch = self._queue[: min(self.max_batch, target - self._written)]
                self._sums.clear()  # rows about to be written are not added to any more
                try:
                    await self._write(batch)
                except REFUSALS as exc:
                    if isinstance(exc, ApiError) and exc.status == 503:
                        raise  # database unreachable: keep the batch queued
                    await self._write_one_by_one(batch)  # a value the database refuses
                del self._queue[: len(batch)]
                self._written += len(batch)

    async def _write(self, batch: list[tuple[str, Sequence[Any]]]) -> None:
        rows_by_sql: dict[str, list[Sequence[Any]]] = {}
        for sql, params in batch:
            rows_by_sql.setdefault(sql, []).append(params)
        async with db.transaction() as conn, conn.cursor() as cur:
            for sql, rows in rows_by_sql.items():
                if isinstance(sql, CopyInto):
                    async with cur.copy(sql.copy_statement) as copy:
                        for row in rows:
                            await copy.write_row(row)
                else:
                    await cur.executemany(sql, rows)

    async def _write_one_by_one(self, batch: list[tuple[str, Sequence[Any]]]) -> None:
        """After a failed batch: each row on its own. A row refused for a value PostgreSQL cannot
        store (U+0000, a lone surrogate) is stored with U+FFFD instead; any other refusal drops
        the row alone (logged)."""
        for sql, params in batch:
            try:
                await self._write_row(sql, params)
            except REFUSALS as exc:
                await self._write_cleaned(sql, params, exc)

    async def _write_cleaned(self, sql: str, params: Sequence[Any], refusal: Exception) -> None:
        """Retry a refused row with what PostgreSQL can store, if that changes anything."""
        latest = refusal
        cleaned = [storable(value) for value in params]
        if cleaned != list(params):
            try:
                await self._write_row(sql, cleaned)
                return
            except REFUSALS as exc:
                latest = exc
        if isinstance(latest, ApiError) and latest.status == 503:
            raise latest  # database unreachable: the batch stays queued
        log.error("dropping a write that the database refuses: %s", refusal)

    @staticmethod
    async def _write_row(sql: str, params: Sequence[Any]) -> None:
        async with db.transaction() as conn:
            await conn.execute(sql, params)

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wakeup.wait(), self.interval)
            except TimeoutError:
                pass
            self._wakeup.clear()
            try:
                await self.flush()
            except Exception as exc:
                log.warning("write-behind flush failed (%s); %d writes queued", exc.__class__.__name__, self.pending)
                await asyncio.sleep(0.5)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="goclaw-batch-writer")

    async def close(self, attempts: int = 20) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for _ in range(attempts):
            try:
                await self.flush()
                if not self._queue:
                    return
            except Exception:
                await asyncio.sleep(0.25)
        if self._queue:
            log.error("shutting down with %d unwritten writes (database unreachable)", len(self._queue))
