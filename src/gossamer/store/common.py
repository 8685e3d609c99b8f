"""What every backend shares: revision preconditions, body copies, and the
watch loop (replay history after a cursor, then sleep until the next write)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from gossamer.store.base import Conflict, StoreClosed, WatchEvent

DEFAULT_HISTORY = 10_000
Key = tuple[str, str, str]


def check_expected(key: Key, current: int, expected: int | None) -> None:
    """Enforce optimistic concurrency; `current` is 0 when the key is absent."""
    if expected is None or expected == current:
        return
    if expected < 0:
        raise ValueError("expected_revision must be None or >= 0")
    stored = f"revision {current}" if current else "absent"
    raise Conflict(f"{'/'.join(key)}: expected revision {expected}, but it is {stored}")


def json_copy(body: dict[str, Any]) -> dict[str, Any]:
    """A JSON round trip both detaches the copy from the caller and rejects what a
    durable backend could not store, so every backend accepts the same bodies."""
    copied: dict[str, Any] = json.loads(json.dumps(body, allow_nan=False))
    return copied


def json_text(body: dict[str, Any]) -> str:
    """The compact JSON text durable backends store (NaN refused, as json_copy does)."""
    return json.dumps(body, allow_nan=False, separators=(",", ":"))


class Watchable:
    """Backends provide `_events_after(cursor)` (a batch of events with
    revision > cursor, or Compacted) and call `_wake()` after each commit."""

    def __init__(self) -> None:
        self._revision = 0
        self._closed = False
        self._wakeup = asyncio.Event()

    def _events_after(self, cursor: int) -> tuple[WatchEvent, ...]:
        raise NotImplementedError

    def _wake(self) -> None:
        self._wakeup.set()
        self._wakeup = asyncio.Event()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("store is closed")

    async def revision(self) -> int:
        self._check_open()
        return self._revision

    def watch(self, from_revision: int) -> AsyncIterator[WatchEvent]:
        self._check_open()
        if from_revision < 0:
            raise ValueError("from_revision must be >= 0")
        return self._follow(from_revision)

    async def _follow(self, cursor: int) -> AsyncIterator[WatchEvent]:
        while not self._closed:
            # Taken before reading history so a write after the read still wakes us.
            wakeup = self._wakeup
            batch = self._events_after(cursor)
            for event in batch:
                if self._closed:
                    return
                yield event
                cursor = event.revision
            if not batch:
                await wakeup.wait()
