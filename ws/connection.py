"""One client socket: who it is, and its bounded send queue.

Every outbound frame goes through `push` into a per-connection queue that a writer task drains
(started on demand, so an idle connection costs no task). When the queue holds
`limits.max_queued` frames, *events* are dropped for this client (counted in `dropped`), never
responses; the reader stops reading this client's requests until the queue has room again, so
responses cannot pile up either. A client that accepts nothing for `limits.write_timeout`
seconds is closed with 1013 (try again later). Other clients are never slowed down: nothing
waits on a socket except its own writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from auth import Principal

log = logging.getLogger("goclaw.ws")


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = 512 * 1024  # inbound; beyond → close 1009 (as the reference)
    max_queued: int = 256  # outbound frames waiting for a slow client (the reference's buffer)
    write_timeout: float = 10.0  # one frame not accepted within this → close 1013
    ping_interval: float = 30.0
    ping_timeout: float = 30.0
    connect_timeout: float = 10.0  # a socket that has not authenticated by then → close 1008
    idle_timeout: float = 0.0  # no inbound frame for this long (and no run going) → close 1001; 0 = never
    max_runs: int = 8  # concurrent chat.send runs per connection
    max_failed_connects: int = 5  # then → close 1008


class Connection:
    __slots__ = (
        "_frames", "_space", "_writer", "closed", "connected_at", "dropped", "failed_connects", "id",
        "limits", "locale", "log_level", "principal", "remote", "runs", "tasks", "token", "ws",
    )

    def __init__(self, ws: ServerConnection, limits: Limits) -> None:
        self.id = str(uuid.uuid4())
        self.ws = ws
        self.limits = limits
        self.principal: Principal | None = None
        self.token: str | None = None  # kept to re-check an API key (revocation, expiry); never logged
        self.locale = "en"
        self.remote = _remote_address(ws)
        self.connected_at = datetime.now(UTC)
        self.dropped = 0
        self.failed_connects = 0
        self.log_level: int | None = None  # set while `logs.tail` is on
        self.runs: set = set()  # domain.runs.ActiveRun started from this socket
        self.tasks: set[asyncio.Task] = set()
        self.closed = False
        self._frames: deque[str] = deque()
        self._space = asyncio.Event()
        self._writer: asyncio.Task | None = None

    @property
    def authenticated(self) -> bool:
        return self.principal is not None

    @property
    def queued(self) -> int:
        return len(self._frames)

    def push(self, frame: str, *, droppable: bool = False) -> bool:
        """Queue one frame. Droppable frames (events) are refused when the queue is full."""
        if self.closed:
            return False
        if droppable and len(self._frames) >= self.limits.max_queued:
            self.dropped += 1
            return False
        self._frames.append(frame)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write())
        return True

    async def _write(self) -> None:
        try:
            while self._frames and not self.closed:
                frame = self._frames.popleft()
                if len(self._frames) < self.limits.max_queued:
                    self._space.set()
                async with asyncio.timeout(self.limits.write_timeout):
                    await self.ws.send(frame)
        except TimeoutError:
            log.info("ws %s: client not reading for %.0fs; closing", self.id, self.limits.write_timeout)
            self._stop()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.limits.write_timeout):
                    await self.ws.close(1013, "send timeout: the client is not reading")
            self.ws.transport.abort()
        except ConnectionClosed:
            self._stop()
        except Exception:
            log.exception("ws %s: send failed", self.id)
            self._stop()
        finally:
            self._writer = None
            if self._frames and not self.closed:  # pushed while we were finishing
                self._writer = asyncio.get_running_loop().create_task(self._write())

    def _stop(self) -> None:
        self.closed = True
        self._frames.clear()
        self._space.set()

    async def wait_for_room(self) -> None:
        """Before reading the next request: wait while our own responses are piling up."""
        while len(self._frames) >= self.limits.max_queued and not self.closed:
            self._space.clear()
            await self._space.wait()

    async def flush(self, within: float = 2.0) -> None:
        """Wait (bounded) until the queue is empty: before a planned close."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while self._writer is not None and not self.closed:
                    await asyncio.shield(self._writer)

    def close_now(self) -> None:
        self._stop()
        if self._writer is not None:
            self._writer.cancel()


def _remote_address(ws: ServerConnection) -> str:
    """The socket peer (as HTTP uses it for audit rows; forwarding headers are not trusted)."""
    address = ws.remote_address
    return str(address[0]) if address else ""
