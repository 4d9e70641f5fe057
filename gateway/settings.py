"""Settings read once from the environment (names follow the reference GoClaw)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def _bool(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from exc


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 18790
    ws_port: int = 18791
    postgres_dsn: str | None = None
    data_dir: Path = Path(".goclaw")
    gateway_token: str | None = None
    allow_insecure: bool = False
    encryption_key: str | None = None
    owner_ids: frozenset[str] = field(default_factory=frozenset)
    log_level: str = "info"
    max_body_bytes: int = 1 << 20
    max_upload_bytes: int = 50 << 20
    rate_limit_rpm: int = 60
    rate_limit_burst: int = 10
    db_pool_min: int = 2
    db_pool_max: int = 10
    db_timeout_s: float = 5.0
    body_timeout_s: float = 30.0
    api_key_cache_ttl_s: int = 300
    embedding_cache_days: int = 30
    workers: int = 1
    spec_path: Path | None = None
    spec_ext_path: Path | None = None

    @property
    def auth_disabled(self) -> bool:
        return not self.gateway_token

    @property
    def is_loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS or self.host.startswith("127.")


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Build Settings from environment variables (see README's configuration table)."""
    env = dict(os.environ if env is None else env)
    owners = {o.strip() for o in env.get("GOCLAW_OWNER_IDS", "").split(",") if o.strip()}
    return Settings(
        host=env.get("GOCLAW_HOST", "127.0.0.1"),
        port=_int(env, "GOCLAW_PORT", 18790),
        ws_port=_int(env, "GOCLAW_WS_PORT", 18791),
        postgres_dsn=env.get("GOCLAW_POSTGRES_DSN") or None,
        data_dir=Path(env.get("GOCLAW_DATA_DIR") or ".goclaw"),
        gateway_token=env.get("GOCLAW_GATEWAY_TOKEN") or None,
        allow_insecure=_bool(env.get("GOCLAW_ALLOW_INSECURE")),
        encryption_key=env.get("GOCLAW_ENCRYPTION_KEY") or None,
        owner_ids=frozenset(owners),
        log_level=env.get("GOCLAW_LOG_LEVEL", "info").lower(),
        max_body_bytes=_int(env, "GOCLAW_MAX_BODY_BYTES", 1 << 20),
        max_upload_bytes=_int(env, "GOCLAW_MAX_UPLOAD_BYTES", 50 << 20),
        rate_limit_rpm=_int(env, "GOCLAW_RATE_LIMIT_RPM", 60),
        rate_limit_burst=_int(env, "GOCLAW_RATE_LIMIT_BURST", 10),
        db_pool_min=_int(env, "GOCLAW_DB_POOL_MIN", 2),
        db_pool_max=_int(env, "GOCLAW_DB_POOL_MAX", 10),
        db_timeout_s=float(_int(env, "GOCLAW_DB_TIMEOUT_MS", 5000)) / 1000.0,
        body_timeout_s=float(_int(env, "GOCLAW_BODY_TIMEOUT_MS", 30000)) / 1000.0,
        api_key_cache_ttl_s=_int(env, "GOCLAW_API_KEY_CACHE_TTL", 300),
        embedding_cache_days=_int(env, "GOCLAW_EMBEDDING_CACHE_DAYS", 30),
        workers=_int(env, "GOCLAW_WORKERS", 1),
        spec_path=Path(env["GOCLAW_SPEC"]) if env.get("GOCLAW_SPEC") else None,
        spec_ext_path=Path(env["GOCLAW_SPEC_EXT"]) if env.get("GOCLAW_SPEC_EXT") else None,
    )
