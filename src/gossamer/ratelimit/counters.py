"""Fixed-window counters behind one small protocol: in memory, or in Redis when
several control-plane replicas must share them (and they must survive a restart).

A counter is named by the caller (rule, key value, window start) and lives until
`expires_ms` (epoch milliseconds), after which it is gone and a new window starts
from zero.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol


class CounterError(Exception):
    """The backend could not count; the caller decides (the service fails open)."""


class Counters(Protocol):
    async def hit(self, key: str, hits: int, expires_ms: int) -> int:
        """Add `hits` to the counter `key` and return its new value."""
        ...

    async def close(self) -> None: ...


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class MemoryCounters:
    """One process's counters: right for a single control plane.

    Expired counters are swept every `sweep_every` hits, so the number of keys
    stays bounded by the traffic of one window; past `max_keys` live counters
    it refuses to count (CounterError) rather than grow without bound.
    """

    def __init__(self, max_keys: int = 1_000_000, sweep_every: int = 4096,
                 clock: Callable[[], int] = now_ms) -> None:
        self._clock = clock
        self._counts: dict[str, tuple[int, int]] = {}
        self._max_keys = max_keys
        self._sweep_every = sweep_every
        self._since_sweep = 0

    def _sweep(self, now: int) -> None:
        self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
        self._since_sweep = 0

    async def hit(self, key: str, hits: int, expires_ms: int) -> int:
        now = self._clock()
        self._since_sweep += 1
        if self._since_sweep >= self._sweep_every or len(self._counts) >= self._max_keys:
            self._sweep(now)
        count, expires = self._counts.get(key, (0, 0))
        if expires <= now:
            count = 0
            if len(self._counts) >= self._max_keys:
                raise CounterError(f"more than {self._max_keys} live rate-limit counters")
        count += hits
        self._counts[key] = (count, expires_ms)
        return count

    async def close(self) -> None:
        self._counts.clear()

