"""What only the PostgreSQL store promises beyond the contract: replicas sharing one
database, watches that survive a lost LISTEN connection or a server restart,
retries that surface as StoreUnavailable, and a versioned schema."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from gossamer.store import (
    Compacted,
    Conflict,
    IncompatibleSchema,
    NotFound,
    StoredObject,
    StoreUnavailable,
    WatchEvent,
    open_store,
)
from gossamer.store.pgschema import SCHEMA_VERSION
from gossamer.store.postgres import PostgresStore
from tests.postgres_server import PostgresServer, postgres_server, postgres_url, started_server

__all__ = ["postgres_server", "postgres_url"]

# Long enough for a loaded CI machine; no test waits for it unless an event is lost.
TIMEOUT = 15.0


class Replicas:
    """PostgresStores on one database, closed after the test."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._opened: list[PostgresStore] = []

    def open(self, **settings: Any) -> PostgresStore:
        store = PostgresStore(self.url, **settings)
        self._opened.append(store)
        return store

    async def close_all(self) -> None:
        for store in self._opened:
            await store.close()


@pytest.fixture
async def replicas(postgres_url: str) -> AsyncIterator[Replicas]:
    made = Replicas(postgres_url)
    yield made
    await made.close_all()


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    """A server this test may stop and start."""
    server = started_server()
    try:
        yield server
    finally:
        server.destroy()


async def take(events: AsyncIterator[WatchEvent], count: int) -> list[WatchEvent]:
    return [await asyncio.wait_for(anext(events), TIMEOUT) for _ in range(count)]


def sql(server: PostgresServer, url: str, statement: str) -> list[tuple[object, ...]]:
    return server.execute(statement, database=conninfo_to_dict(url)["dbname"])


async def test_replicas_see_each_others_writes(replicas: Replicas) -> None:
    first, second = replicas.open(poll=3600.0), replicas.open(poll=3600.0)
    events = second.watch(0)
    await first.put("Service", "default", "web", {"port": 80})
    await second.put("Service", "default", "api", {"port": 81})
    await first.delete("Service", "default", "web")
    seen = await take(events, 3)
    assert [(e.type.value, e.revision, e.object.name) for e in seen] == [
        ("PUT", 1, "web"), ("PUT", 2, "api"), ("DELETE", 3, "web")]
    assert await first.list() == await second.list()


async def test_replicas_racing_on_one_revision_exactly_one_wins(replicas: Replicas) -> None:
    first, second = replicas.open(), replicas.open()
    stored = await first.put("Service", "default", "web", {"round": -1})
    for round_ in range(20):
        results = await asyncio.gather(
            first.put("Service", "default", "web", {"round": round_, "by": 1}, stored.revision),
            second.put("Service", "default", "web", {"round": round_, "by": 2}, stored.revision),
            return_exceptions=True)
        won = [r for r in results if isinstance(r, StoredObject)]
        assert len(won) == 1, results
        assert [type(r) for r in results if not isinstance(r, StoredObject)] == [Conflict]
        stored = won[0]
        assert stored.revision == round_ + 2
        assert await second.get("Service", "default", "web") == stored


async def test_concurrent_writers_commit_in_revision_order(replicas: Replicas) -> None:
    # Revisions taken by concurrent transactions must become visible in order, or a
    # watcher reading `revision > cursor` would skip one that commits late.
    stores = [replicas.open(pool_size=4) for _ in range(2)]
    watcher = replicas.open(poll=3600.0)
    events = watcher.watch(0)
    per_task = 40

    async def writer(store: PostgresStore, task: int) -> None:
        for i in range(per_task):
            await store.put("Workload", "default", f"w{task}-{i % 5}", {"i": i})

    writers = [writer(store, 4 * s + t) for s, store in enumerate(stores) for t in range(4)]
    seen, _ = await asyncio.gather(take(events, 8 * per_task), asyncio.gather(*writers))
    assert [e.revision for e in seen] == list(range(1, 8 * per_task + 1))


async def test_a_dropped_listener_connection_loses_no_event(
        replicas: Replicas, postgres_server: PostgresServer) -> None:
    # No polling: only the listener coming back can bring what was written while it was gone.
    watching, writing = replicas.open(poll=3600.0), replicas.open()
    events = watching.watch(0)
    await writing.put("Service", "default", "web", {"i": 0})
    assert [e.revision for e in await take(events, 1)] == [1]
    pending = asyncio.ensure_future(take(events, 29))
    name = conninfo_to_dict(replicas.url)["dbname"]
    old_pid = await listener_pid(postgres_server, name)
    # Keep it away (new connections refused) while writes go through `writing`'s open one.
    postgres_server.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    postgres_server.execute(f"SELECT pg_terminate_backend({old_pid})")
    for i in range(1, 30):
        await writing.put("Service", "default", "web", {"i": i})
    await asyncio.sleep(0.5)  # the listener retries meanwhile
    assert not pending.done()
    postgres_server.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    assert [e.object.body["i"] for e in await asyncio.wait_for(pending, TIMEOUT)] == list(
        range(1, 30))
    assert await listener_pid(postgres_server, name) != old_pid
    # And it listens again: a later write arrives by its notification.
    pending = asyncio.ensure_future(take(events, 1))
    await asyncio.sleep(0.1)
    await writing.put("Service", "default", "web", {"i": 30})
    assert [e.revision for e in await asyncio.wait_for(pending, TIMEOUT)] == [31]


async def listener_pid(server: PostgresServer, database: str) -> object:
    """The PID of the database's one listening backend, once it is there."""
    query = ("SELECT pid FROM pg_stat_activity WHERE application_name = 'gossamer-watch'"
             f" AND datname = '{database}'")
    for _ in range(int(TIMEOUT / 0.05)):
        if rows := server.execute(query):
            [(pid,)] = rows
            return pid
        await asyncio.sleep(0.05)
    raise AssertionError("no listener connected")


