"""In-memory ResourceStore, for tests, demos and runs that need no durability.

Every method runs to completion without awaiting, so on one event loop each
operation is atomic and no lock is needed. Watchers do not get per-watcher
queues: each one keeps a revision cursor and reads the shared history after
it, so a watcher can never miss or repeat an event however its replay and
live phases interleave with writes, and a watcher that falls further behind
than the retained history gets `Compacted` instead of unbounded buffering.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import deque
from collections.abc import AsyncIterator
from itertools import islice
from typing import Any

from gossamer.store.base import (
    Compacted,
    Conflict,
    EventType,
    NotFound,
    StoreClosed,
    StoredObject,
    WatchEvent,
)

DEFAULT_HISTORY = 10_000
# Bounds how much history a watcher copies out before handing control back.
_BATCH = 256

_Key = tuple[str, str, str]


class MemoryStore:
    """ResourceStore keeping objects and the last `history` events in memory."""

    def __init__(self, history: int = DEFAULT_HISTORY) -> None:
        if history < 1:
            raise ValueError("history must keep at least one event")
        self._objects: dict[_Key, StoredObject] = {}
        self._events: deque[WatchEvent] = deque(maxlen=history)
        self._revision = 0
        self._closed = False
        self._wakeup = asyncio.Event()

    async def get(self, kind: str, namespace: str, name: str) -> StoredObject | None:
        self._check_open()
        found = self._objects.get((kind, namespace, name))
        return None if found is None else _copy(found)

    async def list(
        self, kind: str | None = None, namespace: str | None = None
    ) -> tuple[list[StoredObject], int]:
        self._check_open()
        keys = sorted(k for k in self._objects if _matches(k, kind, namespace))
        return [_copy(self._objects[k]) for k in keys], self._revision

    async def put(
        self,
        kind: str,
        namespace: str,
        name: str,
        body: dict[str, Any],
        expected_revision: int | None = None,
    ) -> StoredObject:
        self._check_open()
        key = (kind, namespace, name)
        current = self._objects.get(key)
        check_expected(key, current.revision if current else 0, expected_revision)
        clean = json_copy(body)
        if current is not None and current.body == clean:
            return _copy(current)
        stored = StoredObject(kind, namespace, name, self._revision + 1, clean)
        self._objects[key] = stored
        self._record(EventType.PUT, stored)
        return _copy(stored)

    async def delete(
        self, kind: str, namespace: str, name: str, expected_revision: int | None = None
    ) -> StoredObject:
        self._check_open()
        key = (kind, namespace, name)
        current = self._objects.get(key)
        if current is None:
            raise NotFound(f"{'/'.join(key)} does not exist")
        check_expected(key, current.revision, expected_revision)
        del self._objects[key]
        gone = dataclasses.replace(current, revision=self._revision + 1)
        self._record(EventType.DELETE, gone)
        return _copy(gone)

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
                yield WatchEvent(event.type, event.revision, _copy(event.object))
                cursor = event.revision
            if not batch:
                await wakeup.wait()

    async def close(self) -> None:
        self._closed = True
        self._wake()

    def _record(self, type_: EventType, stored: StoredObject) -> None:
        self._revision = stored.revision
        self._events.append(WatchEvent(type_, stored.revision, stored))
        self._wake()

    def _wake(self) -> None:
        self._wakeup.set()
        self._wakeup = asyncio.Event()

    def _events_after(self, cursor: int) -> tuple[WatchEvent, ...]:
        if cursor > self._revision:
            raise Compacted(f"revision {cursor} is ahead of the store ({self._revision})")
        first = self._events[0].revision if self._events else self._revision + 1
        start = cursor + 1 - first
        if start < 0:
            raise Compacted(f"events after {cursor} are gone; oldest kept is {first}")
        return tuple(islice(self._events, start, start + _BATCH))

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("store is closed")


def check_expected(key: _Key, current: int, expected: int | None) -> None:
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


def _copy(stored: StoredObject) -> StoredObject:
    return dataclasses.replace(stored, body=json_copy(stored.body))


def _matches(key: _Key, kind: str | None, namespace: str | None) -> bool:
    return (kind is None or key[0] == kind) and (namespace is None or key[1] == namespace)
