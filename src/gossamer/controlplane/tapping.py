"""Which sidecars are being tapped: an input of translation that is not in the store.

The tap filter is left out of every request's filter chain until a `gossamer tap`
session of that sidecar runs (translate/listeners.py TAP_OFF): the session turns it on
for its sidecars (an RDS change of their inbound route, no listener drain), waits until
each has ACKed that route, and turns it off again when it ends, however it ends (its
limit, its time, the client gone). Nothing is kept across a restart: the sessions'
admin connections end with the process, so a control plane starts with nothing tapped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from gossamer.xds.status import ProxyStatus
from gossamer.xds.types import ROUTE, Snapshot

log = logging.getLogger(__name__)
# How long a session waits for its sidecars' ACKs before it taps anyway (a sidecar
# that NACKs or hangs is not to block the others; it will simply show no request).
ACK_WAIT = 10.0
_POLL = 0.02


class TapInput(Protocol):
    def tapping(self, node_ids: Sequence[str], running: bool) -> None: ...


class Statuses(Protocol):
    def get(self, node_id: str) -> ProxyStatus | None: ...


class Snapshots(Protocol):
    def get(self, node_id: str) -> Snapshot | None: ...


class TapSwitch:
    def __init__(self, target: TapInput, statuses: Statuses, snapshots: Snapshots,
                 ack_wait: float = ACK_WAIT) -> None:
        self._target = target
        self._statuses = statuses
        self._snapshots = snapshots
        self._ack_wait = ack_wait

    def _acked(self, node_id: str) -> bool:
        """Has the proxy ACKed its current route configs (or is it gone)?"""
        status, snapshot = self._statuses.get(node_id), self._snapshots.get(node_id)
        if status is None or not status.connected or snapshot is None:
            return True  # nothing to wait for
        routes = status.types.get(ROUTE)
        return routes is None or routes.acked_version == snapshot.version(ROUTE)

    @contextlib.asynccontextmanager
    async def tapping(self, node_ids: Sequence[str]) -> AsyncIterator[None]:
        """Tap filters on for these proxies while the block runs; entered once every
        one has ACKed the change (or after `ack_wait`)."""
        self._target.tapping(node_ids, True)
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._ack_wait
            while not all(self._acked(n) for n in node_ids):
                if loop.time() >= deadline:
                    log.warning("tap: not every sidecar ACKed its tapped route in %.0f s",
                                self._ack_wait)
                    break
                await asyncio.sleep(_POLL)
            yield
        finally:
            self._target.tapping(node_ids, False)


@contextlib.asynccontextmanager
async def untracked(node_ids: Sequence[str]) -> AsyncIterator[None]:
    """For an API without a control plane behind it (tests): nothing to switch."""
    yield
