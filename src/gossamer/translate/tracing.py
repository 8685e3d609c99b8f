"""Tracing: which Telemetry settings cover a proxy, and the Envoy config they become.

Each sidecar's HTTP connection managers get Envoy's OpenTelemetry tracer: the
inbound one reports SERVER spans, the outbound ones CLIENT spans, all under the
proxy's service name, exported over OTLP/gRPC to a cluster generated for the
collector address. Envoy propagates W3C `traceparent`/`tracestate`; the sampling
rate only decides for requests that arrive without one (where a trace starts),
later hops follow the sampled flag of their parent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.trace.v3 import opentelemetry_pb2  # noqa: F401

from gossamer.index import MeshIndex, SvcKey
from gossamer.model.policy import Scope, policy_scope
from gossamer.model.telemetry import Telemetry, Tracing, split_address
from gossamer.translate.policies import covers
from gossamer.translate.protos import HTTP_OPTIONS, build, socket_address

OTEL_TRACER = "envoy.tracers.opentelemetry"
OTEL_CONFIG = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"
# Istio's default: a collector alone traces 1% of new traces.
DEFAULT_SAMPLING_PERCENT = 1.0
EXPORT_TIMEOUT = "1s"
CONNECT_TIMEOUT = "2s"
_SPECIFIC_FIRST = (Scope.SERVICE, Scope.NAMESPACE, Scope.MESH)


@dataclass(frozen=True)
class ProxyTracing:
    """What one proxy traces with: its HCMs' `tracing` block and the collector cluster."""

    hcm: dict[str, Any]
    cluster: Cluster


def collector_cluster_name(address: str) -> str:
    return f"tracing|{address}"


def _effective(telemetries: Iterable[Telemetry]) -> tuple[float | None, str | None]:
    """Each field from the most specific scope that sets it; within a scope (a workload
    several Services select) the first by (namespace, name)."""
    by_scope: dict[Scope, list[Tracing]] = {s: [] for s in _SPECIFIC_FIRST}
    for t in telemetries:
        if t.spec.tracing is not None:
            by_scope[policy_scope(t)].append(t.spec.tracing)
    ordered = [tr for scope in _SPECIFIC_FIRST for tr in by_scope[scope]]
    percent = next((tr.sampling_percent for tr in ordered if tr.sampling_percent is not None),
                   None)
    address = next((tr.collector.address for tr in ordered if tr.collector is not None), None)
    return percent, address


def collector_cluster(address: str) -> Cluster:
    """OTLP/gRPC needs HTTP/2; STRICT_DNS resolves a host name and accepts an IP."""
    host, port = split_address(address)
    name = collector_cluster_name(address)
    return build(Cluster, {
        "name": name,
        "type": "STRICT_DNS",
        # A records first (agent/bootstrap.py's xDS cluster says why): a CDS cluster
        # that resolves a name holds Envoy's start until the name resolves.
        "dnsLookupFamily": "V4_PREFERRED",
        "connectTimeout": CONNECT_TIMEOUT,
        "loadAssignment": {"clusterName": name, "endpoints": [{"lbEndpoints": [
            {"endpoint": {"address": socket_address(host, port)}}]}]},
        "typedExtensionProtocolOptions": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_OPTIONS, "explicitHttpConfig": {"http2ProtocolOptions": {}}}},
    })


def hcm_tracing(percent: float, address: str, service: str, namespace: str,
                workload: str) -> dict[str, Any]:
    return {
        "randomSampling": {"value": percent},
        "customTags": [
            {"tag": "gossamer.namespace", "literal": {"value": namespace}},
            {"tag": "gossamer.workload", "literal": {"value": workload}},
        ],
        "provider": {"name": OTEL_TRACER, "typedConfig": {
            "@type": OTEL_CONFIG,
            "serviceName": service,
            "grpcService": {"envoyGrpc": {"clusterName": collector_cluster_name(address)},
                            "timeout": EXPORT_TIMEOUT},
        }},
    }


def proxy_tracing(index: MeshIndex, namespace: str, services: frozenset[SvcKey],
                  service: str, workload: str) -> ProxyTracing | None:
    """None where no covering Telemetry names a collector: no tracer, no spans."""
    percent, address = _effective(t for t in index.telemetries
                                  if covers(t, namespace, services))
    if address is None:
        return None
    if percent is None:
        percent = DEFAULT_SAMPLING_PERCENT
    return ProxyTracing(hcm_tracing(percent, address, service, namespace, workload),
                        collector_cluster(address))
