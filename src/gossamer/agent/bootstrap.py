"""Envoy's bootstrap: who this node is and where its control plane lives.

Everything else arrives over ADS; the bootstrap holds only the node identity
(metadata the control plane translates for), the admin endpoint on loopback,
and the static cluster that reaches the xDS server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

XDS_CLUSTER = "gossamer_xds"


@dataclass(frozen=True)
class NodeSpec:
    node_id: str
    service: str
    namespace: str
    workload: str
    inbound_port: int
    inbound_address: str
    app_port: int
    app_protocol: str | None
    outbound_port: int
    admin_port: int
    upstreams: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    def metadata(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "namespace": self.namespace,
            "workload": self.workload,
            "inbound_port": self.inbound_port,
            "inbound_address": self.inbound_address,
            "app_port": self.app_port,
            **({"app_protocol": self.app_protocol} if self.app_protocol else {}),
            "outbound_port": self.outbound_port,
            "admin_port": self.admin_port,
            "upstreams": [dict(u) for u in self.upstreams],
        }


def bootstrap(node: NodeSpec, xds_host: str, xds_port: int, *,
              delta: bool = True) -> dict[str, Any]:
    ads = {"ads": {}, "resourceApiVersion": "V3"}
    return {
        "node": {"id": node.node_id, "cluster": node.service, "metadata": node.metadata()},
        "admin": {"address": {"socketAddress": {"address": "127.0.0.1",
                                                "portValue": node.admin_port}}},
        "dynamicResources": {
            "adsConfig": {
                "apiType": "DELTA_GRPC" if delta else "GRPC",
                "transportApiVersion": "V3",
                "setNodeOnFirstMessageOnly": True,
                "grpcServices": [{"envoyGrpc": {"clusterName": XDS_CLUSTER}}],
            },
            "cdsConfig": ads,
            "ldsConfig": ads,
        },
        "staticResources": {"clusters": [{
            "name": XDS_CLUSTER,
            "type": "STATIC",
            "connectTimeout": "1s",
            "loadAssignment": {"clusterName": XDS_CLUSTER, "endpoints": [{"lbEndpoints": [
                {"endpoint": {"address": {"socketAddress": {"address": xds_host,
                                                            "portValue": xds_port}}}}
            ]}]},
            "typedExtensionProtocolOptions": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                             "HttpProtocolOptions",
                    "explicitHttpConfig": {"http2ProtocolOptions": {
                        "connectionKeepalive": {"interval": "15s", "timeout": "5s"}}},
                }
            },
        }]},
        "layeredRuntime": {"layers": [{"name": "admin", "adminLayer": {}}]},
    }
