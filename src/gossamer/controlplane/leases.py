"""Expire workloads whose agent stopped renewing them.

An agent that dies without deregistering must not leave a dead endpoint in
EDS forever. Workloads with `ttlSeconds > 0` are deleted when no heartbeat
has arrived within that many seconds. After a control-plane restart every
lease starts fresh, so agents have a full TTL to reconnect.

With several replicas, expiry is a singleton duty: only the leader expires
(`leader`, confirmed right before each delete), and a heartbeat that reached
any replica renews the lease on all of them (controlplane/cluster.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from gossamer.model import ResourceKey, Workload
from gossamer.store import Conflict, NotFound, ResourceStore, StoreError

log = logging.getLogger(__name__)


class Leases:
    def __init__(self, store: ResourceStore) -> None:
        self._store = store
        self._renewed: dict[ResourceKey, float] = {}
        # Told of each heartbeat this replica receives, to tell the others.
        self.broadcast: Callable[[ResourceKey], None] | None = None
        # Whether this replica may expire workloads now (the leader).
        self.leader: Callable[[], Awaitable[bool]] | None = None
        self.expirations = 0  # workloads this replica expired

    def renew(self, key: ResourceKey) -> None:
        self.renewed(key)
        if self.broadcast is not None:
            self.broadcast(key)

    def renewed(self, key: ResourceKey) -> None:
        """A heartbeat, heard here or by another replica."""
        self._renewed[key] = time.monotonic()

    def restart(self) -> None:
        """Every lease starts afresh (heartbeats may have been missed)."""
        self._renewed.clear()

    def forget(self, key: ResourceKey) -> None:
        self._renewed.pop(key, None)

    def expired(self, workloads: tuple[Workload, ...], now: float) -> list[Workload]:
        out = []
        for w in workloads:
            ttl = w.spec.ttl_seconds
            if ttl <= 0:
                continue
            last = self._renewed.setdefault(w.key, now)
            if now - last > ttl:
                out.append(w)
        return out

    async def expire_once(self, workloads: tuple[Workload, ...]) -> list[Workload]:
        gone = self.expired(workloads, time.monotonic())
        for w in gone:
            if self.leader is not None and not await self.leader():
                return []  # another replica leads: it decides
            revision = int(w.metadata.resource_version or 0) or None
            try:
                await self._store.delete(*w.key, expected_revision=revision)
                self.expirations += 1
                log.warning("workload %s expired: no heartbeat for %ss", w.key,
                            w.spec.ttl_seconds)
            except (NotFound, Conflict):
                pass  # renewed or removed meanwhile; the next pass decides again
            self.forget(w.key)
        return gone

    async def run(self, workloads: Callable[[], tuple[Workload, ...]], period: float = 1.0) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                await self.expire_once(workloads())
            except StoreError as exc:  # the store is away: fail static, try next round
                log.error("lease expiry: %s", exc)
