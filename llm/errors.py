"""The one error type every adapter raises, so callers handle upstream
failures the same way whatever the provider."""

from __future__ import annotations

import json

_MAX_MESSAGE = 500


class UpstreamError(Exception):
    """An upstream call failed.

    `status` is the HTTP status (None for network/protocol failures),
    `message` the upstream's own reason, `retry_after` the delay it asked for
    in seconds. `retryable` records whether the retry policy considers the
    failure transient (useful to callers deciding on a fallback provider).
    """

    def __init__(
        self,
        status: int | None,
        message: str,
        retry_after: float | None = None,
        *,
        retryable: bool = False,
    ) -> None:
        self.status = status
        self.message = message
        self.retry_after = retry_after
        self.retryable = retryable
        prefix = f"upstream {status}: " if status is not None else "upstream: "
        super().__init__(prefix + message)


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer (or stopped sending) within the timeout."""


def message_from_body(body: bytes | str, fallback: str) -> str:
    """Pull the human-readable reason out of an error body.

    All three wire formats nest it as `{"error": {"message": ...}}`; anything
    else is returned as (trimmed) text so no detail is lost.
    """
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = text.strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:_MAX_MESSAGE] or fallback
    if isinstance(data, list) and data:  # Gemini sometimes wraps errors in a list
        data = data[0]
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, str) and err:
            return err[:_MAX_MESSAGE]
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail")
            if isinstance(msg, str) and msg:
                return msg[:_MAX_MESSAGE]
    return text[:_MAX_MESSAGE] or fallback


def redact(text: str, secret: str | None) -> str:
    """Remove an API key from text that may be logged or shown to users."""
    if secret and len(secret) >= 4:
        return text.replace(secret, "***")
    return text
