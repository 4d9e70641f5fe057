"""The one secret box: AES-256-GCM at rest, masked in every response and log.

Stored form: `aes-gcm:` + base64(nonce ‖ ciphertext ‖ tag), 12-byte random nonce (the reference's
format, so its encrypted rows stay readable). The key comes from GOCLAW_ENCRYPTION_KEY (64 hex
chars, base64 of 32 bytes, or 32 raw characters); without it a key is generated once into
`<data dir>/encryption.key` (mode 0600). Every process sharing a database must use the same key.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import secrets as _random
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger("goclaw.secrets")

PREFIX = "aes-gcm:"
MASK = "***"


class SecretError(Exception):
    """A stored secret could not be decrypted (wrong key or tampered data)."""


def parse_key(raw: str) -> bytes:
    raw = raw.strip()
    if len(raw) == 64:
        try:
            return bytes.fromhex(raw)
        except ValueError:
            pass
    if len(raw) == 44 and raw.endswith("="):
        try:
            key = base64.b64decode(raw, validate=True)
            if len(key) == 32:
                return key
        except binascii.Error:
            pass
    if len(raw.encode()) == 32:
        return raw.encode()
    raise ValueError("GOCLAW_ENCRYPTION_KEY must be 64 hex chars, base64 of 32 bytes, or 32 characters")


def load_or_create_key(configured: str | None, data_dir: Path) -> bytes:
    if configured:
        return parse_key(configured)
    path = data_dir / "encryption.key"
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return parse_key(path.read_text())
    with os.fdopen(fd, "w") as handle:
        handle.write(_random.token_hex(32))
    log.warning("GOCLAW_ENCRYPTION_KEY is not set: generated a new key in %s (back it up)", path)
    return parse_key(path.read_text())


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def encrypt(self, plaintext: str) -> str:
        nonce = _random.token_bytes(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), None)
        return PREFIX + base64.b64encode(nonce + sealed).decode()

    def decrypt(self, stored: str) -> str:
        if not stored.startswith(PREFIX):
            raise SecretError("value is not encrypted")
        try:
            blob = base64.b64decode(stored[len(PREFIX):], validate=True)
            return self._aead.decrypt(blob[:12], blob[12:], None).decode()
        except (binascii.Error, InvalidTag, ValueError) as exc:
            raise SecretError("cannot decrypt stored secret (wrong GOCLAW_ENCRYPTION_KEY?)") from exc

    def encrypt_json(self, value: Any) -> str:
        return self.encrypt(json.dumps(value, separators=(",", ":")))

    def decrypt_json(self, stored: str) -> Any:
        return json.loads(self.decrypt(stored))


def mask(value: str | None) -> str:
    """What a response shows for a secret: '***' when one is set, '' when not."""
    return MASK if value else ""


def mask_values(mapping: dict[str, Any] | None) -> dict[str, str]:
    """Every value of a secret map (env, headers, credentials) replaced by the mask."""
    return {key: MASK for key in (mapping or {})}


def scrub(text: str, secrets: list[str]) -> str:
    """Remove known secret values from free text (logs, upstream error messages)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    return text
