"""The sidecar's two static listeners for what runs off-host: the control plane's
admin reads, and Prometheus.

`gossamer_admin` (the workload's address, port 15091 by default): downstream TLS 1.3
with the workload certificate and the mesh trust bundle from the agent's SDS,
requiring a client certificate whose URI SAN is the control plane's SPIFFE ID, so
only the control plane (which alone holds that identity: the CA refuses it to any
CSR) gets through. It passes on only the admin paths the control plane reads
(proxyadmin/target.py, ALLOWED) to Envoy's admin on loopback, through the static
cluster ADMIN_CLUSTER; any other method or path is answered 403 by the listener
itself, and paths are normalized first, so `/stats/../quitquitquit` is
`/quitquitquit`. Envoy does the proxying: the agent proxies nothing.

`gossamer_prometheus` (port 15090 by default, as Istio's): plain HTTP, GET
`/stats/prometheus` only, for a Prometheus on another host. Stats are what every
sidecar exports to Prometheus anyway; nothing else of the admin is reachable.

Neither sets `enableReusePort`: a second sidecar on the same host and port must
fail to bind (the agent checks first and says so) rather than share the port.
"""

from __future__ import annotations

from typing import Any

from gossamer.contract.names import CERT_SECRET, ROOT_SECRET
from gossamer.proxyadmin.target import (
    ADMIN_CLUSTER,
    ADMIN_TLS_LISTENER,
    ALLOWED,
    LOOPBACK,
    PROMETHEUS_LISTENER,
    PROMETHEUS_PATH,
)

_TYPES = "type.googleapis.com/envoy.extensions"
_HCM = f"{_TYPES}.filters.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER = f"{_TYPES}.filters.http.router.v3.Router"
_DOWNSTREAM_TLS = f"{_TYPES}.transport_sockets.tls.v3.DownstreamTlsContext"
REFUSED = "gossamer: this admin path is not served off-host\n"


def admin_cluster(admin_port: int) -> dict[str, Any]:
    """Envoy's own admin, on loopback, as an upstream of the two listeners."""
    return {
        "name": ADMIN_CLUSTER,
        "type": "STATIC",
        "connectTimeout": "1s",
        "loadAssignment": {"clusterName": ADMIN_CLUSTER, "endpoints": [{"lbEndpoints": [
            {"endpoint": {"address": {"socketAddress": {"address": LOOPBACK,
                                                        "portValue": admin_port}}}}]}]},
    }


def _route(method: str, kind: str, path: str) -> dict[str, Any]:
    route: dict[str, Any] = {"cluster": ADMIN_CLUSTER, "timeout": "60s"}
    if (method, path) == ("POST", "/tap"):
        # A tap streams for as long as the control plane reads it (up to 10 minutes),
        # quiet while no request is tapped.
        route = {"cluster": ADMIN_CLUSTER, "timeout": "0s", "idleTimeout": "0s"}
    return {"match": {kind: path, "headers": [
        {"name": ":method", "stringMatch": {"exact": method}}]}, "route": route}


def _refuse(status: int) -> dict[str, Any]:
    return {"match": {"prefix": "/"},
            "directResponse": {"status": status, "body": {"inlineString": REFUSED}}}


def _hcm(stat_prefix: str, routes: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": "envoy.filters.network.http_connection_manager", "typedConfig": {
        "@type": _HCM,
        "statPrefix": stat_prefix,
        "normalizePath": True,
        "mergeSlashes": True,
        "pathWithEscapedSlashesAction": "REJECT_REQUEST",
        "routeConfig": {"name": stat_prefix, "virtualHosts": [
            {"name": stat_prefix, "domains": ["*"], "routes": routes}]},
        "httpFilters": [{"name": "envoy.filters.http.router",
                         "typedConfig": {"@type": _ROUTER}}],
    }}


def _listener(name: str, address: str, port: int, chain: dict[str, Any]) -> dict[str, Any]:
    return {"name": name,
            "address": {"socketAddress": {"address": address, "portValue": port}},
            "enableReusePort": False,
            "filterChains": [chain]}


def admin_tls_listener(address: str, port: int, control_plane: str,
                       sds: dict[str, Any]) -> dict[str, Any]:
    """`gossamer_admin`: mTLS for the SPIFFE ID `control_plane` only; `sds` is the agent's
    SDS config source (bootstrap.sds_config, shared with every other reference)."""
    tls = {
        "@type": _DOWNSTREAM_TLS,
        "requireClientCertificate": True,
        "commonTlsContext": {
            "tlsParams": {"tlsMinimumProtocolVersion": "TLSv1_3",
                          "tlsMaximumProtocolVersion": "TLSv1_3"},
            "tlsCertificateSdsSecretConfigs": [{"name": CERT_SECRET, "sdsConfig": sds}],
            "combinedValidationContext": {
                "defaultValidationContext": {"matchTypedSubjectAltNames": [
                    {"sanType": "URI", "matcher": {"exact": control_plane}}]},
                "validationContextSdsSecretConfig": {"name": ROOT_SECRET, "sdsConfig": sds},
            },
        },
    }
    routes = [*(_route(*allowed) for allowed in ALLOWED), _refuse(403)]
    return _listener(ADMIN_TLS_LISTENER, address, port, {
        "transportSocket": {"name": "envoy.transport_sockets.tls", "typedConfig": tls},
        "filters": [_hcm(ADMIN_TLS_LISTENER, routes)]})


def prometheus_listener(address: str, port: int) -> dict[str, Any]:
    """`gossamer_prometheus`: plain HTTP, GET /stats/prometheus and nothing else (404)."""
    routes = [_route("GET", "path", PROMETHEUS_PATH), _refuse(404)]
    return _listener(PROMETHEUS_LISTENER, address, port,
                     {"filters": [_hcm(PROMETHEUS_LISTENER, routes)]})
