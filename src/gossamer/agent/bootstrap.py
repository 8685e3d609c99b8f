"""Envoy's bootstrap: who this node is and where its control plane lives.

Everything else arrives over ADS; the bootstrap holds only the node identity
(metadata the control plane translates for), the admin endpoint on loopback,
the static cluster that reaches the xDS server, and the runtime limits the
control plane validates resources against (`layered_runtime`).

With `tls=True` Envoy also gets the static cluster SDS_CLUSTER, a pipe to the
agent's SDS socket (`agent/sds.py`), and the xDS cluster speaks TLS 1.3 to
the control plane, verifying its certificate against the mesh's trust bundle
(ROOT_SECRET, from that SDS) and its DNS SAN against CONTROL_PLANE_NAME,
whatever address is dialled. A join token rides as gRPC metadata on the ADS
stream, which is why the bootstrap file must be readable by its owner only.

The static listeners `gossamer_admin` (mTLS, the control plane's identity only, with
TLS) and `gossamer_prometheus` serve the admin reads the control plane and
Prometheus make from other hosts (`agent/adminlisteners.py`); their ports go into the
node metadata, so the control plane knows where to reach them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from gossamer.agent.adminlisteners import admin_cluster, admin_tls_listener, prometheus_listener
from gossamer.agent.stats import stats_config
from gossamer.contract.names import (
    CONTROL_PLANE_NAME,
    MAX_PROGRAM_SIZE,
    PROGRAM_SIZE_RUNTIME_KEY,
    ROOT_SECRET,
    SDS_CLUSTER,
    XDS_CLUSTER,
    sds_config,
)
from gossamer.contract.node import NodeMetadata
from gossamer.contract.spiffe import control_plane_id

# How Envoy retries a broken xDS stream: jittered exponential backoff, each wait
# uniform in [0, min(base * 2^attempt, max)]. Envoy's default (500 ms, 30 s) lets a
# sidecar sit up to 30 s on stale config after a control-plane restart; with a 2 s
# cap every sidecar is back within ~2 s of the control plane being up (a 4 s cap
# left a thousand sidecars' resync at 5.3-9 s, bench/controlplane), and a thousand
# sidecars probing a down control plane cost it ~1000 refused connects a second,
# which a kernel answers without waking it.
XDS_RETRY_BASE_S, XDS_RETRY_MAX_S = 0.25, 2.0
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_UPSTREAM_TLS = ("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                 "UpstreamTlsContext")


def sds_cluster(sds_socket: str) -> dict[str, Any]:
    """The static cluster SDS_CLUSTER: HTTP/2 to the agent's SDS Unix socket."""
    path = sds_socket.removeprefix("unix:")
    return {
        "name": SDS_CLUSTER,
        "type": "STATIC",
        "connectTimeout": "1s",
        "loadAssignment": {"clusterName": SDS_CLUSTER, "endpoints": [{"lbEndpoints": [
            {"endpoint": {"address": {"pipe": {"path": path}}}}
        ]}]},
        "typedExtensionProtocolOptions": {_HTTP_OPTIONS: {
            "@type": f"type.googleapis.com/{_HTTP_OPTIONS}",
            "explicitHttpConfig": {"http2ProtocolOptions": {}},
        }},
    }


def xds_tls_socket() -> dict[str, Any]:
    """TLS 1.3 to the control plane: its DNS SAN must be CONTROL_PLANE_NAME and it must
    chain to the trust bundle from the agent's SDS (so root rotation reaches it too)."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typedConfig": {
            "@type": _UPSTREAM_TLS,
            "sni": CONTROL_PLANE_NAME,
            "commonTlsContext": {
                # The upstream default maximum is TLS 1.2; a minimum of 1.3
                # alone would leave no version.
                "tlsParams": {"tlsMinimumProtocolVersion": "TLSv1_3",
                              "tlsMaximumProtocolVersion": "TLSv1_3"},
                # gRPC servers want HTTP/2 negotiated by ALPN.
                "alpnProtocols": ["h2"],
                "combinedValidationContext": {
                    "defaultValidationContext": {"matchTypedSubjectAltNames": [
                        {"sanType": "DNS", "matcher": {"exact": CONTROL_PLANE_NAME}}]},
                    "validationContextSdsSecretConfig": {"name": ROOT_SECRET,
                                                         "sdsConfig": sds_config()},
                },
            },
        },
    }


def layered_runtime() -> dict[str, Any]:
    """Envoy's runtime: the limits the control plane validates against, then the admin
    layer. Regexes are pushed only when within MAX_PROGRAM_SIZE (`contract/names.py`),
    so every sidecar must allow that much, not Envoy's default of 100."""
    return {"layers": [
        {"name": "gossamer", "staticLayer": {PROGRAM_SIZE_RUNTIME_KEY: MAX_PROGRAM_SIZE}},
        {"name": "admin", "adminLayer": {}},
    ]}


