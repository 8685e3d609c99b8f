"""Leader election on a `coordination.k8s.io/v1` Lease, as client-go's leaderelection.

Every replica runs the controller (all of them feed their own store from the
watches), but only the leader writes status back, so replicas never fight over an
object's conditions. A holder renews every `renew` seconds. Another replica takes
the Lease over once it has seen the same record, unchanged, for `duration` seconds
of its own clock (clocks of different machines are never compared). Writes carry
the Lease's resourceVersion, so of two replicas taking over at once one gets 409
and stays a follower. A replica that stops releases the Lease, so hand-over is at
once rather than after `duration`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from gossamer.k8s.client import KubeApi, KubeError

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, api: KubeApi, namespace: str, name: str, identity: str, *,
                 duration: float = 15.0, renew: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.api = api
        self.namespace, self.name, self.identity = namespace, name, identity
        self.duration, self.renew = duration, renew
        self._clock = clock
        self._leading_until = 0.0
        # The other holder's record as last seen, and when it was first seen so.
        self._seen: tuple[Any, ...] | None = None
        self._seen_at = 0.0
        self.changed = asyncio.Event()

    @property
    def leading(self) -> bool:
        """Only while the last successful renewal is younger than the lease: a leader
        cut off from the API server stops writing before another may start."""
        return self._clock() < self._leading_until

    async def run(self) -> None:
        """Renew or acquire every `renew` seconds; the owner calls release() at stop."""
        while True:
            try:
                await self.try_acquire()
            except KubeError as exc:
                log.warning("leader election: %s", exc)
            await asyncio.sleep(self.renew)

    async def try_acquire(self) -> bool:
        """One round: create, renew or take over the Lease; True when leading after it."""
        was = self.leading
        lease = await self.api.get_lease(self.namespace, self.name)
        now = self._clock()
        spec = (lease or {}).get("spec") or {}
        holder = spec.get("holderIdentity")
        if lease is not None and holder and holder != self.identity:
            record = (holder, spec.get("renewTime"), spec.get("leaseTransitions"))
            if record != self._seen:
                self._seen, self._seen_at = record, now
            if now - self._seen_at < float(spec.get("leaseDurationSeconds") or self.duration):
                self._leading_until = 0.0
                self._note(was)
                return False
        try:
            await self.api.write_lease(self._record(lease, holder))
        except KubeError as exc:
            if exc.code != 409:
                raise
            self._leading_until = 0.0  # another replica wrote first
        else:
            self._leading_until = now + self.duration
        self._note(was)
        return self.leading

    def _record(self, lease: dict[str, Any] | None, holder: str | None) -> dict[str, Any]:
        spec = dict((lease or {}).get("spec") or {})
        if holder != self.identity:
            spec["acquireTime"] = _now()
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (
                1 if holder else 0)
        spec.update(holderIdentity=self.identity, renewTime=_now(),
                    leaseDurationSeconds=int(self.duration))
        meta = {"name": self.name, "namespace": self.namespace}
        if lease is not None:
            meta["resourceVersion"] = lease["metadata"]["resourceVersion"]
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                "spec": spec}

    def _note(self, was: bool) -> None:
        if was != self.leading:
            log.warning("leader election: %s %s Lease %s/%s", self.identity,
                        "holds" if self.leading else "lost", self.namespace, self.name)
            self.changed.set()

    async def release(self) -> None:
        """Give the Lease up (holder cleared) so another replica takes it at once."""
        if not self.leading:
            return
        self._leading_until = 0.0
        try:
            lease = await self.api.get_lease(self.namespace, self.name)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"]["holderIdentity"] = None
            await self.api.write_lease(lease)
        except KubeError as exc:
            log.warning("leader election: could not release the Lease: %s", exc)
