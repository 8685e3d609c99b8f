"""In-memory ResourceStore, for tests, demos and runs that need no durability.

Every method runs to completion without awaiting, so on one event loop each
operation is atomic and no lock is needed. Watchers do not get per-watcher
queues: each one keeps a revision cursor and reads the shared history after
it, so a watcher can never miss or repeat an event however its replay and
live phases interleave with writes, and a watcher that falls further behind
than the retained history gets `Compacted` instead of unbounded buffering.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from itertools import islice
from typing import Any

from gossamer.store.base import (
    Compacted,
    EventType,
    NotFound,
    StoredObject,
    WatchEvent,
)
from gossamer.store.common import DEFAULT_HISTORY, Watchable, check_expected, json_copy

# Bounds how much history a watcher copies out before handing control back.
_BATCH = 256

_Key = tuple[str, str, str]


class MemoryStore(Watchable):
    """ResourceStore keeping objects and the last `history` events in memory."""

    def __init__(self, history: int = DEFAULT_HISTORY) -> None:
        if history < 1:
            raise ValueError("history must keep at least one event")
        super().__init__()
        self._objects: dict[_Key, StoredObject] = {}
        self._events: deque[WatchEvent] = deque(maxlen=history)

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

    async def close(self) -> None:
        self._closed = True
        self._wake()

    def _record(self, type_: EventType, stored: StoredObject) -> None:
        self._revision = stored.revision
        self._events.append(WatchEvent(type_, stored.revision, stored))
        self._wake()

    def _events_after(self, cursor: int) -> tuple[WatchEvent, ...]:
        if cursor > self._revision:
            raise Compacted(f"revision {cursor} is ahead of the store ({self._revision})")
        first = self._events[0].revision if self._events else self._revision + 1
        start = cursor + 1 - first
        if start < 0:
            raise Compacted(f"events after {cursor} are gone; oldest kept is {first}")
        batch = islice(self._events, start, start + _BATCH)
        return tuple(WatchEvent(e.type, e.revision, _copy(e.object)) for e in batch)

def _copy(stored: StoredObject) -> StoredObject:
    return dataclasses.replace(stored, body=json_copy(stored.body))


def _matches(key: _Key, kind: str | None, namespace: str | None) -> bool:
    return (kind is None or key[0] == kind) and (namespace is None or key[1] == namespace)
