"""What control-plane replicas sharing one store agree on: which one runs the
singleton duties (the leader), and which workloads sent a heartbeat to any of them.

Theory of operation (PostgreSQL). Leadership is a session-level advisory lock,
held on a connection of its own. Every replica tries to take it every `retry`
seconds; the one that holds it is the leader and checks every `ping` seconds that
its session still holds it (a query on pg_locks, bounded by `ping_timeout`), and
once more right before each duty acts (`confirm`). A leader that cannot confirm
stands down at once. The lock goes with the session: when a leader's process
dies, its socket closes, PostgreSQL ends the session, and another replica takes
the lock at its next try (within `retry`). When a leader's host or network is
lost instead, the server notices through the TCP keepalives this session sets
(5 s idle, then 3 probes 2 s apart: about 11 s), while the old leader's own
pings have timed out after `ping_timeout`, so it stood down before anyone took
over. Duties write conditionally (expected revisions) in any case, so an action
taken twice at a handover is refused the second time.

Heartbeats reach one replica, but lease expiry runs on the leader: each replica
NOTIFYs the workloads it heard from (batched every `flush` seconds) and every
replica renews them on hearing it. A notification lost while a listener
reconnects could expire a live workload, so after every (re)connect, and on
becoming leader, every lease starts afresh, as after a restart.

One replica (SQLite, memory) is always the leader, and heartbeats stay local.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from gossamer.model import ResourceKey


class Cluster(Protocol):
    @property
    def is_leader(self) -> bool: ...

    async def confirm(self) -> bool:
        """Whether this replica still leads, checked now: call right before a duty acts."""
        ...

    def heartbeat(self, key: ResourceKey) -> None:
        """Tell every replica this workload's agent is alive."""
        ...

    async def run(self, renew: Callable[[ResourceKey], None],
                  restart: Callable[[], None]) -> None:
        """Follow leadership and heartbeats until cancelled: `renew` a workload heard of
        elsewhere; `restart` every lease when heartbeats may have been missed."""
        ...

    async def close(self) -> None: ...


class SingleReplica:
    """The only replica: always the leader."""

    is_leader = True

    async def confirm(self) -> bool:
        return True

    def heartbeat(self, key: ResourceKey) -> None:
        pass

    async def run(self, renew: Callable[[ResourceKey], None],
                  restart: Callable[[], None]) -> None:
        await asyncio.Event().wait()

    async def close(self) -> None:
        pass
