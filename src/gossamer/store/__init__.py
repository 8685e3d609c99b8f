"""Resource stores: the durable desired state, with revisions and watch."""

import sys
from typing import Any

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
    "shared_store",
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


def shared_store(store: object) -> Any:
    """The PostgresStore under `store` (several replicas may share it), or None.
    Looks only if its module is loaded: a process that opened none never loads libpq."""
    module = sys.modules.get("gossamer.store.postgres")
    inner = getattr(store, "inner", store)
    if module is not None and isinstance(inner, module.PostgresStore):
        return inner
    return None
