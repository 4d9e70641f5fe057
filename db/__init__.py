"""The one database access path: a process-wide async pool plus small query helpers."""

from db.pool import connect, disconnect, execute, fetch_all, fetch_one, ping, pool, transaction

__all__ = ["connect", "disconnect", "execute", "fetch_all", "fetch_one", "ping", "pool", "transaction"]
