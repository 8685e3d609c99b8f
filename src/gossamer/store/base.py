"""The ResourceStore contract every backend honours (see tests/contract).

Theory of operation: the store is a versioned key-value map of documents.
Every successful write (put or delete) takes the next value of one global,
strictly increasing revision counter, and records an event at that revision.
Each stored resource carries the revision of its last write; `put` and
`delete` accept the revision the caller last saw and refuse with `Conflict`
when it is stale (optimistic concurrency). `watch(from_revision)` yields every
event with revision > from_revision in order, then follows new writes live;
events older than what the backend retains raise `Compacted`, and the watcher
relists. Revisions survive restarts in durable backends, so a watcher that
reconnects with its last revision misses nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol, runtime_checkable


class StoreError(Exception):
    """The store edge's one exception type."""


class NotFound(StoreError):
    pass


class Conflict(StoreError):
    """The caller's expected revision is not the stored one (or create of an existing key)."""


class Compacted(StoreError):
    """A watch asked for history the backend no longer keeps; relist and watch again."""


class StoreClosed(StoreError):
    pass


class StoreUnavailable(StoreError):
    """A networked store stayed unreachable for longer than its retry bound."""


class IncompatibleSchema(StoreError):
    """The store's schema was written by a newer Gossamer than this one; upgrade it."""


@dataclass(frozen=True)
class StoredObject:
    kind: str
    namespace: str
    name: str
    revision: int
    # The document as JSON-compatible data, without metadata.resourceVersion.
    body: dict[str, Any]


class EventType(str, Enum):
    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True)
class WatchEvent:
    type: EventType
    revision: int
    # For DELETE: the object as it was, with the revision of the delete.
    object: StoredObject


@runtime_checkable
class ResourceStore(Protocol):
    async def get(self, kind: str, namespace: str, name: str) -> StoredObject | None: ...

    async def list(
        self, kind: str | None = None, namespace: str | None = None
    ) -> tuple[list[StoredObject], int]:
        """Objects (sorted by kind, namespace, name) and the store revision they reflect."""
        ...

    async def put(
        self,
        kind: str,
        namespace: str,
        name: str,
        body: dict[str, Any],
        expected_revision: int | None = None,
    ) -> StoredObject:
        """Create or replace. expected_revision=None: unconditional; 0: must not exist;
        n > 0: must currently be at revision n. A put whose body equals the stored body
        is a no-op that returns the stored object and consumes no revision."""
        ...

    async def delete(
        self, kind: str, namespace: str, name: str, expected_revision: int | None = None
    ) -> StoredObject:
        """Remove and return the deleted object; NotFound if absent."""
        ...

    async def revision(self) -> int: ...

    def watch(self, from_revision: int) -> AsyncIterator[WatchEvent]:
        """Events with revision > from_revision, then live ones, until the store closes.

        When the store closes, iterators already obtained simply end
        (StopAsyncIteration), so `async for` loops exit cleanly; calling watch on a
        closed store raises StoreClosed at once. Compacted is raised while iterating:
        when the history after from_revision is gone, when a slow watcher falls that
        far behind, or when from_revision is ahead of the store (e.g. a non-durable
        store restarted). In every case, relist and watch again."""
        ...

    async def close(self) -> None: ...
