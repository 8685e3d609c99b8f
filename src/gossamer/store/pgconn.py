"""Connections to the PostgreSQL store's database, and riding out their loss.

Theory of operation: a few connections are kept open and lent to one operation
at a time; one that broke or is left inside a transaction is closed instead of
returned. An operation that fails for a connection-level reason (psycopg's
OperationalError: the server went away, restarted, refused a connection, or
aborted the transaction) is run again on a fresh connection with exponential
backoff, for at most `retry_for` seconds; then it raises one StoreUnavailable
naming the database without its password. The operation is told which attempt
it is, so a write can first check whether an earlier attempt, whose commit
outcome the lost connection hid, did commit (see PostgresStore).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from gossamer.store.base import StoreClosed, StoreError, StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
Conn = AsyncConnection[Any]

# libpq settings applied unless the URL sets them: bounded connects, and TCP
# keepalives so a vanished server (not just a closed socket) is noticed.
_DEFAULTS = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
}
# Every write notifies this channel (in its transaction, so at its commit).
CHANNEL = "gossamer_events"
_FIRST_DELAY = 0.05
_MAX_DELAY = 2.0


class Connections:
    """At most `size` connections to `url`, opened on demand; `prepare` runs once
    on the first connection (the schema migration) before any operation."""

    def __init__(
        self,
        url: str,
        *,
        size: int = 4,
        retry_for: float = 30.0,
        prepare: Callable[[Conn], Awaitable[object]] | None = None,
    ) -> None:
        self.display = redact(url)
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise StoreError(f"invalid PostgreSQL URL {self.display}: {exc}") from exc
        self._params: dict[str, Any] = {**_DEFAULTS, **params}
        self.retry_for = retry_for
        self._prepare = prepare
        self._prepared = False
        self._prepare_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(size)
        self._idle: list[Conn] = []
        self._closed = asyncio.Event()
        # Whether the last operation or listener (re)connect reached the database:
        # what `gossamer check` reports, without a query of its own.
        self.available = True

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def connect(self, role: str = "") -> Conn:
        """A new connection, named for pg_stat_activity: `gossamer` (or the URL's
        application_name) plus the role, e.g. `gossamer-watch` for the listener."""
        name = str(self._params.get("application_name", "gossamer")) + role
        conn = await AsyncConnection.connect(
            autocommit=True, **{**self._params, "application_name": name})
        try:
            # A client that died inside a transaction must not hold the global write
            # lock (the revision row) until TCP notices: the server ends it instead.
            await conn.execute("SET idle_in_transaction_session_timeout = '30s'")
        except BaseException:
            await conn.close()
            raise
        return conn

    async def run(self, operation: Callable[[Conn, int], Awaitable[T]]) -> T:
        """`operation(connection, attempt)`, retried on connection-level failures."""
        deadline = time.monotonic() + self.retry_for
        delay = _FIRST_DELAY
        attempt = 0
        while True:
            try:
                async with self._lend() as conn:
                    await self._prepare_once(conn)
                    result = await operation(conn, attempt)
                self.available = True
                return result
            except psycopg.OperationalError as exc:
                self.available = False
                if self._closed.is_set():
                    raise StoreClosed("store is closed") from exc
                if time.monotonic() + delay > deadline:
                    raise StoreUnavailable(
                        f"PostgreSQL store {self.display} unavailable for"
                        f" {self.retry_for:g}s: {exc}"
                    ) from exc
                log.warning("PostgreSQL store %s: %s; retrying", self.display, exc)
            except psycopg.Error as exc:
                raise StoreError(f"PostgreSQL store {self.display}: {exc}") from exc
            await self.pause(delay)
            delay = min(delay * 2, _MAX_DELAY)
            attempt += 1

    async def pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the store closes."""
        with suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), seconds)

    async def close(self) -> None:
        self._closed.set()
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()

    async def _prepare_once(self, conn: Conn) -> None:
        if self._prepared or self._prepare is None:
            return
        async with self._prepare_lock:
            if not self._prepared:
                await self._prepare(conn)
                self._prepared = True

    @asynccontextmanager
    async def _lend(self) -> AsyncIterator[Conn]:
        async with self._slots:
            if self._closed.is_set():
                raise StoreClosed("store is closed")
            conn = self._idle.pop() if self._idle else await self.connect()
            try:
                yield conn
            finally:
                reusable = (
                    not conn.closed
                    and not self._closed.is_set()
                    and conn.info.transaction_status == TransactionStatus.IDLE
                )
                if reusable:
                    self._idle.append(conn)
                else:
                    await conn.close()


async def listen(connections: Connections, wake: Callable[[], None], poll: float) -> None:
    """Wake the store's watchers at every NOTIFY on CHANNEL, and every `poll`
    seconds in case one went missing; runs until cancelled or the store closes.

    A notification carries no data: it only says "read the events table again".
    So when this connection drops, nothing is lost: once it listens again it
    wakes every watcher, and each reads on from its own last revision."""
    delay = _FIRST_DELAY
    while not connections.closed:
        try:
            conn = await connections.connect("-watch")
            try:
                await conn.execute(f"LISTEN {CHANNEL}")
                connections.available = True
                delay = _FIRST_DELAY
                wake()  # whatever committed while nobody listened
                while not connections.closed:
                    async for _ in conn.notifies(timeout=poll):
                        wake()
                    wake()
            finally:
                await conn.close()
        except psycopg.Error as exc:
            connections.available = False
            log.warning("PostgreSQL store %s: watch connection lost (%s); reconnecting",
                        connections.display, exc)
        await connections.pause(delay)
        delay = min(delay * 2, _MAX_DELAY)


def redact(url: str) -> str:
    """The URL as the operator wrote it, less any password (in userinfo or query)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        return "(a libpq connection string)"
    userinfo, at, hosts = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    netloc = f"{user}{at}{hosts}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                       if k != "password"], safe="/,")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
