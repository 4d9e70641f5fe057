"""domain.cache.TTLCache.get_or_load: one load per key however many requests miss at once."""

from __future__ import annotations

import asyncio

import pytest

from domain.cache import TTLCache


def test_concurrent_misses_share_one_load():
    async def scenario():
        cache, calls = TTLCache(ttl=60), []

        async def load():
            calls.append(1)
            await asyncio.sleep(0.01)
            return {"value": 1}

        results = await asyncio.gather(*(cache.get_or_load("k", load) for _ in range(20)))
        return calls, results, cache.get("k")

    calls, results, cached = asyncio.run(scenario())
    assert len(calls) == 1
    assert all(r is results[0] for r in results) and cached is results[0]


def test_a_failed_load_reaches_every_waiter_and_is_not_cached():
    async def scenario():
        cache = TTLCache(ttl=60)

        async def load():
            await asyncio.sleep(0.01)
            raise LookupError("no such agent")

        outcomes = await asyncio.gather(*(cache.get_or_load("k", load) for _ in range(3)), return_exceptions=True)
        return outcomes, cache.get("k")

    outcomes, cached = asyncio.run(scenario())
    assert all(isinstance(o, LookupError) for o in outcomes) and cached is None


def test_a_load_begun_before_a_clear_is_returned_but_not_kept():
    async def scenario():
        cache = TTLCache(ttl=60)

        async def load():
            await asyncio.sleep(0.02)
            return "stale"

        pending = asyncio.create_task(cache.get_or_load("k", load))
        await asyncio.sleep(0.005)
        cache.clear()  # e.g. the agent changed while it was being read
        return await pending, cache.get("k")

    assert asyncio.run(scenario()) == ("stale", None)


def test_a_cancelled_waiter_does_not_cancel_the_load_for_the_others():
    async def scenario():
        cache = TTLCache(ttl=60)

        async def load():
            await asyncio.sleep(0.02)
            return "fresh"

        first = asyncio.create_task(cache.get_or_load("k", load))
        second = asyncio.create_task(cache.get_or_load("k", load))
        await asyncio.sleep(0.005)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        return await second, cache.get("k")

    assert asyncio.run(scenario()) == ("fresh", "fresh")
