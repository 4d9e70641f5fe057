"""Per-credential token buckets for chat requests.

Limits are per process: with N gateway processes behind a balancer a credential can reach N×
the configured rate (stated in README). Idle buckets are forgotten after ten minutes."""

from __future__ import annotations

import math
import time

from auth import Principal
from gateway.errors import ApiError

IDLE_SECONDS = 600.0


class RateLimiter:
    def __init__(self, per_minute: int, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = max(1, burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # key → (tokens, last refill time)
        self._last_sweep = time.monotonic()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def check(self, key: str) -> None:
        """Take one token for `key` or raise 429 with Retry-After (whole seconds)."""
        if not self.enabled:
            return
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens < 1.0:
            wait = math.ceil((1.0 - tokens) / self.rate)
            self._buckets[key] = (tokens, now)
            raise ApiError(429, "error.rate_limit", headers={"Retry-After": str(max(1, wait))})
        self._buckets[key] = (tokens - 1.0, now)
        if now - self._last_sweep > IDLE_SECONDS:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        self._last_sweep = now
        for key, (_, last) in list(self._buckets.items()):
            if now - last > IDLE_SECONDS:
                del self._buckets[key]


def credential_key(principal: Principal) -> str:
    """Who a limit applies to: the API key, else the gateway token holder per user, else the IP."""
    if principal.key_id:
        return f"key:{principal.key_id}"
    if principal.kind == "gateway_token":
        return f"token:{principal.user_id}"
    return f"ip:{principal.ip}"
