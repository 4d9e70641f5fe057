"""A small in-process TTL cache (bounded), for lookups on the request path that a bus event
invalidates (agents, providers), loading each missing key once however many requests ask."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any


class TTLCache:
    def __init__(self, ttl: float, maxsize: int = 4096) -> None:
        self.ttl = ttl
        self.maxsize = maxsize
        self._data: OrderedDict[Any, tuple[float, Any]] = OrderedDict()
        self._loading: dict[Any, asyncio.Task] = {}
        self._generation = 0  # bumped by clear(): a load begun before a change is not kept

    def get(self, key: Any) -> Any | None:
        hit = self._data.get(key)
        if hit is None:
            return None
        if hit[0] < time.monotonic():
            self._data.pop(key, None)
            return None
        return hit[1]

    def set(self, key: Any, value: Any) -> None:
        self._data[key] = (time.monotonic() + self.ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    async def get_or_load(self, key: Any, load: Callable[[], Awaitable[Any]]) -> Any:
        """The cached value, or what `load()` returns, with one load per key at a time: requests
        that miss while it runs wait for the same result (at 32 concurrent requests an expiring
        entry used to mean 32 identical rebuilds). The load runs in its own task, so a waiter
        that gives up (cancelled) does not cancel it for the others."""
        value = self.get(key)
        if value is not None:
            return value
        task = self._loading.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(load())
            self._loading[key] = task
            generation = self._generation
            task.add_done_callback(lambda done: self._loaded(key, done, generation))
        return await asyncio.shield(task)

    def _loaded(self, key: Any, task: asyncio.Task, generation: int) -> None:
        if self._loading.get(key) is task:
            del self._loading[key]
        if not task.cancelled() and task.exception() is None and generation == self._generation:
            self.set(key, task.result())

    def clear(self, _event: object = None) -> None:
        self._data.clear()
        self._loading.clear()
        self._generation += 1
