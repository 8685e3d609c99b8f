"""Clusters: one EDS cluster per service port, one static cluster for the local app."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from envoy.config.cluster.v3.cluster_pb2 import Cluster

from gossamer.contract.protocol import Protocol
from gossamer.model import Service
from gossamer.model.resiliencepolicy import ResiliencePolicy
from gossamer.translate import names
from gossamer.translate.protos import ADS, HTTP_OPTIONS, build, socket_address
from gossamer.translate.resilience import cluster_settings
from gossamer.translate.tls import upstream_mtls_socket

CONNECT_TIMEOUT = "2s"


def _http2(options: dict[str, Any]) -> dict[str, Any]:
    return {"typedExtensionProtocolOptions": {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": HTTP_OPTIONS,
            "explicitHttpConfig": {"http2ProtocolOptions": options},
        }
    }}


def _protocol_options(protocol: Protocol) -> dict[str, Any]:
    """To the local app: the protocol it speaks."""
    return _http2({}) if protocol.is_h2 else {}


def _mesh_protocol_options(protocol: Protocol) -> dict[str, Any]:
    """To another sidecar: HTTP/2 for every HTTP port (Protocol.mesh_h2). Extended
    CONNECT (`allowConnect`) carries a WebSocket upgrade over an HTTP/2 stream; the
    callee's sidecar turns it back into an HTTP/1.1 upgrade for its app."""
    return _http2({"allowConnect": True}) if protocol.mesh_h2 else {}


def outbound_clusters(service: Service, spiffe_ids: Sequence[str] | None = None,
                      policy: ResiliencePolicy | None = None) -> dict[str, Cluster]:
    """EDS clusters for each port; EDS service name = cluster name.

    With `spiffe_ids` the hop is mTLS and the peer must present one of them:
    the identities of the workloads the service selects. `policy`: the
    ResiliencePolicy targeting the service, applied to every port's cluster.
    """
    ns, name = service.metadata.namespace, service.metadata.name
    out = {}
    for port in service.spec.ports:
        cname = names.outbound_cluster(ns, name, port.port)
        cluster = build(Cluster, {
            "name": cname,
            "type": "EDS",
            "edsClusterConfig": {"edsConfig": ADS, "serviceName": cname},
            "connectTimeout": CONNECT_TIMEOUT,
            "lbPolicy": "ROUND_ROBIN",
            "commonLbConfig": {"healthyPanicThreshold": {"value": 0}},
            **_mesh_protocol_options(port.protocol),
            **cluster_settings(policy, port.protocol),
        })
        if spiffe_ids is not None:
            cluster.transport_socket.CopyFrom(
                upstream_mtls_socket(tuple(spiffe_ids), h2=port.protocol.mesh_h2))
        out[cname] = cluster
    return out


def inbound_cluster(app_port: int, protocol: Protocol) -> Cluster:
    """The local application, always on loopback beside its sidecar. Built for port
    0 and renamed, so that sidecars share one `build` (ParseDict is slow)."""
    cname = names.inbound_cluster(app_port)
    cluster = build(Cluster, {
        "name": names.inbound_cluster(0),
        "type": "STATIC",
        "connectTimeout": CONNECT_TIMEOUT,
        "loadAssignment": {
            "clusterName": names.inbound_cluster(0),
            "endpoints": [{"lbEndpoints": [
                {"endpoint": {"address": socket_address("127.0.0.1", 0)}}
            ]}],
        },
        **_protocol_options(protocol),
    })
    cluster.name = cluster.load_assignment.cluster_name = cname
    endpoint = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint
    endpoint.address.socket_address.port_value = app_port
    return cluster
