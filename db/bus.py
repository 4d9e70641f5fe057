"""Cross-process events over PostgreSQL LISTEN/NOTIFY.

`publish` runs inside the caller's transaction, so listeners hear about a change only once it
has committed. Every process (this one included) receives every event and dispatches it to the
local subscribers of its `kind`. While the listener is disconnected events can be missed, so on
every (re)connect subscribers get a synthetic `resync` call and drop whatever they cache.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

log = logging.getLogger("goclaw.bus")

CHANNEL = "goclaw_bus"
Handler = Callable[[dict[str, Any]], Awaitable[None] | None]

_subscribers: dict[str, list[Handler]] = defaultdict(list)
_task: asyncio.Task | None = None
connected = asyncio.Event()


def subscribe(kind: str, handler: Handler) -> None:
    """Call `handler(payload)` for every event of `kind`, and with {"resync": True} on reconnect."""
    _subscribers[kind].append(handler)


async def publish(conn: psycopg.AsyncConnection, kind: str, **payload: Any) -> None:
    """Queue an event in the caller's transaction; it is delivered after COMMIT."""
    body = json.dumps({"kind": kind, **payload}, separators=(",", ":"))
    await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, body))


async def dispatch(event: dict[str, Any]) -> None:
    for handler in list(_subscribers.get(event.get("kind", ""), ())):
        try:
            result = handler(event)
            if asyncio.iscoroutine(result):
                await result
        except Exception:  # a faulty subscriber must not stop the bus
            log.exception("bus subscriber failed for %s", event.get("kind"))


async def _resync_all() -> None:
    for kind in list(_subscribers):
        await dispatch({"kind": kind, "resync": True})


async def _listen_forever(dsn: str) -> None:
    delay = 0.2
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                await _resync_all()
                connected.set()
                delay = 0.2
                async for note in conn.notifies():
                    try:
                        event = json.loads(note.payload)
                    except ValueError:
                        continue
                    await dispatch(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            connected.clear()
            log.warning("event bus disconnected (%s); retrying in %.1fs", exc.__class__.__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


def start(dsn: str) -> None:
    global _task
    if _task is None:
        _task = asyncio.get_running_loop().create_task(_listen_forever(dsn), name="goclaw-bus")


async def stop() -> None:
    global _task
    if _task is not None:
        _task.cancel()
        try:
            await _task
        except asyncio.CancelledError:
            pass
        _task = None
    connected.clear()
