"""The last failed requests the sidecars reported, bounded in memory.

Both ends of a mesh hop log a failed request (the caller's sidecar, outbound; the
callee's, inbound) under one `x-request-id`, which Envoy sets at the first sidecar
and the next keeps. `hops` gathers them so an explanation sees the whole request:
where it failed and what the other side saw. Pure bookkeeping, one thread.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from gossamer.explain.records import LoggedRequest

DEFAULT_CAPACITY = 5000


@dataclass(frozen=True)
class Query:
    """Which failures: all fields optional, each narrows."""

    namespace: str | None = None
    service: str | None = None  # either end of the hop
    request_id: str | None = None
    status: int | None = None
    path_prefix: str | None = None


def _service_of(entry: LoggedRequest) -> set[str]:
    names = {entry.reporter.service}
    authority = entry.authority.split(":", 1)[0]
    if authority:
        names.add(authority.split(".", 1)[0])
    cluster = entry.upstream_cluster  # outbound|PORT||SVC.NS
    if cluster.startswith("outbound|"):
        names.add(cluster.rsplit("|", 1)[-1].split(".", 1)[0])
    if entry.listener_service is not None:  # called on a local upstream port
        names.add(entry.listener_service[1])
    return names


def failed(entry: LoggedRequest) -> bool:
    return entry.status == 0 or entry.status >= 400


def matches(entry: LoggedRequest, q: Query) -> bool:
    if q.request_id is not None and entry.request_id != q.request_id:
        return False
    if q.status is not None and entry.status != q.status:
        return False
    if q.path_prefix is not None and not entry.path.startswith(q.path_prefix):
        return False
    if q.namespace is not None and entry.reporter.namespace != q.namespace:
        return False
    return q.service is None or q.service in _service_of(entry)


class RecentFailures:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._entries: deque[LoggedRequest] = deque(maxlen=capacity)

    def add(self, entries: Iterable[LoggedRequest]) -> None:
        self._entries.extend(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def find(self, q: Query, limit: int = 50) -> list[LoggedRequest]:
        """The newest first."""
        out: list[LoggedRequest] = []
        for entry in reversed(self._entries):
            if matches(entry, q):
                out.append(entry)
                if len(out) >= limit:
                    break
        return out

    def newest_failure(self, q: Query) -> LoggedRequest | None:
        """The newest match that failed (status >= 400, or none sent); else the newest
        match at all (a success with a response flag, such as an injected delay)."""
        found = self.find(q, limit=200)
        return next((e for e in found if failed(e)), found[0] if found else None)

    def hops(self, request_id: str) -> list[LoggedRequest]:
        """Every entry of one request, oldest first."""
        if not request_id:
            return []
        return sorted((e for e in self._entries if e.request_id == request_id),
                      key=lambda e: (e.start_time, e.direction == "inbound"))
