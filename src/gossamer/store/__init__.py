"""Resource stores: the durable desired state, with revisions and watch."""

from gossamer.store.base import (
    Compacted,
    Conflict,
    EventType,
    NotFound,
    ResourceStore,
    StoreClosed,
    StoredObject,
    StoreError,
    WatchEvent,
)

__all__ = [
    "Compacted",
    "Conflict",
    "EventType",
    "NotFound",
    "ResourceStore",
    "StoreClosed",
    "StoreError",
    "StoredObject",
    "WatchEvent",
    "open_store",
]


def open_store(url: str) -> ResourceStore:
    """`memory://` or `sqlite:///path/to/file.db` (a bare path means SQLite)."""
    from gossamer.store.memory import MemoryStore
    from gossamer.store.sqlite import SqliteStore

    if url in ("memory://", "memory"):
        return MemoryStore()
    path = url.removeprefix("sqlite://") if url.startswith("sqlite://") else url
    return SqliteStore(path)
