"""ResourceStore in PostgreSQL, shared by every control-plane replica.

Theory of operation. One row, `gossamer_revision`, holds the global revision.
Every write locks it first (`SELECT ... FOR UPDATE`), so writers from every
replica run one at a time: each reads the resource after the previous writer
committed, takes the next revision, records its event and bumps the row in
the same transaction. A revision therefore becomes visible only after all
lower ones, and a watcher that reads `revision > cursor` can never skip one
that commits later (a bare sequence would allow exactly that). Optimistic
concurrency is checked under that lock, so of two replicas putting with the
same expected revision exactly one wins.

Watchers read the events table from their own cursor. They are woken by one
LISTEN connection per store (pgconn.listen), by this store's own commits, and
by a slow poll; a notification is only a wake-up, never the data. The last
`history` revisions are the retained window: older ones raise Compacted whether
or not their rows are gone yet, and rows are deleted in batches every
_COMPACT_EVERY revisions rather than at each write.

A write whose connection drops may or may not have committed. Each write
carries a fresh id stored with its event; a retry first looks for that id,
under the same lock, and returns what the earlier attempt committed instead of
applying the write twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from gossamer.store.base import (
    Compacted,
    EventType,
    NotFound,
    StoreClosed,
    StoredObject,
    StoreUnavailable,
    WatchEvent,
)
from gossamer.store.common import DEFAULT_HISTORY, Watchable, check_expected, json_text
from gossamer.store.pgconn import CHANNEL, Conn, Connections, listen
from gossamer.store.pgschema import migrate

log = logging.getLogger(__name__)
T = TypeVar("T")

# Bounds how many events a watcher reads per query.
_BATCH = 256
# Old events are deleted when the revision is a multiple of this.
_COMPACT_EVERY = 100

_Key = tuple[str, str, str]
_Row = tuple[Any, ...]
_COLUMNS = "kind, namespace, name, revision, body"
_KEY_MATCH = "kind = %s AND namespace = %s AND name = %s"
_UPSERT = (
    f"INSERT INTO gossamer_resources ({_COLUMNS}) VALUES (%(kind)s, %(namespace)s, %(name)s,"
    " %(revision)s, %(body)s) ON CONFLICT (kind, namespace, name)"
    " DO UPDATE SET revision = EXCLUDED.revision, body = EXCLUDED.body"
)
_REMOVE = (
    "DELETE FROM gossamer_resources"
    " WHERE kind = %(kind)s AND namespace = %(namespace)s AND name = %(name)s"
)
# The resource change, its event, the counter, history trimming and the wake-up
# (sent at commit) in one round trip.
_RECORD = (
    "WITH change AS ({change}),"
    " event AS (INSERT INTO gossamer_events (revision, type, kind, namespace, name, body,"
    "  write_id) VALUES (%(revision)s, %(type)s, %(kind)s, %(namespace)s, %(name)s, %(body)s,"
    "  %(write_id)s)),"
    " counter AS (UPDATE gossamer_revision SET revision = %(revision)s WHERE id = 1),"
    " trimmed AS (DELETE FROM gossamer_events WHERE revision <= %(trim_to)s)"
    f" SELECT pg_notify('{CHANNEL}', %(revision)s::text)"
)
# One statement, so one snapshot: the head revision and the events after a cursor.
_EVENTS_AFTER = (
    "SELECT c.revision, e.revision, e.type, e.kind, e.namespace, e.name, e.body"
    " FROM gossamer_revision c LEFT JOIN LATERAL (SELECT * FROM gossamer_events"
    "  WHERE revision > %s ORDER BY revision LIMIT %s) e ON true WHERE c.id = 1"
    " ORDER BY e.revision"
)


class PostgresStore(Watchable):
    """ResourceStore in the PostgreSQL database at `url` (a libpq URL).

    Nothing is opened until the first operation, which creates or upgrades the
    schema. Operations retry connection failures for `retry_for` seconds, then
    raise StoreUnavailable; watchers instead wait for the database to return.
    `history` revisions are kept for watch replay; `poll` is the seconds between
    watcher wake-ups that do not rely on notifications."""

    def __init__(
        self,
        url: str,
        history: int = DEFAULT_HISTORY,
        *,
        retry_for: float = 30.0,
        poll: float = 5.0,
        pool_size: int = 4,
    ) -> None:
        if history < 1:
            raise ValueError("history must keep at least one event")
        super().__init__()
        self.url = url
        self._history = history
        self._poll = poll
        self._db = Connections(url, size=pool_size, retry_for=retry_for, prepare=migrate)
        self._listener: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        """Whether the database answered the last operation (or listener reconnect)."""
        return self._db.available

    async def get(self, kind: str, namespace: str, name: str) -> StoredObject | None:
        row = await self._read(lambda conn: _select_object(conn, (kind, namespace, name)))
        return None if row is None else _object(row)

    async def list(
        self, kind: str | None = None, namespace: str | None = None
    ) -> tuple[list[StoredObject], int]:
        rows = await self._read(lambda conn: _select_listing(conn, kind, namespace))
        head = int(rows[0][0]) if rows else 0
        return [_object(row[1:]) for row in rows if row[1] is not None], head

    async def revision(self) -> int:
        return await self._read(_select_head)

    async def put(
        self,
        kind: str,
        namespace: str,
        name: str,
        body: dict[str, Any],
        expected_revision: int | None = None,
    ) -> StoredObject:
        key = (kind, namespace, name)
        encoded = json_text(body)
        write_id = uuid.uuid4()

        async def attempt(conn: Conn, head: int) -> StoredObject:
            current = await _select_object(conn, key)
            check_expected(key, current[3] if current else 0, expected_revision)
            if current is not None and json.loads(current[4]) == json.loads(encoded):
                return _object(current)
            row = (*key, head + 1, encoded)
            await self._record(conn, _UPSERT, EventType.PUT, row, write_id)
            return _object(row)

        return await self._write(write_id, attempt)

    async def delete(
        self, kind: str, namespace: str, name: str, expected_revision: int | None = None
    ) -> StoredObject:
        key = (kind, namespace, name)
        write_id = uuid.uuid4()

        async def attempt(conn: Conn, head: int) -> StoredObject:
            current = await _select_object(conn, key)
            if current is None:
                raise NotFound(f"{'/'.join(key)} does not exist")
            check_expected(key, current[3], expected_revision)
            row = (*key, head + 1, current[4])
            await self._record(conn, _REMOVE, EventType.DELETE, row, write_id)
            return _object(row)

        return await self._write(write_id, attempt)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await self._db.close()

    async def _read(self, query: Callable[[Conn], Awaitable[T]]) -> T:
        self._check_open()
        return await self._db.run(lambda conn, _attempt: query(conn))

    async def _write(
        self, write_id: uuid.UUID, attempt: Callable[[Conn, int], Awaitable[StoredObject]]
    ) -> StoredObject:
        """Run `attempt(conn, head)` in a transaction holding the revision lock;
        on a retry, first return what an earlier attempt may have committed."""
        self._check_open()

        async def transaction(conn: Conn, number: int) -> StoredObject:
            async with conn.transaction():
                cursor = await conn.execute(
                    "SELECT revision FROM gossamer_revision WHERE id = 1 FOR UPDATE")
                head = int((await cursor.fetchone() or (0,))[0])
                earlier = await _committed_write(conn, write_id) if number else None
                written = earlier or await attempt(conn, head)
            if written.revision > head:
                self._wake()  # local watchers need not wait for the notification
            return written

        return await self._db.run(transaction)

    async def _record(
        self, conn: Conn, change: str, type_: EventType, row: _Row, write_id: uuid.UUID
    ) -> None:
        kind, namespace, name, revision, body = row
        trim = revision - self._history if revision % _COMPACT_EVERY == 0 else 0
        await conn.execute(_RECORD.format(change=change), {
            "kind": kind, "namespace": namespace, "name": name, "revision": revision,
            "body": body, "type": type_.value, "write_id": write_id, "trim_to": trim,
        })

    def _start_listener(self) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(
                listen(self._db, self._wake, self._poll), name="postgres-store-listen")

    async def _follow(self, cursor: int) -> AsyncIterator[WatchEvent]:
        self._start_listener()
        while not self._closed:
            # Taken before reading so a commit after the read still wakes us.
            wakeup = self._wakeup
            try:
                batch = await self._read_after(cursor)
            except StoreClosed:
                return
            except StoreUnavailable as exc:
                # Watchers outlast outages: the listener wakes them when it is back.
                log.warning("watch waits for the store: %s", exc)
                batch = ()
            for event in batch:
                if self._closed:
                    return
                yield event
                cursor = event.revision
            if not batch:
                await wakeup.wait()

    async def _read_after(self, cursor: int) -> tuple[WatchEvent, ...]:
        rows = await self._read(lambda conn: _select_events(conn, cursor))
        head = int(rows[0][0]) if rows else 0
        events = tuple(_event(row[1:]) for row in rows if row[1] is not None)
        if cursor > head:
            raise Compacted(f"revision {cursor} is ahead of the store ({head})")
        # Revisions are contiguous, so any gap after the cursor means compaction.
        gone = cursor < head and (not events or events[0].revision != cursor + 1)
        if gone or cursor < head - self._history:
            raise Compacted(f"events after {cursor} are gone from the store")
        return events


async def _select_head(conn: Conn) -> int:
    cursor = await conn.execute("SELECT revision FROM gossamer_revision WHERE id = 1")
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def _select_object(conn: Conn, key: _Key) -> _Row | None:
    cursor = await conn.execute(
        f"SELECT {_COLUMNS} FROM gossamer_resources WHERE {_KEY_MATCH}", key)
    row: _Row | None = await cursor.fetchone()
    return row


async def _select_listing(conn: Conn, kind: str | None, namespace: str | None) -> list[_Row]:
    """Rows of (head revision, resource columns...), one snapshot; a single row of
    NULL resource columns when nothing matches."""
    clauses = [f"r.{column} = %s" for column, value in
               (("kind", kind), ("namespace", namespace)) if value is not None]
    args = [value for value in (kind, namespace) if value is not None]
    match = " AND ".join(["true", *clauses])
    cursor = await conn.execute(
        "SELECT c.revision, r.kind, r.namespace, r.name, r.revision, r.body"
        f" FROM gossamer_revision c LEFT JOIN gossamer_resources r ON {match}"
        " WHERE c.id = 1 ORDER BY r.kind, r.namespace, r.name", args)
    return await cursor.fetchall()


async def _select_events(conn: Conn, cursor: int) -> list[_Row]:
    result = await conn.execute(_EVENTS_AFTER, (cursor, _BATCH))
    return await result.fetchall()


async def _committed_write(conn: Conn, write_id: uuid.UUID) -> StoredObject | None:
    """What an earlier attempt of this write committed, if it did."""
    cursor = await conn.execute(
        "SELECT revision, type, kind, namespace, name, body FROM gossamer_events"
        " WHERE write_id = %s", (write_id,))
    row = await cursor.fetchone()
    return None if row is None else _event(row).object


def _object(row: _Row) -> StoredObject:
    kind, namespace, name, revision, body = row
    return StoredObject(kind, namespace, name, int(revision), json.loads(body))


def _event(row: _Row) -> WatchEvent:
    revision, type_, kind, namespace, name, body = row
    stored = _object((kind, namespace, name, revision, body))
    return WatchEvent(EventType(type_), stored.revision, stored)
