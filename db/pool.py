"""Async connection pool and helpers; database outages surface as 503 ApiErrors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from gateway.errors import ApiError

log = logging.getLogger("goclaw.db")

_pool: AsyncConnectionPool | None = None
Params = Sequence[Any] | dict[str, Any] | None


def pool() -> AsyncConnectionPool:
    if _pool is None:
        raise RuntimeError("database pool is not open")
    return _pool


async def connect(dsn: str, *, min_size: int = 2, max_size: int = 10, acquire_timeout: float = 5.0) -> None:
    """Open the pool without waiting for the database, so the server can start while it is down."""
    global _pool
    _pool = AsyncConnectionPool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        timeout=acquire_timeout,
        open=False,
        kwargs={"row_factory": dict_row, "autocommit": True},
        reconnect_timeout=0,  # keep trying forever; the pool heals once the database is back
    )
    await _pool.open(wait=False)


async def disconnect() -> None:
    global _pool
    if _pool is not None:
        await _pool.close()
        _pool = None


_purging: asyncio.Task | None = None


def _purge_broken_connections() -> None:
    """After a connection failure, check the idle connections in the background (instead of
    checking every connection on every checkout), so a database restart costs few requests."""
    global _purging
    if _pool is not None and (_purging is None or _purging.done()):
        _purging = asyncio.get_running_loop().create_task(_pool.check())


@contextlib.asynccontextmanager
async def _unavailable_as_503() -> AsyncIterator[None]:
    try:
        yield
    except (PoolTimeout, psycopg.OperationalError) as exc:
        log.warning("database unavailable: %s", exc.__class__.__name__)
        _purge_broken_connections()
        raise ApiError(503, "error.database_unavailable", headers={"Retry-After": "1"}) from exc
    except psycopg.DataError as exc:  # a value the column cannot hold: the client's input
        detail = exc.diag.message_primary or exc.__class__.__name__
        raise ApiError(400, "error.invalid_request", detail) from exc


@contextlib.asynccontextmanager
async def transaction() -> AsyncIterator[psycopg.AsyncConnection]:
    """A connection inside one transaction: all of its writes commit together or not at all."""
    async with _unavailable_as_503(), pool().connection() as conn, conn.transaction():
        yield conn


async def fetch_all(sql: str, params: Params = None, *, conn: psycopg.AsyncConnection | None = None) -> list[dict]:
    if conn is not None:
        return await (await conn.execute(sql, params)).fetchall()
    async with _unavailable_as_503(), pool().connection() as c:
        return await (await c.execute(sql, params)).fetchall()


async def fetch_one(sql: str, params: Params = None, *, conn: psycopg.AsyncConnection | None = None) -> dict | None:
    if conn is not None:
        return await (await conn.execute(sql, params)).fetchone()
    async with _unavailable_as_503(), pool().connection() as c:
        return await (await c.execute(sql, params)).fetchone()


async def execute(sql: str, params: Params = None, *, conn: psycopg.AsyncConnection | None = None) -> int:
    """Run a statement; returns the affected row count."""
    if conn is not None:
        return (await conn.execute(sql, params)).rowcount
    async with _unavailable_as_503(), pool().connection() as c:
        return (await c.execute(sql, params)).rowcount


async def ping(within_s: float = 1.0) -> bool:
    """True when a connection answers `SELECT 1` within `within_s` seconds."""
    try:
        async with pool().connection(timeout=within_s) as c:
            await c.execute("SELECT 1")
        return True
    except Exception:
        return False
