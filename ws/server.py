"""The WebSocket RPC server (protocol v3) on its own port, in the HTTP app's process and loop.

Transport rules (README "WebSocket RPC"):
* `ws://<GOCLAW_HOST>:<GOCLAW_WS_PORT>/ws` only (other paths → 404); text or binary frames of
  JSON; no compression (it costs ~100 KiB per connection); SO_REUSEPORT, so `--workers N`
  processes share the port and the kernel spreads connections over them.
* inbound messages over 512 KiB → close 1009; `connect` not done within `connect_timeout` →
  close 1008; five failed `connect`s → close 1008; a revoked API key → close 1008.
* keepalive: a ping every 30 s, a client that does not answer within 30 s is dropped (the
  reference's 60 s read deadline); optional idle timeout (GOCLAW_WS_IDLE_TIMEOUT, off by default):
  no inbound frame for that long and no run going → close 1001.
* per-connection bounded send queue (ws.connection): events are dropped for a slow reader,
  responses never; a reader that accepts nothing for 10 s → close 1013.
* auth-disabled mode: upgrades carrying a non-loopback `Origin` are refused (403), so a web page
  cannot drive the unauthenticated gateway through the user's browser.
* shutdown: `shutdown` event to every authenticated client, close 1001, runs cancelled (their
  traces say `cancelled`) before the write-behind writer is flushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from db import bus
from domain import logs, runs
from gateway import state
from gateway.settings import LOOPBACK_HOSTS
from ws import chat, events, methods, protocol
from ws.connection import Connection, Limits

log = logging.getLogger("goclaw.ws")

PATH = "/ws"


def limits_from_env(env: dict[str, str] | None = None) -> Limits:
    """Transport limits; GOCLAW_WS_* variables override the defaults (README)."""
    env = dict(os.environ if env is None else env)

    def number(name: str, default: float) -> float:
        raw = (env.get(name) or "").strip()
        try:
            return float(raw) if raw else default
        except ValueError:
            raise SystemExit(f"{name} must be a number, got {raw!r}") from None

    base = Limits()
    return Limits(
        max_message_bytes=int(number("GOCLAW_WS_MAX_MESSAGE_BYTES", base.max_message_bytes)),
        max_queued=int(number("GOCLAW_WS_SEND_QUEUE", base.max_queued)),
        write_timeout=number("GOCLAW_WS_WRITE_TIMEOUT", base.write_timeout),
        ping_interval=number("GOCLAW_WS_PING_INTERVAL", base.ping_interval),
        ping_timeout=number("GOCLAW_WS_PING_TIMEOUT", base.ping_timeout),
        connect_timeout=number("GOCLAW_WS_CONNECT_TIMEOUT", base.connect_timeout),
        idle_timeout=number("GOCLAW_WS_IDLE_TIMEOUT", base.idle_timeout),
        max_runs=int(number("GOCLAW_WS_MAX_RUNS", base.max_runs)),
    )


def _loopback_origin(origin: str) -> bool:
    try:
        host = urlsplit(origin).hostname or ""
    except ValueError:
        return False
    return host in LOOPBACK_HOSTS or host.startswith("127.")


class WsServer:
    def __init__(self, host: str, port: int, limits: Limits | None = None) -> None:
        self.host = host
        self.port = port
        self.limits = limits or limits_from_env()
        self.server: Server | None = None
        self.connections: set[Connection] = set()

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}{PATH}"

    async def start(self) -> None:
        if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
            logging.getLogger("websockets").setLevel(logging.WARNING)  # not a line per connection
        logs.install()
        runs.start()
        events.start()
        chat.start()
        _subscribe_once()
        self.server = await serve(
            self._handle, self.host, self.port,
            process_request=self._route, compression=None, server_header=None,
            max_size=self.limits.max_message_bytes, max_queue=8, write_limit=64 * 1024,
            ping_interval=self.limits.ping_interval or None, ping_timeout=self.limits.ping_timeout or None,
            close_timeout=5, open_timeout=10, reuse_port=True,
        )

    async def stop(self) -> None:
        if self.server is None:
            return
        events.broadcast(protocol.event("shutdown"))
        await asyncio.gather(*(c.flush(1.0) for c in list(self.connections)), return_exceptions=True)
        self.server.close(code=1001, reason="server shutting down")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await self.server.wait_closed()
        pending = [e.task for e in runs.local_runs() if e.origin and e.task is not None]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
        self.server = None
        events.stop()
        chat.stop()
        await runs.stop()
        logs.uninstall()

    def _route(self, connection: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path != PATH:
            return connection.respond(404, "not found: the WebSocket endpoint is /ws\n")
        origin = request.headers.get("Origin")
        if state.settings.auth_disabled and origin and not _loopback_origin(origin):
            return connection.respond(403, "cross-origin WebSocket refused while authentication is disabled\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        conn = Connection(ws, self.limits)
        self.connections.add(conn)
        try:
            await self._read(conn)
        finally:
            self.connections.discard(conn)
            events.detach(conn)
            runs.abort_origin(conn.id)  # the reference cancels a socket's runs when it goes
            for task in list(conn.tasks):
                task.cancel()
            conn.close_now()

    async def _read(self, conn: Connection) -> None:
        ws, limits = conn.ws, self.limits
        deadline = time.monotonic() + limits.connect_timeout
        while True:
            await conn.wait_for_room()
            if conn.closed:
                return
            if not conn.authenticated:
                timeout: float | None = max(0.0, deadline - time.monotonic())
            else:
                timeout = limits.idle_timeout or None
            try:
                async with asyncio.timeout(timeout):
                    raw = await ws.recv()
            except TimeoutError:
                if not conn.authenticated:
                    await self._close(conn, 1008, "connect timeout")
                    return
                if conn.runs:
                    continue
                await self._close(conn, 1001, "idle timeout")
                return
            except ConnectionClosed:
                return
            await methods.handle(conn, raw)
            if conn.failed_connects >= limits.max_failed_connects:
                await self._close(conn, 1008, "too many failed connect attempts")
                return

    async def _close(self, conn: Connection, code: int, reason: str) -> None:
        await conn.flush(1.0)
        with contextlib.suppress(Exception):
            await conn.ws.close(code, reason)


# ---- API keys revoked while a socket uses them ---------------------------------------------------

_subscribed = False


def _subscribe_once() -> None:
    global _subscribed
    if not _subscribed:
        _subscribed = True
        bus.subscribe("api_keys", _on_keys_changed)


def _on_keys_changed(_event: dict) -> None:
    holders = [c for c in events.connections() if c.principal is not None and c.principal.kind == "api_key"]
    if holders:
        asyncio.get_running_loop().create_task(_recheck(holders))


async def _recheck(holders: list[Connection]) -> None:
    for conn in holders:
        try:
            live = conn.token is not None and await state.key_cache.lookup(conn.token) is not None
        except Exception:
            continue  # database trouble: the next request re-checks
        if not live and not conn.closed:
            events.detach(conn)
            conn.principal, conn.token = None, None
            with contextlib.suppress(Exception):
                await conn.ws.close(1008, "credential revoked")


# ---- the process's server (started and stopped by the app lifespan) ------------------------------

current: WsServer | None = None


async def start() -> WsServer:
    global current
    settings = state.settings
    current = WsServer(settings.host, settings.ws_port)
    await current.start()
    return current


async def stop() -> None:
    global current
    if current is not None:
        await current.stop()
        current = None
