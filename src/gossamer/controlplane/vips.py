"""The virtual IP allocator: a control-plane task that keeps the stored table
(virtualips/table.py) in step with the Services in the store.

Theory of operation: it follows the store's watch, and after a Service (or the
table itself) changes it re-reads the table, then lists the Services, computes
the new table (a pure function of the two) and writes it only if it differs,
with the revision it read as a precondition. A `Conflict` means another
control-plane replica on the same store wrote the table in between: re-read,
recompute, retry. Reading the table before the Services matters: a table that
already holds a Service's address was written after that Service existed, so
the listing that follows includes it and no live address is dropped.

With several replicas, allocation is a singleton duty: only the leader writes
the table (`leader`, confirmed before each sync); a new leader syncs at once
(`poke`). Conditional writes keep a handover from writing twice.

The reconciler reads the table like any stored document, so each Service's
address reaches the mesh index (`status.virtualIP`) and the capturing sidecars'
DNS and capture listeners.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from gossamer.model.service import check_virtual_ip
from gossamer.store import Compacted, Conflict, ResourceStore, StoreUnavailable
from gossamer.virtualips.external import external_key
from gossamer.virtualips.table import (
    TABLE_KIND,
    TABLE_NAME,
    TABLE_NAMESPACE,
    Allocation,
    allocate,
    load_table,
)

log = logging.getLogger(__name__)
# Writes lost to other replicas in a row before one sync gives up (until the next
# change): replicas converge after one round each, so this is never reached.
MAX_ATTEMPTS = 100


def _wildcard(body: dict[str, Any]) -> bool:
    """An ExternalService of wildcard hosts needs no address (it has no DNS name)."""
    spec = body.get("spec")
    hosts = spec.get("hosts") if isinstance(spec, dict) else None
    return isinstance(hosts, list) and any(
        isinstance(h, str) and h.startswith("*.") for h in hosts)


def _explicit(body: dict[str, Any]) -> str | None:
    spec = body.get("spec")
    value = spec.get("virtualIP") if isinstance(spec, dict) else None
    if not isinstance(value, str):
        return None
    try:
        return check_virtual_ip(value)
    except ValueError:
        return None  # stored before it was checked; apply refuses it now


class VipAllocator:
    def __init__(self, store: ResourceStore, vip_range: ipaddress.IPv4Network,
                 debounce: float = 0.01) -> None:
        self._store = store
        self._range = vip_range
        self._debounce = debounce
        self._dirty = asyncio.Event()
        self.writes = 0  # tables written
        self.conflicts = 0  # writes another replica won
        # Whether this replica may write the table now (the leader); None: always.
        self.leader: Callable[[], Awaitable[bool]] | None = None

    def poke(self) -> None:
        """Sync soon (this replica just became the leader)."""
        self._dirty.set()

    async def sync_once(self) -> Allocation | None:
        """Bring the stored table up to date; the table as stored afterwards."""
        for _ in range(MAX_ATTEMPTS):
            stored = await self._store.get(TABLE_KIND, TABLE_NAMESPACE, TABLE_NAME)
            current = Allocation.of(load_table(stored.body)) if stored is not None else None
            services, _ = await self._store.list("Service")
            explicit = {(o.namespace, o.name): _explicit(o.body) for o in services}
            externals, _ = await self._store.list("ExternalService")
            explicit.update({external_key(o.namespace, o.name): _explicit(o.body)
                             for o in externals if not _wildcard(o.body)})
            new = allocate(current, explicit, self._range)
            if new == current:
                return current
            try:
                await self._store.put(TABLE_KIND, TABLE_NAMESPACE, TABLE_NAME, new.document(),
                                      expected_revision=stored.revision if stored else 0)
            except Conflict:
                self.conflicts += 1
                continue
            self.writes += 1
            if new.exhausted:
                log.error("virtual IP range %s is full: %d Service(s) have no address",
                          new.range, len(new.exhausted))
            return new
        log.error("virtual IPs: lost %d writes in a row to other replicas; retrying at the "
                  "next change", MAX_ATTEMPTS)
        return None

    async def _follow(self) -> None:
        revision = await self._store.revision()
        self._dirty.set()
        while True:
            try:
                async for event in self._store.watch(revision):
                    revision = event.revision
                    if event.object.kind in ("Service", "ExternalService", TABLE_KIND):
                        self._dirty.set()
                return
            except Compacted:
                revision = await self._store.revision()
                self._dirty.set()

    async def run(self) -> None:
        """Until the store closes (its watch ends) or the task is cancelled."""
        follower = asyncio.create_task(self._follow())
        try:
            while not follower.done():
                waiter = asyncio.create_task(self._dirty.wait())
                await asyncio.wait([waiter, follower], return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if not self._dirty.is_set():
                    continue
                await asyncio.sleep(self._debounce)  # one sync for a burst of applies
                self._dirty.clear()
                if self.leader is not None and not await self.leader():
                    continue  # the leader syncs
                try:
                    await self.sync_once()
                except StoreUnavailable as exc:  # the database is away: try again later
                    log.error("virtual IPs: %s", exc)
                    await asyncio.sleep(1.0)
                    self._dirty.set()
            follower.result()
        finally:
            follower.cancel()
