"""Per-process singletons, set once by the app factory."""

from __future__ import annotations

import time

from auth.cache import KeyCache
from gateway.settings import Settings, load_settings

settings: Settings = load_settings({})
key_cache: KeyCache = KeyCache()
started_at: float = time.monotonic()
resolver = None  # the SpecResolver: its `routes` are the live route table
document: dict = {}  # the served OpenAPI document (seed + extension)
allow_table: list = []  # (path regex, allowed methods) for 405 answers


def configure(new_settings: Settings) -> None:
    global settings, key_cache, started_at
    settings = new_settings
    key_cache = KeyCache(ttl=new_settings.api_key_cache_ttl_s)
    started_at = time.monotonic()
