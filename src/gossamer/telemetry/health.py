"""The control plane's own health gauges on its `/metrics` (beside the xDS counters)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge


def register_health(registry: CollectorRegistry, connected: Callable[[], int],
                    revision: Callable[[], int]) -> None:
    """Gauges read at scrape time, so they never go stale between changes."""
    Gauge("gossamer_connected_proxies", "proxies with an open xDS stream",
          registry=registry).set_function(lambda: float(connected()))
    Gauge("gossamer_store_revision", "store revision the mesh index was built from",
          registry=registry).set_function(lambda: float(revision()))
