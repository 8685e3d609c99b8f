"""Resource stores: the durable desired state, with revisions and watch."""

from gossamer.store.base import (
    Compacted,
    Conflict,
    EventType,
    IncompatibleSchema,
    NotFound,
    ResourceStore,
    StoreClosed,
    StoredObject,
    StoreError,
    StoreUnavailable,
    WatchEvent,
)

__all__ = [
    "Compacted",
    "Conflict",
    "EventType",
    "IncompatibleSchema",
    "NotFound",
    "ResourceStore",
    "StoreClosed",
    "StoreError",
    "StoreUnavailable",
    "StoredObject",
    "WatchEvent",
    "open_store",
]


def open_store(url: str) -> ResourceStore:
    """`memory://`, `sqlite:///path/to/file.db` (a bare path means SQLite) or
    `postgresql://user@host/db` (also `postgres://`; any libpq URL parameter)."""
    from gossamer.store.memory import MemoryStore
    from gossamer.store.sqlite import SqliteStore

    if url in ("memory://", "memory"):
        return MemoryStore()
    if url.startswith(("postgresql://", "postgres://")):
        # Imported only here: psycopg loads libpq, which SQLite users never need.
        from gossamer.store.postgres import PostgresStore

        return PostgresStore(url)
    path = url.removeprefix("sqlite://") if url.startswith("sqlite://") else url
    return SqliteStore(path)
