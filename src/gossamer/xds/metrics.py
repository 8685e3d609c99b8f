"""The xDS server's own Prometheus metrics: pushes, ACKs and NACKs by type, open
streams, and the push latency from a store change to the proxy's ACK of it."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gossamer.xds.events import Outgoing
from gossamer.xds.types import SHORT, Snapshot


class XdsMetrics:
    """Prometheus metrics of the xDS server, on a registry of the caller's (never the global)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.pushes = Counter("gossamer_xds_pushes", "xDS responses sent, by type",
                              ["type"], registry=r)
        self.push_resources = Counter("gossamer_xds_pushed_resources",
                                      "resources sent in xDS responses, by type",
                                      ["type"], registry=r)
        self.push_bytes = Counter("gossamer_xds_pushed_bytes", "bytes of xDS responses, by type",
                                  ["type"], registry=r)
        self.acks = Counter("gossamer_xds_acks", "xDS ACKs received, by type", ["type"],
                            registry=r)
        self.nacks = Counter("gossamer_xds_nacks", "xDS NACKs received (config rejected by "
                             "a proxy), by type", ["type"], registry=r)
        self.streams = Gauge("gossamer_xds_streams", "open ADS streams, by kind",
                             ["kind"], registry=r)
        self.stream_starts = Counter("gossamer_xds_stream_starts", "ADS streams opened, by kind",
                                     ["kind"], registry=r)
        self.push_latency = Histogram(
            "gossamer_xds_push_latency_seconds", "from the store change a config version "
            "carries (or the proxy's connect) to the proxy's ACK of it, by type", ["type"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r)
        # node -> type url -> (version, when its change was seen): the latest only.
        # By node first, so forgetting a node costs its types, not every node's.
        self._pending: dict[str, dict[str, tuple[str, float]]] = {}
        # The labelled children by type URL: `labels()` validates and locks on
        # every call, and every stream counts every response and ACK.
        self._sent: dict[str, tuple[Counter, Counter, Counter]] = {}
        self._acks: dict[str, Counter] = {}
        self._latency: dict[str, Histogram] = {}

    def published(self, node_id: str, snapshot: Snapshot, since: float) -> None:
        """A snapshot for `node_id`, caused by a change seen at `since` (time.monotonic)."""
        node = self._pending.setdefault(node_id, {})
        for type_url in snapshot.resources:
            version = snapshot.version(type_url)
            pending = node.get(type_url)
            if pending is None or pending[0] != version:
                node[type_url] = (version, since)

    def acked(self, node_id: str, type_url: str, version: str) -> None:
        node = self._pending.get(node_id, {})
        pending = node.get(type_url)
        if pending is not None and pending[0] == version:
            del node[type_url]
            child = self._latency.get(type_url)
            if child is None:
                child = self._latency[type_url] = self.push_latency.labels(
                    SHORT.get(type_url, type_url))
            child.observe(max(0.0, time.monotonic() - pending[1]))

    def forget(self, node_id: str) -> None:
        self._pending.pop(node_id, None)

    def sent(self, out: Outgoing, size: int) -> None:
        children = self._sent.get(out.type_url)
        if children is None:
            label = SHORT.get(out.type_url, out.type_url)
            children = self._sent[out.type_url] = (
                self.pushes.labels(label), self.push_resources.labels(label),
                self.push_bytes.labels(label))
        pushes, resources, sizes = children
        pushes.inc()
        resources.inc(out.resources)
        sizes.inc(size)

    def ack(self, type_url: str) -> None:
        child = self._acks.get(type_url)
        if child is None:
            child = self._acks[type_url] = self.acks.labels(SHORT.get(type_url, type_url))
        child.inc()
