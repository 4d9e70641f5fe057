"""Pagination rules shared by every list: bounded limit, non-negative offset."""

from __future__ import annotations

from gateway.errors import bad_request


def page(limit: int | None, offset: int | None, *, default: int = 50, max_limit: int = 200) -> tuple[int, int]:
    limit = default if limit is None else limit
    offset = 0 if offset is None else offset
    if limit < 1 or limit > max_limit:
        raise bad_request(f"limit must be between 1 and {max_limit}")
    if offset < 0:
        raise bad_request("offset must be >= 0")
    return limit, offset
