"""App assembly: the served contract, the resolver, security, error handling and lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from pathlib import Path

from connexion import AsyncApp
from connexion.middleware.context import ContextMiddleware
from connexion.middleware.exceptions import ExceptionMiddleware
from connexion.middleware.lifespan import LifespanMiddleware
from connexion.middleware.routing import RoutingMiddleware
from connexion.middleware.security import SecurityMiddleware
from connexion.middleware.server_error import ServerErrorMiddleware

import db
from agent import mcp as mcp_sessions
from auth.security import SECURITY_MAP
from db import bus
from domain import retention
from gateway import netguard, state
from gateway.docs import DocsAndSpec
from gateway.http import ERROR_HANDLERS, BodyLimit, CancelOnDisconnect, LiteralPathMethods, ReplaceNul
from gateway.operations import GatewayApi
from gateway.settings import Settings, load_settings
from gateway.spec import EXT_PATH, SEED_PATH, SpecResolver, load_document, path_methods
from gateway.validation import RequestValidation, validator_map
from llm import close_http_client
from ws import server as ws_server

log = logging.getLogger("goclaw")

# Connexion's default stack minus Swagger UI (gateway/docs.py serves /docs and the document
# before this stack) and response validation (off by default; the tests validate responses);
# request validation is Connexion's with its validators built once (gateway/validation.py).
MIDDLEWARES = [
    ServerErrorMiddleware,
    ExceptionMiddleware,
    RoutingMiddleware,
    SecurityMiddleware,
    RequestValidation,
    LifespanMiddleware,
    ContextMiddleware,
]


GC_YOUNG_THRESHOLD = 20_000  # net container allocations between young collections (Python's default: 700)


def settle_garbage_collector() -> None:
    """Called once the app has started. What is alive then (modules, the served document,
    Connexion's operations, pools, caches' owners) lives as long as the process: `gc.freeze()`
    takes it out of the cyclic collector's view, so full collections stop re-scanning it. Young
    collections run every GC_YOUNG_THRESHOLD allocations instead of 700: a chat request allocates
    thousands of short-lived objects, so the collector ran several times per request
    (−11% gateway CPU per chat request, A/B in bench/chat_bench.py's setup)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 50, 100)


@contextlib.asynccontextmanager
async def lifespan(_app):
    settings = state.settings
    if not settings.postgres_dsn:
        raise RuntimeError("GOCLAW_POSTGRES_DSN is not set (use `goclaw serve` to start an embedded database)")
    await db.connect(
        settings.postgres_dsn,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        acquire_timeout=settings.db_timeout_s,
    )
    bus.subscribe("api_keys", state.key_cache.clear)
    bus.start(settings.postgres_dsn)
    flusher = asyncio.create_task(state.key_cache.run_flusher(), name="goclaw-last-used")
    housekeeping = asyncio.create_task(retention.run_forever(), name="goclaw-retention")
    state.http = netguard.upstream_http_client()
    state.writer.start()
    try:
        await ws_server.start()  # WebSocket RPC on GOCLAW_WS_PORT, same loop and pool
        settle_garbage_collector()
        yield
    finally:
        await ws_server.stop()
        await state.writer.close()
        flusher.cancel()
        housekeeping.cancel()
        await mcp_sessions.shutdown()
        await close_http_client(state.http)
        await state.key_cache.flush_last_used()
        await bus.stop()
        await db.disconnect()


def build_connexion_app(
    settings: Settings,
    seed_path: Path = SEED_PATH,
    ext_path: Path | None = EXT_PATH,
    handlers_package: str = "handlers",
) -> AsyncApp:
    state.configure(settings)
    state.box()  # load or generate the encryption key now, not on the first request
    document = load_document(seed_path, ext_path)
    resolver = SpecResolver(handlers_package)
    app = AsyncApp(
        __name__,
        lifespan=lifespan,
        security_map=SECURITY_MAP,
        middlewares=MIDDLEWARES,
    )
    app._middleware_app.api_cls = GatewayApi  # handler calls compiled once (gateway/operations.py)
    app.add_api(document, resolver=resolver, strict_validation=True, validator_map=validator_map())
    for exc_type, handler in ERROR_HANDLERS:
        app.add_error_handler(exc_type, handler)
    state.resolver = resolver
    state.allow_table = path_methods(document)
    state.document = document
    return app


def create_app(settings: Settings | None = None):
    """ASGI application (uvicorn factory target: `gateway.app:create_app`)."""
    settings = settings or load_settings()
    app = build_connexion_app(settings, settings.spec_path or SEED_PATH, settings.spec_ext_path or EXT_PATH)
    app = CancelOnDisconnect(app, paths=("/v1/chat/completions",), suffixes=("/wake",))
    app = BodyLimit(app, settings.max_body_bytes, settings.max_upload_bytes, settings.body_timeout_s)
    return DocsAndSpec(ReplaceNul(LiteralPathMethods(app, state.document)), state.document)
