"""Time-ordered UUIDs (version 7), generated in process so write-behind rows can be referenced
before they are written."""

from __future__ import annotations

import os
import time
import uuid

_RANDOM_CHUNK = 4096  # bytes read from the OS at a time: one syscall per ~400 ids, not one per id
_random = b""
_offset = 0


def _random_bits() -> int:
    """80 bits from os.urandom, read in chunks."""
    global _random, _offset
    if _offset + 10 > len(_random):
        _random, _offset = os.urandom(_RANDOM_CHUNK), 0
    start, _offset = _offset, _offset + 10
    return int.from_bytes(_random[start:_offset], "big")


def _forget_after_fork() -> None:
    """A forked child must not hand out the same random bits as its parent."""
    global _random, _offset
    _random, _offset = b"", 0


os.register_at_fork(after_in_child=_forget_after_fork)


def uuid7() -> uuid.UUID:
    ms = time.time_ns() // 1_000_000
    rand = _random_bits()
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62 | (rand & ((1 << 62) - 1))
    return uuid.UUID(int=value)
