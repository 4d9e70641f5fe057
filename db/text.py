"""What PostgreSQL can store as text: no U+0000, and (UTF-8) no lone surrogate such as JSON's
`\\ud800`. Request input and write-behind rows both replace them with U+FFFD (documented in
README), by this one rule."""

from __future__ import annotations

import re
import typing as t

REPLACEMENT = "\ufffd"
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def replace_nul(value: t.Any) -> t.Any:
    """`value` (a string, or lists and dicts of them) with U+0000 and lone surrogates replaced."""
    if isinstance(value, str):
        return UNSTORABLE.sub(REPLACEMENT, value) if UNSTORABLE.search(value) else value
    if isinstance(value, dict):
        return {replace_nul(k): replace_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [replace_nul(v) for v in value]
    return value


def storable(value: t.Any) -> t.Any:
    """A database parameter as PostgreSQL can store it: as `replace_nul`, and for text already
    encoded as JSON (jsonb refuses even the `\\u0000` escape) that escape too."""
    if isinstance(value, str):
        return replace_nul(value).replace("\\u0000", "\\ufffd")
    return value
