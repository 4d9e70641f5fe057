"""Per-process singletons, set once by the app factory."""

from __future__ import annotations

import time

import httpx

from auth.cache import KeyCache
from db.batch import BatchWriter
from domain.ratelimit import RateLimiter
from gateway.secrets import SecretBox, load_or_create_key
from gateway.settings import Settings, load_settings

settings: Settings = load_settings({})
key_cache: KeyCache = KeyCache()
started_at: float = time.monotonic()
resolver = None  # the SpecResolver: its `routes` are the live route table
document: dict = {}  # the served OpenAPI document (seed + extension)
allow_table: list = []  # (path regex, allowed methods) for 405 answers


secret_box: SecretBox | None = None
http: httpx.AsyncClient | None = None  # the shared outbound client (LLM providers, web_fetch, ...)
writer: BatchWriter = BatchWriter()  # write-behind for traces, usage rollups and transcripts
chat_limiter: RateLimiter = RateLimiter(60, 10)


def box() -> SecretBox:
    """The process's SecretBox (created on first use from settings)."""
    global secret_box
    if secret_box is None:
        secret_box = SecretBox(load_or_create_key(settings.encryption_key, settings.data_dir))
    return secret_box


def configure(new_settings: Settings) -> None:
    global settings, key_cache, started_at, secret_box, chat_limiter
    secret_box = None
    settings = new_settings
    chat_limiter = RateLimiter(new_settings.rate_limit_rpm, new_settings.rate_limit_burst)
    key_cache = KeyCache(ttl=new_settings.api_key_cache_ttl_s)
    started_at = time.monotonic()