async def test_polling_finds_a_write_whose_notification_went_missing(
        replicas: Replicas, postgres_server: PostgresServer) -> None:
    store = replicas.open(poll=0.2)
    events = store.watch(0)
    await store.put("Service", "default", "web", {"i": 0})
    await take(events, 1)
    # A commit that notifies nobody, as if its notification were lost.
    sql(postgres_server, replicas.url, """
        WITH e AS (INSERT INTO gossamer_events VALUES
                   (2, 'PUT', 'Service', 'default', 'quiet', '{}', gen_random_uuid()))
        UPDATE gossamer_revision SET revision = 2""")
    [event] = await take(events, 1)
    assert (event.revision, event.object.name) == (2, "quiet")


async def test_old_events_are_deleted_in_batches(
        replicas: Replicas, postgres_server: PostgresServer) -> None:
    store = replicas.open(history=10)
    for i in range(250):
        await store.put("Service", "default", "web", {"i": i})
    [(count, oldest)] = sql(postgres_server, replicas.url,
                            "SELECT count(*), min(revision) FROM gossamer_events")
    assert oldest == 191  # trimmed at revision 200, to its last 10
    assert count == 60
    with pytest.raises(Compacted):
        await anext(store.watch(200))  # rows still there, but outside the history
    assert (await anext(store.watch(240))).revision == 241


async def test_a_write_whose_commit_was_not_acknowledged_is_not_applied_twice(
        replicas: Replicas) -> None:
    store = replicas.open()
    first = await store.put("Service", "default", "web", {"v": 1})
    real_run = store._db.run

    async def acknowledgement_lost(operation: Any) -> Any:
        async def commit_then_fail(conn: psycopg.AsyncConnection[Any], attempt: int) -> Any:
            result = await operation(conn, attempt)
            if attempt == 0:  # committed, but the client never heard
                raise psycopg.OperationalError("connection lost after COMMIT")
            return result
        return await real_run(commit_then_fail)

    store._db.run = acknowledgement_lost  # type: ignore[method-assign]
    second = await store.put("Service", "default", "web", {"v": 2}, first.revision)
    assert (second.revision, second.body) == (2, {"v": 2})
    deleted = await store.delete("Service", "default", "web", second.revision)
    assert (deleted.revision, deleted.body) == (3, {"v": 2})
    store._db.run = real_run  # type: ignore[method-assign]
    assert await store.revision() == 3
    assert [e.revision for e in await take(store.watch(0), 3)] == [1, 2, 3]
    with pytest.raises(NotFound):
        await store.delete("Service", "default", "web")


async def test_a_server_restart_fails_writes_then_watchers_resume(
        own_server: PostgresServer) -> None:
    name = own_server.create_database()
    url = own_server.url(name)
    store = PostgresStore(url, retry_for=1.0, poll=3600.0)
    other = None
    try:
        events = store.watch(0)
        await store.put("Service", "default", "web", {"i": 1})
        await take(events, 1)
        pending = asyncio.ensure_future(take(events, 1))  # waiting through the outage
        own_server.stop()
        with pytest.raises(StoreUnavailable) as raised:
            await store.put("Service", "default", "web", {"i": 2})
        assert url in str(raised.value)
        with pytest.raises(StoreUnavailable):
            await store.get("Service", "default", "web")
        own_server.start()
        # Another replica writes: only the watch's reconnected listener can tell us.
        other = PostgresStore(url)
        await other.put("Service", "default", "api", {"i": 3})
        [event] = await asyncio.wait_for(pending, TIMEOUT)
        assert (event.revision, event.object.name) == (2, "api")
        assert (await store.put("Service", "default", "web", {"i": 4})).revision == 3
        assert [e.revision for e in await take(events, 1)] == [3]
    finally:
        await store.close()
        if other is not None:
            await other.close()


async def test_unavailable_names_the_database_without_its_password() -> None:
    url = ("postgresql://gossamer:s3cret@/mesh?host=/nonexistent-gossamer-test"
           "&port=1&password=s3cret2")
    store = PostgresStore(url, retry_for=0.2)
    try:
        with pytest.raises(StoreUnavailable) as raised:
            await store.revision()
    finally:
        await store.close()
    message = str(raised.value)
    assert "s3cret" not in message
    assert "postgresql://gossamer@/mesh?host=/nonexistent-gossamer-test&port=1" in message


async def test_open_store_picks_postgres_for_its_urls(postgres_url: str) -> None:
    for url in (postgres_url, postgres_url.replace("postgresql://", "postgres://", 1)):
        store = open_store(url)
        try:
            assert isinstance(store, PostgresStore)
            await store.put("Service", "default", "web", {"url": url})
        finally:
            await store.close()


async def test_replicas_starting_together_migrate_once(
        replicas: Replicas, postgres_server: PostgresServer) -> None:
    stores = [replicas.open() for _ in range(4)]
    assert await asyncio.gather(*(s.revision() for s in stores)) == [0] * 4
    versions = sql(postgres_server, replicas.url, "SELECT version FROM gossamer_schema")
    assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]


async def test_a_newer_schema_is_refused(
        replicas: Replicas, postgres_server: PostgresServer) -> None:
    await replicas.open().put("Service", "default", "web", {})
    newer = SCHEMA_VERSION + 1
    sql(postgres_server, replicas.url, f"INSERT INTO gossamer_schema VALUES ({newer})")
    store = replicas.open()
    with pytest.raises(IncompatibleSchema, match=f"version {newer}"):
        await store.get("Service", "default", "web")
    with pytest.raises(IncompatibleSchema):
        await store.put("Service", "default", "web", {"x": 1})
