"""Model prices (USD per million tokens) and the cost of one LLM call.

Defaults cover common models; operators override or extend them with GOCLAW_PRICING (a JSON
object) or GOCLAW_PRICING_FILE (a JSON file), shaped `{"<model>": {"input": 3.0, "output": 15.0,
"cache_read": 0.3}}`. A model name matches an entry exactly, else by the longest entry it starts
with (so dated variants price like their family). Unknown models cost 0."""

from __future__ import annotations

import json
import os
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from llm import Usage

DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "gpt-4o-mini": {"input": 0.15, "output": 0.60, "cache_read": 0.075},
    "gpt-4o": {"input": 2.50, "output": 10.00, "cache_read": 1.25},
    "gpt-4.1-mini": {"input": 0.40, "output": 1.60, "cache_read": 0.10},
    "gpt-4.1": {"input": 2.00, "output": 8.00, "cache_read": 0.50},
    "o3-mini": {"input": 1.10, "output": 4.40, "cache_read": 0.55},
    "claude-sonnet-4": {"input": 3.00, "output": 15.00, "cache_read": 0.30},
    "claude-3-5-haiku": {"input": 0.80, "output": 4.00, "cache_read": 0.08},
    "claude-opus-4": {"input": 15.00, "output": 75.00, "cache_read": 1.50},
    "gemini-2.0-flash": {"input": 0.10, "output": 0.40, "cache_read": 0.025},
    "gemini-2.5-pro": {"input": 1.25, "output": 10.00, "cache_read": 0.31},
    "deepseek-chat": {"input": 0.27, "output": 1.10, "cache_read": 0.07},
    "llama-3.3-70b-versatile": {"input": 0.59, "output": 0.79},
    "mistral-large-latest": {"input": 2.00, "output": 6.00},
    "grok-3-mini": {"input": 0.30, "output": 0.50},
}
MILLION = Decimal(1_000_000)
EIGHT_PLACES = Decimal("0.00000001")


@lru_cache(maxsize=1)
def price_table() -> dict[str, dict[str, float]]:
    table = dict(DEFAULT_PRICES)
    path = os.environ.get("GOCLAW_PRICING_FILE")
    if path:
        table.update(json.loads(Path(path).read_text()))
    inline = os.environ.get("GOCLAW_PRICING")
    if inline:
        table.update(json.loads(inline))
    return table


@lru_cache(maxsize=1024)
def price_for(model: str) -> dict[str, float] | None:
    table = price_table()
    if model in table:
        return table[model]
    candidates = [name for name in table if model.startswith(name)]
    return table[max(candidates, key=len)] if candidates else None


@lru_cache(maxsize=1024)
def _decimal_prices(model: str) -> tuple[Decimal, Decimal, Decimal] | None:
    """(input, cache read, output) as Decimals, converted once per model."""
    price = price_for(model)
    if price is None:
        return None
    return (Decimal(str(price.get("input", 0))), Decimal(str(price.get("cache_read", price.get("input", 0)))),
            Decimal(str(price.get("output", 0))))


def cost(model: str, usage: Usage) -> Decimal:
    """USD for one call; cached prompt tokens are billed at the cache-read price when known."""
    prices = _decimal_prices(model)
    if prices is None:
        return Decimal(0)
    input_price, cache_read_price, output_price = prices
    cached = min(usage.cache_read_tokens, usage.input_tokens)
    fresh = usage.input_tokens - cached
    total = (Decimal(fresh) * input_price + Decimal(cached) * cache_read_price
             + Decimal(usage.output_tokens) * output_price)
    return (total / MILLION).quantize(EIGHT_PLACES)
