"""Wire shapes of protocol v3: `req` in, `res` and `event` out (see README "WebSocket RPC")."""

from __future__ import annotations

import json
from typing import Any

from connexion.jsonifier import JSONEncoder

from gateway.errors import ApiError, bad_request

PROTOCOL = 3
SERVER_NAME = "goclaw"

# The reference's error codes (pkg/protocol/errors.go); clients treat unknown codes as failures.
INVALID_REQUEST = "INVALID_REQUEST"
UNAUTHORIZED = "UNAUTHORIZED"
NOT_FOUND = "NOT_FOUND"
INTERNAL = "INTERNAL"
UNAVAILABLE = "UNAVAILABLE"
ALREADY_EXISTS = "ALREADY_EXISTS"
FAILED_PRECONDITION = "FAILED_PRECONDITION"
RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
AGENT_TIMEOUT = "AGENT_TIMEOUT"

_encoder = JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def encode(frame: dict[str, Any]) -> str:
    """One frame as JSON text (datetimes ISO 8601, decimals as numbers, UUIDs as strings — as HTTP)."""
    return _encoder.encode(frame)


def response(req_id: str, payload: Any = None) -> str:
    frame: dict[str, Any] = {"type": "res", "id": req_id, "ok": True}
    if payload is not None:
        frame["payload"] = payload
    return encode(frame)


def error_response(req_id: str, code: str, message: str, *, retry_after_ms: int | None = None) -> str:
    error: dict[str, Any] = {"code": code, "message": message}
    if retry_after_ms is not None:
        error["retryable"] = True
        error["retryAfterMs"] = retry_after_ms
    return encode({"type": "res", "id": req_id, "ok": False, "error": error})


def event(name: str, payload: Any = None) -> str:
    frame: dict[str, Any] = {"type": "event", "event": name}
    if payload is not None:
        frame["payload"] = payload
    return encode(frame)


def error_code(exc: ApiError) -> str:
    """HTTP status of a domain error → the reference's code."""
    status = exc.status
    if status == 401 or status == 403:
        return UNAUTHORIZED  # the reference answers "role too low" with UNAUTHORIZED as well
    if status == 404:
        return NOT_FOUND
    if status == 409:
        return ALREADY_EXISTS if exc.key == "error.already_exists" else FAILED_PRECONDITION
    if status == 429:
        return RESOURCE_EXHAUSTED
    if status == 504:
        return AGENT_TIMEOUT
    if status in (502, 503):
        return UNAVAILABLE
    if status >= 500:
        return INTERNAL
    return INVALID_REQUEST


def retry_after_ms(exc: ApiError) -> int | None:
    if exc.status == 503:
        return 1000
    raw = exc.headers.get("Retry-After")
    if exc.status == 429 and raw and raw.isdigit():
        return int(raw) * 1000
    return None


def decode(raw: str | bytes) -> Any:
    """Parse one inbound message (text or binary, both JSON). Raises ValueError (also for JSON
    nested deeper than HTTP bodies may be, which would otherwise end in a RecursionError)."""
    from gateway.validation import MAX_JSON_DEPTH, too_deep

    try:
        frame = json.loads(raw)
    except RecursionError:
        raise ValueError("invalid JSON: nested too deeply") from None
    if too_deep(frame):
        raise ValueError(f"invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels")
    return frame


def text_param(params: dict, name: str, *, required: bool = False, limit: int = 500) -> str | None:
    """A string parameter of a request: None when absent or empty (400 if required), 400 when it
    is not a string or longer than `limit`."""
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise ApiError(400, "error.required", name)
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise bad_request(f"{name} must be a string of at most {limit} characters")
    return value