def bootstrap(node: NodeMetadata, xds_host: str, xds_port: int, *,
              delta: bool = True, sds_socket: str | None = None, token: str | None = None,
              tls: bool = False, trust_domain: str | None = None,
              more_xds: Sequence[tuple[str, int]] = ()) -> dict[str, Any]:
    """Envoy's bootstrap for `node`, with ADS from xds_host:xds_port.

    `more_xds`: other control-plane replicas' xDS addresses. They join the same
    cluster, so when the stream's replica goes away Envoy's reconnection (with
    backoff) lands on another one, while the sidecar serves its last config.

    `tls` needs `sds_socket` (`unix:<path>` or a path): the agent's SDS, which
    must serve ROOT_SECRET before Envoy starts. `token` is sent as
    `authorization: Bearer <token>` on the ADS stream; whoever writes the
    bootstrap must make the file mode 0600. A node with `admin_tls_port` needs
    `tls` and the mesh's `trust_domain` (the control plane's identity is in it).
    """
    if node.vhds and not delta:
        raise ValueError("VHDS needs a delta xDS stream (SotW cannot carry it)")
    if tls and not sds_socket:
        raise ValueError("a TLS bootstrap needs the agent's SDS socket (sds_socket)")
    if node.admin_tls_port and not (tls and trust_domain):
        raise ValueError("the mTLS admin listener needs a TLS bootstrap and the trust domain")
    ads = {"ads": {}, "resourceApiVersion": "V3"}
    xds = [(xds_host, xds_port), *((h, p) for h, p in more_xds if (h, p) != (xds_host, xds_port))]
    grpc_service: dict[str, Any] = {"envoyGrpc": {
        "clusterName": XDS_CLUSTER,
        "retryPolicy": {"retryBackOff": {"baseInterval": f"{XDS_RETRY_BASE_S}s",
                                         "maxInterval": f"{XDS_RETRY_MAX_S}s"}}}}
    if token:
        grpc_service["initialMetadata"] = [{"key": "authorization",
                                            "value": f"Bearer {token}"}]
    xds_cluster: dict[str, Any] = {
        "name": XDS_CLUSTER,
        # The advertised address may be a name (--advertise-address): Envoy resolves it.
        "type": "STATIC" if all(_is_ip(h) for h, _ in xds) else "STRICT_DNS",
        "connectTimeout": "1s",
        "loadAssignment": {"clusterName": XDS_CLUSTER, "endpoints": [{"lbEndpoints": [
            {"endpoint": {"address": {"socketAddress": {"address": host,
                                                        "portValue": port}}}}
            for host, port in xds
        ]}]},
        "typedExtensionProtocolOptions": {
            _HTTP_OPTIONS: {
                "@type": f"type.googleapis.com/{_HTTP_OPTIONS}",
                "explicitHttpConfig": {"http2ProtocolOptions": {
                    "connectionKeepalive": {"interval": "15s", "timeout": "5s"}}},
            }
        },
    }
    if xds_cluster["type"] == "STRICT_DNS":
        # Envoy's default (AUTO) asks for AAAA first: for a name the host knows only
        # as IPv4 (in /etc/hosts, say), that query goes to the resolvers, and where
        # none answers it waits out c-ares' timeouts (5 s, several tries) before the
        # A lookup, so Envoy reached the control plane 15-30 s late, or its agent gave
        # up first. A records first, AAAA only for a name that has none.
        xds_cluster["dnsLookupFamily"] = "V4_PREFERRED"
    clusters = [xds_cluster]
    if tls:
        assert sds_socket is not None
        xds_cluster["transportSocket"] = xds_tls_socket()
        clusters.append(sds_cluster(sds_socket))
    listeners = _admin_listeners(node, trust_domain)
    if listeners:
        clusters.append(admin_cluster(node.admin_port))
    return {
        "node": {"id": node.node_id, "cluster": node.service, "metadata": node.to_metadata()},
        "admin": {"address": {"socketAddress": {"address": "127.0.0.1",
                                                "portValue": node.admin_port}}},
        "dynamicResources": {
            "adsConfig": {
                "apiType": "DELTA_GRPC" if delta else "GRPC",
                "transportApiVersion": "V3",
                "setNodeOnFirstMessageOnly": True,
                "grpcServices": [grpc_service],
            },
            "cdsConfig": ads,
            "ldsConfig": ads,
        },
        "staticResources": {"clusters": clusters,
                            **({"listeners": listeners} if listeners else {})},
        "statsConfig": stats_config(node.service, node.namespace, node.workload),
        # No stats sinks: a 5 s flush timer would only merge histograms that nobody
        # reads until the admin endpoint is asked. Each admin read (the control plane's
        # scrape, Prometheus) merges them instead, for the next read to show, and an
        # idle sidecar spends ~45 % fewer instructions a second
        # (bench/dataplane/INSTRUCTIONS.md).
        "statsFlushOnAdmin": True,
        "layeredRuntime": layered_runtime(),
    }


def _admin_listeners(node: NodeMetadata, trust_domain: str | None) -> list[dict[str, Any]]:
    out = []
    if node.admin_tls_port:
        assert trust_domain is not None
        out.append(admin_tls_listener(node.inbound_address, node.admin_tls_port,
                                      str(control_plane_id(trust_domain)), sds_config()))
    if node.prometheus_port:
        out.append(prometheus_listener(node.inbound_address, node.prometheus_port))
    return out


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
