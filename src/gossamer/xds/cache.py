"""The snapshot cache: what each proxy (by node id) should have right now.

Theory of operation: one entry per node id holds the current `Snapshot` and a
generation number. Every real change (a set whose per-type versions differ from
the stored ones, or a remove) takes the next value of a cache-wide counter, so
generations never repeat, even across remove and re-add. Streams `watch` a
node: the cache calls each watcher synchronously on every change, and a
watcher only takes note (the xDS server's stream inbox queues a "changed"
marker), so a push to a thousand proxies is a thousand cheap calls and no
task or event per stream. Setting a snapshot whose versions equal the stored
ones changes nothing and calls nobody: versions are content hashes, so
equal versions mean equal bytes. An entry without a snapshot is kept only
while someone watches it.

The cache holds references, never copies: snapshots and their resources are
immutable and shared with every stream of the node. Use it from the event
loop's thread (no locks).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from gossamer.xds.coverage import same_demand
from gossamer.xds.types import Snapshot

Watcher = Callable[[], None]


@dataclass(eq=False, slots=True)
class _Entry:
    snapshot: Snapshot | None = None
    generation: int = 0
    watchers: list[Watcher] = field(default_factory=list)


def _same_versions(a: Snapshot, b: Snapshot) -> bool:
    """Equal versions, and equal on-demand rules: a rule may change with no version
    (a route starts mirroring to a cluster a sidecar holds on demand: it must now
    be sent up front, and the cluster itself is unchanged)."""
    if a is b:
        return True
    if a.on_demand is not b.on_demand and (
            a.on_demand.keys() != b.on_demand.keys()
            or not all(same_demand(a.on_demand[t], b.on_demand[t]) for t in a.on_demand)):
        return False
    if a.versions == b.versions:
        return True
    if a.versions.keys() == b.versions.keys():
        return False  # the same types, some version differs: every push's case
    # A type one of them lacks counts as empty.
    types = set(a.versions) | set(b.versions)
    return all(a.version(t) == b.version(t) for t in types)


class SnapshotCache:
    """Snapshots by node id, with change notification for the streams of each node."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._counter = itertools.count(1)

    def set(self, node_id: str, snapshot: Snapshot) -> None:
        """Store the node's snapshot. If its versions equal the stored ones, keep the
        stored object and wake nobody (`generation` tells whether it changed)."""
        entry = self._entries.get(node_id)
        if entry is None:
            entry = self._entries[node_id] = _Entry()
        elif entry.snapshot is not None and _same_versions(entry.snapshot, snapshot):
            return
        entry.snapshot = snapshot
        self._bump(entry)

    def get(self, node_id: str) -> Snapshot | None:
        entry = self._entries.get(node_id)
        return entry.snapshot if entry is not None else None

    def remove(self, node_id: str) -> bool:
        """Forget the node's snapshot. Streams of the node are woken and see `get() is None`."""
        entry = self._entries.get(node_id)
        if entry is None or entry.snapshot is None:
            return False
        entry.snapshot = None
        self._bump(entry)
        if not entry.watchers:
            del self._entries[node_id]
        return True

    def node_ids(self) -> list[str]:
        """Node ids that currently have a snapshot, sorted."""
        return sorted(n for n, e in self._entries.items() if e.snapshot is not None)

    def generation(self, node_id: str) -> int:
        """The node's current generation (0: never had a snapshot while anyone looked)."""
        entry = self._entries.get(node_id)
        return entry.generation if entry is not None else 0

    def watch(self, node_id: str, watcher: Watcher) -> Callable[[], None]:
        """Call `watcher()` on every change of the node's snapshot, until the
        returned function is called. It runs inside `set`/`remove`: it must
        be quick and must not raise."""
        entry = self._entries.get(node_id)
        if entry is None:
            entry = self._entries[node_id] = _Entry()
        entry.watchers.append(watcher)

        def unwatch() -> None:
            try:
                entry.watchers.remove(watcher)
            except ValueError:
                return  # already unwatched
            if (not entry.watchers and entry.snapshot is None
                    and self._entries.get(node_id) is entry):
                del self._entries[node_id]
        return unwatch

    def __len__(self) -> int:
        return sum(1 for e in self._entries.values() if e.snapshot is not None)

    def __contains__(self, node_id: object) -> bool:
        entry = self._entries.get(node_id) if isinstance(node_id, str) else None
        return entry is not None and entry.snapshot is not None

    def _bump(self, entry: _Entry) -> None:
        entry.generation = next(self._counter)
        for watcher in tuple(entry.watchers):
            watcher()
