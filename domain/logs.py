"""The last log records of this process, for `logs.tail`: a bounded ring buffer fed by a
logging.Handler on the root logger.

Log lines are already written without secrets (policy); as a second line of defence every
message is scrubbed before it is stored: Authorization/Bearer values, API keys (`goclaw_…`,
`sk-…`), `key=value` pairs whose name says token/secret/password/api key, and the configured
gateway token are replaced by `***`. Tracebacks are not kept (only the exception's type).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from gateway import state
from gateway.errors import bad_request
from gateway.secrets import MASK

CAPACITY = 1000
MAX_MESSAGE = 2000
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "warning": logging.WARNING,
          "error": logging.ERROR}
NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn", logging.ERROR: "error",
         logging.CRITICAL: "error"}

_SECRET_PATTERNS = (
    re.compile(r"(?i)\b((?:proxy-)?authorization)(\s*[:=]\s*)(?:(?:bearer|basic|token)\s+)?[^\s,;\"'}]+"),
    re.compile(r"(?i)\b(bearer)(\s+)[A-Za-z0-9._~+/=-]{4,}"),
    re.compile(r"(?i)\b([\w-]*(?:api[_-]?key|token|secret|password|passwd|credentials?))"
               r"(\"?'?\s*[:=]\s*\"?'?)[^\s,;\"'}]+"),
)
_KEY_PATTERNS = (
    re.compile(r"goclaw_[0-9a-fA-F]{8,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"),
)

Subscriber = Callable[[dict[str, Any]], None]


def scrub(text: str, extra: list[str] | None = None) -> str:
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + m.group(2) + MASK, text)
    for pattern in _KEY_PATTERNS:
        text = pattern.sub(MASK, text)
    for secret in extra or ():
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    return text


def public(record: dict[str, Any]) -> dict[str, Any]:
    """A stored record as the `log` event shows it (the reference's shape)."""
    return {"timestamp": record["timestamp"], "level": record["level"], "message": record["message"],
            "source": record["source"]}


class RingHandler(logging.Handler):
    def __init__(self, capacity: int = CAPACITY) -> None:
        super().__init__(logging.DEBUG)
        self.records: deque[dict[str, Any]] = deque(maxlen=capacity)
        self.subscribers: list[Subscriber] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self._local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._local, "busy", False):
            return  # a subscriber logged: don't loop
        self._local.busy = True
        try:
            try:
                message = record.getMessage()
            except Exception:
                message = str(record.msg)
            if record.exc_info and record.exc_info[0] is not None:
                message += f" ({record.exc_info[0].__name__})"
            entry = {
                "timestamp": int(record.created * 1000),
                "levelno": record.levelno,
                "level": NAMES.get(record.levelno, "info"),
                "message": scrub(message[:MAX_MESSAGE], [state.settings.gateway_token or ""]),
                "source": record.name,
            }
            self.records.append(entry)
            if self.subscribers:
                self._notify(entry)
        except Exception:
            pass  # logging must never raise
        finally:
            self._local.busy = False

    def _notify(self, entry: dict[str, Any]) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._deliver(entry)
        else:
            loop.call_soon_threadsafe(self._deliver, entry)

    def _deliver(self, entry: dict[str, Any]) -> None:
        for subscriber in list(self.subscribers):
            subscriber(entry)

    def tail(self, level: int = logging.INFO, limit: int = 100) -> list[dict[str, Any]]:
        matching = [r for r in self.records if r["levelno"] >= level]
        return matching[-limit:]


handler = RingHandler()


def install() -> None:
    """Attach the ring buffer to the root logger (once per process)."""
    handler.loop = asyncio.get_running_loop()
    root = logging.getLogger()
    if handler not in root.handlers:
        root.addHandler(handler)


def uninstall() -> None:
    logging.getLogger().removeHandler(handler)
    handler.subscribers.clear()


def subscribe(subscriber: Subscriber) -> None:
    if subscriber not in handler.subscribers:
        handler.subscribers.append(subscriber)


def unsubscribe(subscriber: Subscriber) -> None:
    if subscriber in handler.subscribers:
        handler.subscribers.remove(subscriber)


def parse_level(name: str | None) -> int:
    """`debug|info|warn|error` (default info); anything else is a 400."""
    if name is None or name == "":
        return logging.INFO
    if not isinstance(name, str) or name.lower() not in LEVELS:
        raise bad_request("level must be one of debug, info, warn, error")
    return LEVELS[name.lower()]


def recent(level: int = logging.INFO, limit: int = 100) -> list[dict[str, Any]]:
    return handler.tail(level, limit)
