"""The inbox of one xDS stream: what its main loop must handle next.

Theory of operation: three producers, one consumer.

- The stream's reader task `put`s each request the client sends, in arrival
  order, and `END` when the client is gone. Once `limit` requests wait, `put`
  waits for the loop to take one, so a client that floods requests is read
  no faster than the loop handles them.
- The snapshot cache calls `mark_changed` (synchronously, from whoever set
  the snapshot) when the node's snapshot changes. It queues one `CHANGED`
  marker behind the requests already waiting; further changes before the
  loop takes the marker coalesce into it, since the loop reads the cache's
  latest snapshot when it gets there. It never waits, so a push never blocks
  on a slow stream.
- The server calls `mark_revoked` when the credentials the stream was opened
  with are revoked: a `REVOKED` marker, queued at once (never waits), that
  the loop answers by ending the stream.
- The main loop `get`s items one at a time.

It stands in for an `asyncio.Queue`, a watcher task per stream and two
`asyncio.Event`s (~5 KB a stream, most of it in their empty deques); with a
thousand proxies connected the control plane keeps a thousand of these.
Event-loop thread only: no locks.
"""

from __future__ import annotations

import asyncio
from typing import Final


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


CHANGED: Final = _Marker("CHANGED")  # the node's snapshot changed since the loop last looked
END: Final = _Marker("END")  # the client's side of the stream is over
REVOKED: Final = _Marker("REVOKED")  # the stream's credentials were revoked: end it


class StreamInbox:
    """Requests in arrival order, with at most one pending `CHANGED` among them."""

    __slots__ = ("_changed_queued", "_getter", "_items", "_limit", "_putter")

    def __init__(self, limit: int = 64) -> None:
        self._items: list[object] = []
        self._limit = limit
        self._changed_queued = False
        self._getter: asyncio.Future[None] | None = None
        self._putter: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, item: object) -> None:
        """Queue a request (or `END`); waits while `limit` requests are waiting
        (a queued `CHANGED` does not count)."""
        while len(self._items) - self._changed_queued >= self._limit:
            self._putter = asyncio.get_running_loop().create_future()
            try:
                await self._putter
            finally:
                self._putter = None
        self._items.append(item)
        self._wake_getter()

    def mark_changed(self) -> None:
        """Note that the snapshot changed; coalesces with a marker not yet taken."""
        if not self._changed_queued:
            self._changed_queued = True
            self._items.append(CHANGED)
            self._wake_getter()

    def mark_revoked(self) -> None:
        """Ask the loop to end the stream; never waits, like `mark_changed`."""
        self._items.append(REVOKED)
        self._wake_getter()

    async def get(self) -> object:
        """The next item, waiting for one."""
        while not self._items:
            self._getter = asyncio.get_running_loop().create_future()
            try:
                await self._getter
            finally:
                self._getter = None
        item = self._items.pop(0)
        if item is CHANGED:
            self._changed_queued = False
        if self._putter is not None and not self._putter.done():
            self._putter.set_result(None)
        return item

    def _wake_getter(self) -> None:
        if self._getter is not None and not self._getter.done():
            self._getter.set_result(None)
