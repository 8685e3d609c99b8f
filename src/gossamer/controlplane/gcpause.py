"""Keep the garbage collector's full collections off the propagation path.

CPython's full (generation 2) collection walks every object the collector
tracks, and the event loop stands still meanwhile. A control plane serving a
thousand sidecars tracks a few hundred thousand: ~100k from its imports alone
(a 65 ms walk here), plus the store, the index, the translated mesh and every
proxy's config. Each rebuild replaces part of that, and once the survivors
since the last full collection reach a quarter of the rest, the interpreter
starts another: a 100-150 ms stop, every few builds, in the middle of pushes.

Theory of operation: after every build, after each connecting proxy's first
config, and once after startup, everything alive is moved to the permanent
generation (`gc.freeze`, O(1)). The index, the mesh and the configs are
long-lived, and what a later build drops is freed by reference counting, frozen
or not. (Freezing after builds only was not enough: a thousand proxies
connecting after a restart, with no build in between, left their state to
full collections of 100-150 ms.) The collections the interpreter starts then
walk only what was made since the last freeze, which is little. What the freeze
cannot do is reclaim reference cycles that became garbage while frozen, so every
`full_every` seconds, between builds, the freeze is lifted and one full
collection runs: one long pause per period, in a quiet moment, rather than one
every few builds.

Every collection's pause is on `/metrics` as `gossamer_gc_pause_seconds`.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

FULL_EVERY_S = 600.0


class GcPauses:
    def __init__(self, registry: CollectorRegistry | None = None,
                 full_every: float = FULL_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pauses = Histogram(
            "gossamer_gc_pause_seconds",
            "garbage-collector pauses of the control plane's event loop, by generation",
            ["generation"], registry=registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0))
        self.full_every = full_every
        self.full_collections = 0  # the periodic ones (`settled`)
        self._clock = clock
        self._last_full = clock()
        self._started = 0.0

    def install(self) -> None:
        """Record pauses, and freeze what startup left (modules, the first mesh)."""
        gc.callbacks.append(self._on_gc)
        gc.freeze()

    def uninstall(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        gc.unfreeze()

    def settled(self) -> None:
        """A build, or a proxy's first config, has been published: freeze what it
        made, or, once per period, reclaim what the freeze kept from the collector
        first."""
        if self._clock() - self._last_full >= self.full_every:
            gc.unfreeze()
            gc.collect()
            self.full_collections += 1
            self._last_full = self._clock()
        gc.freeze()

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.labels(str(info["generation"])).observe(
                time.perf_counter() - self._started)
