"""The send window shared by every stream of an xDS server: how many responses,
and how many of their bytes, may be in flight at once.

Why bytes as well as a count: a push's responses are assembled only once their
stream holds a place in the window, so the window is what bounds the memory a
push to thousands of proxies takes. A count alone must be small enough for the
biggest responses (a whole mesh's clusters at initial sync), and then an
endpoint change of 300 bytes to a thousand streams went 32 writes at a time,
each stream past the 32nd waiting for another's write to complete. With a byte
budget small responses all go out in one pass, and big ones still queue.

FIFO: a waiter is admitted only after those before it, so a big response is not
starved by a stream of small ones. A response bigger than the whole budget goes
alone. Event-loop thread only.
"""

from __future__ import annotations

import asyncio
from collections import deque


class SendWindow:
    """At most `max_items` responses and `max_bytes` bytes in flight (see above)."""

    __slots__ = ("_bytes", "_items", "_waiters", "max_bytes", "max_items")

    def __init__(self, max_items: int, max_bytes: int) -> None:
        if max_items < 1 or max_bytes < 1:
            raise ValueError("a send window needs room for at least one response")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items = 0
        self._bytes = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def _fits(self, size: int) -> bool:
        return self._items == 0 or (self._items < self.max_items
                                    and self._bytes + size <= self.max_bytes)

    async def acquire(self, size: int) -> None:
        if not self._waiters and self._fits(size):
            self._take(size)
            return
        waiter = asyncio.get_running_loop().create_future()
        entry = (size, waiter)
        self._waiters.append(entry)
        try:
            await waiter  # `_wake` has taken our place for us
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(size)  # admitted, then cancelled before running
            else:
                self._waiters.remove(entry)
                self._wake()  # we may have been the head that blocked the rest
            raise

    def release(self, size: int) -> None:
        self._items -= 1
        self._bytes -= size
        self._wake()

    def _take(self, size: int) -> None:
        self._items += 1
        self._bytes += size

    def _wake(self) -> None:
        while self._waiters and self._fits(self._waiters[0][0]):
            size, waiter = self._waiters.popleft()
            self._take(size)
            waiter.set_result(None)
