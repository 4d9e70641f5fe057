"""`goclaw serve` and `goclaw migrate`."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys

import uvicorn

from db.migrate import migrate
from gateway.settings import Settings, load_settings

log = logging.getLogger("goclaw")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("pgserver", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _database(settings: Settings):
    """The DSN to use, starting the embedded server when none is configured."""
    if settings.postgres_dsn:
        return None, settings.postgres_dsn
    from gateway import embedded

    return embedded.start(settings.data_dir)


def _refuse_insecure(settings: Settings) -> None:
    if settings.auth_disabled and not settings.is_loopback and not settings.allow_insecure:
        sys.exit(
            f"refusing to serve {settings.host} without GOCLAW_GATEWAY_TOKEN "
            "(set a token, bind to 127.0.0.1, or set GOCLAW_ALLOW_INSECURE=1)"
        )
    if settings.auth_disabled:
        log.warning("GOCLAW_GATEWAY_TOKEN is not set: authentication is disabled (callers are operators)")


def cmd_migrate(settings: Settings) -> int:
    server, dsn = _database(settings)
    applied = migrate(dsn)
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
    if server is not None:
        server.cleanup()
    return 0


class GracefulServer(uvicorn.Server):
    """SIGTERM/SIGINT end in a clean exit (status 0) after the graceful shutdown, instead of
    uvicorn re-raising the signal once it has stopped."""

    @contextlib.contextmanager
    def capture_signals(self):
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def cmd_serve(settings: Settings, workers: int) -> int:
    _refuse_insecure(settings)
    server, dsn = _database(settings)
    try:
        migrate(dsn)
        os.environ["GOCLAW_POSTGRES_DSN"] = dsn  # workers read their settings from the environment
        print(f"goclaw: HTTP on http://{settings.host}:{settings.port} (docs at /docs)", flush=True)
        print(f"goclaw: WebSocket RPC on ws://{settings.host}:{settings.ws_port}/ws", flush=True)
        config = dict(
            factory=True,
            host=settings.host,
            port=settings.port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=10,
            http="gateway.http:HeadTimeoutHttpTools",  # uvicorn's httptools with a deadline for request heads
        )
        if workers > 1:
            uvicorn.run("gateway.app:create_app", workers=workers, **config)
        else:
            GracefulServer(uvicorn.Config("gateway.app:create_app", **config)).run()
    finally:
        if server is not None:
            server.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="goclaw", description="GoClaw gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="migrate, then serve HTTP")
    serve.add_argument("--workers", type=int, default=None, help="worker processes (default GOCLAW_WORKERS or 1)")
    sub.add_parser("migrate", help="apply pending SQL migrations and exit")
    args = parser.parse_args(argv)
    settings = load_settings()
    _setup_logging(settings.log_level)
    if args.command == "migrate":
        return cmd_migrate(settings)
    return cmd_serve(settings, args.workers or settings.workers)


if __name__ == "__main__":
    sys.exit(main())
