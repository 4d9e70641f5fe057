"""Credential scrubbing for everything a tool returns (before the model or a log sees it).

Two layers: patterns for well-known credential shapes (provider keys, our own API keys, bearer
tokens, AWS keys, private-key blocks, JWTs, passwords in URLs and `key=value` pairs), and the
exact values the caller knows to be secret (a custom tool's or MCP server's env and headers).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[REDACTED]"
MIN_KNOWN_SECRET = 6  # shorter values ("true", "1234") would wreck ordinary output

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # PEM private keys (RSA, EC, OPENSSH, ENCRYPTED, PGP ...), whole block
    (
        re.compile(
            r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY( BLOCK)?-----.*?-----END ([A-Z0-9 ]*)PRIVATE KEY( BLOCK)?-----",
            re.S,
        ),
        REDACTED,
    ),
    (re.compile(r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY( BLOCK)?-----[^\n]*(\n[A-Za-z0-9+/=:\- ]*)*"), REDACTED),
    # provider and platform keys
    (re.compile(r"\bsk-(?:ant-|proj-|svcacct-)?[A-Za-z0-9_\-]{16,}"), REDACTED),
    (re.compile(r"\bgoclaw_[A-Za-z0-9]{16,}"), REDACTED),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}"), REDACTED),
    (re.compile(r"\bgithub_pat_[A-Za-z0-9_]{22,}"), REDACTED),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"), REDACTED),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{35}"), REDACTED),
    (re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[0-9A-Z]{16}\b"), REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"), REDACTED),
    # Authorization: Bearer/Basic <token>
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=\-]{8,}"), r"\1\2" + REDACTED),
    # user:password@ in connection URLs
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]{1,20}://[^\s:/@]+:)[^\s@/]+@"), r"\1" + REDACTED + "@"),
    # aws_secret_access_key = ..., api_key: "...", PASSWORD=..., GH_TOKEN=... (value: 8+ chars with a letter)
    (
        re.compile(
            r"(?i)\b([A-Za-z0-9_.\-]*?(?:api[_\-]?key|apikey|secret|token|passw(?:or)?d|passwd|credential"
            r"|private[_\-]?key|access[_\-]?key)s?)(\"?\s*[:=]\s*)([\"']?)(?=[^\s\"',;]*[A-Za-z])[^\s\"',;]{8,}"
        ),
        r"\1\2\3" + REDACTED,
    ),
]


def scrub(text: str, known: Iterable[str] = ()) -> str:
    """`text` with credential-shaped substrings and every known secret value replaced."""
    if not text:
        return text
    values = {s for s in known if isinstance(s, str) and len(s) >= MIN_KNOWN_SECRET}
    for secret in sorted(values, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def secret_values(*mappings: dict | None) -> list[str]:
    """The string values of secret maps (env, headers), for `scrub(known=...)`."""
    values: list[str] = []
    for mapping in mappings:
        for value in (mapping or {}).values():
            if isinstance(value, str):
                values.append(value)
                # "Bearer abc..." headers: the token alone may also appear in output
                if " " in value:
                    values.extend(part for part in value.split() if len(part) >= MIN_KNOWN_SECRET)
    return values
