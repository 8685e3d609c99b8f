"""Durable ResourceStore in one SQLite file, the control plane's desired state.

The control plane is the only writer of its file, so the current revision is
cached in memory and watchers are woken in-process after each commit rather
than by polling. Every operation is a short synchronous SQLite call made
directly from the event loop thread: with nothing awaited inside an operation
they cannot interleave, which keeps the revision counter and the wakeups
consistent without a lock. Events are kept in the file, so a watcher that
reconnects after a restart with its last revision still misses nothing.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gossamer.store.base import (
    Compacted,
    EventType,
    NotFound,
    StoredObject,
    WatchEvent,
)
from gossamer.store.common import DEFAULT_HISTORY, Watchable, check_expected, json_text
from gossamer.store.files import private_dir

# Bounds how many events a watcher reads per query.
_BATCH = 256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    revision INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, namespace, name)
);
CREATE TABLE IF NOT EXISTS events (
    revision INTEGER PRIMARY KEY,
    type TEXT NOT NULL,
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('revision', 0);
"""

_Key = tuple[str, str, str]
_Row = tuple[Any, ...]


class SqliteStore(Watchable):
    """ResourceStore in a SQLite file, keeping at most `history` events for watch replay."""

    def __init__(self, path: str, history: int = DEFAULT_HISTORY) -> None:
        if history < 1:
            raise ValueError("history must keep at least one event")
        super().__init__()
        self._history = history
        self._db = _connect(Path(path))
        self._revision = self._load_revision()

    async def get(self, kind: str, namespace: str, name: str) -> StoredObject | None:
        self._check_open()
        row = self._select_object((kind, namespace, name))
        return None if row is None else _object(row)

    async def list(
        self, kind: str | None = None, namespace: str | None = None
    ) -> tuple[list[StoredObject], int]:
        self._check_open()
        where, args = _filters(kind, namespace)
        rows = self._db.execute(
            "SELECT kind, namespace, name, revision, body FROM objects"
            f"{where} ORDER BY kind, namespace, name",
            args,
        ).fetchall()
        return [_object(row) for row in rows], self._revision

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
        encoded = json_text(body)
        with self._transaction():
            current = self._select_object(key)
            check_expected(key, current[3] if current else 0, expected_revision)
            if current is not None and json.loads(current[4]) == json.loads(encoded):
                return _object(current)
            row = (*key, self._revision + 1, encoded)
            self._db.execute("INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?, ?)", row)
            self._record(EventType.PUT, row)
        self._committed(row[3])
        return _object(row)

    async def delete(
        self, kind: str, namespace: str, name: str, expected_revision: int | None = None
    ) -> StoredObject:
        self._check_open()
        key = (kind, namespace, name)
        with self._transaction():
            current = self._select_object(key)
            if current is None:
                raise NotFound(f"{'/'.join(key)} does not exist")
            check_expected(key, current[3], expected_revision)
            self._db.execute(
                "DELETE FROM objects WHERE kind = ? AND namespace = ? AND name = ?", key
            )
            row = (*key, self._revision + 1, current[4])
            self._record(EventType.DELETE, row)
        self._committed(row[3])
        return _object(row)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._db.close()
        self._wake()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _record(self, type_: EventType, row: _Row) -> None:
        """Append the event, advance the persisted counter and trim old history,
        all inside the caller's transaction."""
        kind, namespace, name, revision, body = row
        self._db.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)",
            (revision, type_.value, kind, namespace, name, body),
        )
        self._db.execute("UPDATE meta SET value = ? WHERE key = 'revision'", (revision,))
        self._db.execute("DELETE FROM events WHERE revision <= ?", (revision - self._history,))

    def _committed(self, revision: int) -> None:
        # Only after COMMIT: a rolled-back write must neither advance nor wake anyone.
        self._revision = revision
        self._wake()

    def _events_after(self, cursor: int) -> tuple[WatchEvent, ...]:
        if cursor > self._revision:
            raise Compacted(f"revision {cursor} is ahead of the store ({self._revision})")
        rows = self._db.execute(
            "SELECT revision, type, kind, namespace, name, body FROM events"
            " WHERE revision > ? ORDER BY revision LIMIT ?",
            (cursor, _BATCH),
        ).fetchall()
        # Revisions are contiguous, so any gap after the cursor means compaction.
        if cursor < self._revision and (not rows or rows[0][0] != cursor + 1):
            raise Compacted(f"events after {cursor} are gone from the store")
        return tuple(_event(row) for row in rows)

    def _select_object(self, key: _Key) -> _Row | None:
        row: _Row | None = self._db.execute(
            "SELECT kind, namespace, name, revision, body FROM objects"
            " WHERE kind = ? AND namespace = ? AND name = ?",
            key,
        ).fetchone()
        return row

    def _load_revision(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()
        return int(row[0])

def _connect(path: Path) -> sqlite3.Connection:
    """Open with owner-only permissions: the desired state can include secrets."""
    private_dir(path.parent)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    path.chmod(0o600)
    # isolation_level=None: transactions are explicit, one per operation.
    # check_same_thread=False: the store may be built before the loop thread uses it;
    # it is still only ever used from one thread at a time.
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(_SCHEMA)
    return db


def _filters(kind: str | None, namespace: str | None) -> tuple[str, list[str]]:
    clauses: list[str] = []
    args: list[str] = []
    for column, value in (("kind", kind), ("namespace", namespace)):
        if value is not None:
            clauses.append(f"{column} = ?")
            args.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


def _object(row: _Row) -> StoredObject:
    kind, namespace, name, revision, body = row
    return StoredObject(kind, namespace, name, revision, json.loads(body))


def _event(row: _Row) -> WatchEvent:
    revision, type_, kind, namespace, name, body = row
    return WatchEvent(EventType(type_), revision, _object((kind, namespace, name, revision, body)))
