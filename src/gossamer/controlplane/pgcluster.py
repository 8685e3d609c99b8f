"""Leader election and heartbeat sharing among replicas on one PostgreSQL database
(how and why: controlplane/cluster.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import psycopg

from gossamer.model import ResourceKey
from gossamer.store.base import StoreError
from gossamer.store.pgconn import Conn, Connections

log = logging.getLogger(__name__)

# The leader lock: any constant unique to Gossamer, not the migration lock's.
LEADER_LOCK = (0x676F_7373_616D_6572 >> 1) - 1
HEARTBEATS = "gossamer_heartbeats"
_HELD = ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
         " AND pid = pg_backend_pid() AND ((classid::bigint << 32) | objid::bigint) = %s")
_KEEPALIVES = ("SET tcp_keepalives_idle = 5", "SET tcp_keepalives_interval = 2",
               "SET tcp_keepalives_count = 3")


class PostgresCluster:
    def __init__(self, url: str, *, retry: float = 1.0, ping: float = 1.0,
                 ping_timeout: float = 2.0, flush: float = 0.2) -> None:
        self._db = Connections(url, size=1, retry_for=ping_timeout)
        self._retry = retry
        self._ping = ping
        self._ping_timeout = ping_timeout
        self._flush = flush
        self._lock_conn: Conn | None = None
        self._leading = False
        self._pending: set[str] = set()
        self._pending_ready = asyncio.Event()
        self.elections = 0  # times this replica became the leader

    @property
    def is_leader(self) -> bool:
        return self._leading

    async def confirm(self) -> bool:
        conn = self._lock_conn
        if not self._leading or conn is None:
            return False
        try:
            held = await asyncio.wait_for(_holds(conn), self._ping_timeout)
        except (psycopg.Error, TimeoutError) as exc:
            self._stand_down(f"cannot confirm the leader lock: {exc!r}")
            return False
        if not held:
            self._stand_down("the leader lock is no longer held")
        return held

    def heartbeat(self, key: ResourceKey) -> None:
        self._pending.add(f"{key.namespace}/{key.name}")
        self._pending_ready.set()

    async def run(self, renew: Callable[[ResourceKey], None],
                  restart: Callable[[], None]) -> None:
        tasks = [asyncio.create_task(self._lead(restart), name="leader"),
                 asyncio.create_task(self._listen(renew, restart), name="heartbeats-in"),
                 asyncio.create_task(self._send(), name="heartbeats-out")]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def close(self) -> None:
        self._leading = False
        await self._db.close()

    def _stand_down(self, why: str) -> None:
        if self._leading:
            log.warning("no longer the leader: %s", why)
        self._leading = False

    async def _lead(self, restart: Callable[[], None]) -> None:
        while not self._db.closed:
            try:
                conn = await self._db.connect("-leader")
                self._lock_conn = conn
                try:
                    for statement in _KEEPALIVES:
                        await conn.execute(statement)
                    await self._hold(conn, restart)
                finally:
                    self._stand_down("the leader connection closed")
                    self._lock_conn = None
                    await conn.close()
            except (psycopg.Error, OSError, TimeoutError) as exc:
                self._stand_down(str(exc))
                log.warning("leader election: %s; retrying", exc)
            await self._db.pause(self._retry)

    async def _hold(self, conn: Conn, restart: Callable[[], None]) -> None:
        """Try for the lock until it is ours, then keep checking we hold it."""
        while not self._db.closed:
            if not self._leading:
                cursor = await asyncio.wait_for(
                    conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,)),
                    self._ping_timeout)
                row = await cursor.fetchone()
                if row is not None and row[0]:
                    self._leading = True
                    self.elections += 1
                    restart()  # heartbeats sent to the old leader were not seen here
                    log.warning("this replica is now the leader (singleton duties)")
                await self._db.pause(self._ping if self._leading else self._retry)
                continue
            if not await asyncio.wait_for(_holds(conn), self._ping_timeout):
                raise psycopg.OperationalError("the leader lock was lost")
            await self._db.pause(self._ping)

    async def _send(self) -> None:
        while not self._db.closed:
            await self._pending_ready.wait()
            await asyncio.sleep(self._flush)  # one round trip for a burst
            self._pending_ready.clear()
            batch, self._pending = sorted(self._pending), set()
            try:
                await self._db.run(_notify(batch))
            except StoreError as exc:  # a lost batch only delays renewals: leases outlast it
                log.warning("could not share %d heartbeat(s): %s", len(batch), exc)

    async def _listen(self, renew: Callable[[ResourceKey], None],
                      restart: Callable[[], None]) -> None:
        while not self._db.closed:
            try:
                conn = await self._db.connect("-heartbeats")
                try:
                    await conn.execute(f"LISTEN {HEARTBEATS}")
                    restart()  # whatever was said while nobody listened
                    async for note in conn.notifies():
                        namespace, _, name = note.payload.partition("/")
                        renew(ResourceKey("Workload", namespace, name))
                finally:
                    await conn.close()
            except (psycopg.Error, OSError) as exc:
                log.warning("heartbeat listener: %s; reconnecting", exc)
            await self._db.pause(self._retry)


def _notify(batch: list[str]) -> Callable[[Conn, int], Awaitable[object]]:
    async def send(conn: Conn, _attempt: int) -> object:
        return await conn.execute("SELECT pg_notify(%s, k) FROM unnest(%s::text[]) k",
                                  (HEARTBEATS, batch))
    return send


async def _holds(conn: Conn) -> bool:
    cursor = await conn.execute(_HELD, (LEADER_LOCK,))
    row = await cursor.fetchone()
    return bool(row and row[0])
