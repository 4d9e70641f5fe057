"""API-key material: generation, hashing, format check. The raw key is never stored."""

from __future__ import annotations

import hashlib
import re
import secrets

KEY_PREFIX = "goclaw_"
_KEY_RE = re.compile(r"^goclaw_[0-9a-f]{32}$")


def generate() -> tuple[str, str, str]:
    """Return (raw key, display prefix, sha256 hex of the raw key)."""
    random_hex = secrets.token_hex(16)
    raw = KEY_PREFIX + random_hex
    return raw, random_hex[:8], hash_key(raw)


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def looks_like_key(raw: str) -> bool:
    return bool(_KEY_RE.match(raw))
