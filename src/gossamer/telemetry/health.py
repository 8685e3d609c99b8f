"""The control plane's own health gauges on its `/metrics` (beside the xDS counters)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Gauge


def register_health(registry: CollectorRegistry, connected: Callable[[], int],
                    revision: Callable[[], int]) -> None:
    """Gauges read at scrape time, so they never go stale between changes."""
    Gauge("gossamer_connected_proxies", "proxies with an open xDS stream",
          registry=registry).set_function(lambda: float(connected()))
    Gauge("gossamer_store_revision", "store revision the mesh index was built from",
          registry=registry).set_function(lambda: float(revision()))


def register_replica(registry: CollectorRegistry,
                     replica: Callable[[], dict[str, Any]]) -> None:
    """What a replica sharing the store reports (controlplane/cluster.py): whether it
    leads the singleton duties, whether its store answers, and the duties it ran."""
    for name, key, doc in (
            ("gossamer_leader", "leader", "1 on the replica running the singleton duties"),
            ("gossamer_store_available", "store_available",
             "0 while the store does not answer (writes refused, last config served)"),
            ("gossamer_lease_expirations", "expirations",
             "workloads this replica expired for lack of heartbeats"),
            ("gossamer_virtual_ip_writes", "vip_writes",
             "virtual IP tables this replica wrote")):
        Gauge(name, doc, registry=registry).set_function(
            lambda key=key: float(replica()[key]))  # type: ignore[misc]
