"""The egress gateway's listener: a node whose metadata says `gateway: NAME` (an agent
with no app) takes the ExternalServices whose `egress.via` is NAME.

Sidecars send those services' calls to Service NAME over the mesh's mutual TLS
(translate/external.py), keeping the Host the app used. The gateway's inbound
listener is a sidecar's (mTLS, the AuthorizationPolicies, RequestAuthentications
and rate limits of Service NAME, its access log and tracing), but its routes pick
the external service by Host and send to the TLS-originating clusters, which only
the gateway holds: only the gateway's host needs a route to the outside. An
AuthorizationPolicy on Service NAME with `to.operation.hosts` decides which
workloads may reach which external host.
"""

from __future__ import annotations

from typing import Any

from envoy.config.listener.v3.listener_components_pb2 import FilterChain, ListenerFilter
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_components_pb2 import VirtualHost
from envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2 import (  # noqa: E501
    HttpConnectionManager,
    HttpFilter,
)

from gossamer.contract.node import NodeMetadata
from gossamer.contract.protocol import Protocol
from gossamer.translate import names
from gossamer.translate.adaptive import inbound_traffic_filters
from gossamer.translate.external import GatewayPart
from gossamer.translate.listeners import InboundSecurity, inbound_listener, tcp_proxy_filter
from gossamer.translate.mesh import MeshConfig
from gossamer.translate.protos import build
from gossamer.translate.ratelimit import ROUTE_LIMIT_FILTERS
from gossamer.translate.telemetry import proxy_access_log
from gossamer.translate.tls import TLS_INSPECTOR_FILTER, downstream_mtls
from gossamer.xds.types import LISTENER, XdsResource

GATEWAY_ROUTES = "egress-gateway"
NO_HOST_ROUTE = "no-such-external-service"
NO_APP_CLUSTER = "gossamer_no_app"  # never sent to: the routes are replaced
# The caller's identity (x-forwarded-client-cert) stays inside the mesh.
STRIPPED = ["x-forwarded-client-cert"]


def _no_host(gateway: str) -> VirtualHost:
    return build(VirtualHost, {"name": NO_HOST_ROUTE, "domains": ["*"], "routes": [{
        "name": NO_HOST_ROUTE, "match": {"prefix": "/"}, "directResponse": {
            "status": 404, "body": {"inlineString": (
                f"gossamer: the egress gateway {gateway} routes no ExternalService for "
                "this request's host\n")}}}]})


def _with_routes(listener: Listener, vhosts: list[VirtualHost], gateway: str) -> Listener:
    """The inbound listener with the gateway's routes in place of the local app's."""
    for chain in listener.filter_chains:
        for f in chain.filters:
            packed = f.typed_config
            if not packed.Is(HttpConnectionManager.DESCRIPTOR):
                continue
            hcm = HttpConnectionManager()
            packed.Unpack(hcm)
            hcm.route_config.name = GATEWAY_ROUTES
            del hcm.route_config.virtual_hosts[:]
            hcm.route_config.virtual_hosts.extend([*vhosts, _no_host(gateway)])
            # Disabled until an ExternalService's route with a RateLimitPolicy enables them.
            router = hcm.http_filters.pop()
            hcm.http_filters.extend([*(build(HttpFilter, f) for f in ROUTE_LIMIT_FILTERS),
                                     router])
            del hcm.route_config.request_headers_to_remove[:]
            hcm.route_config.request_headers_to_remove.extend(STRIPPED)
            prefix = packed.type_url.rsplit("/", 1)[0]
            packed.Pack(hcm, type_url_prefix=prefix, deterministic=True)
    return listener


def _tcp_chain(sni: str, name: str, cluster: str, security: InboundSecurity) -> FilterChain:
    """A TCP port of an ExternalService: the caller's sidecar names it by SNI over the
    mesh's mutual TLS; the bytes go on to the outside (TLS originated by `cluster`).
    Its AuthorizationPolicies are Service NAME's, as for TCP (principals, ports)."""
    return build(FilterChain, {
        "name": name,
        "filterChainMatch": {"serverNames": [sni], "transportProtocol": "tls"},
        "transportSocket": downstream_mtls(),
        "filters": [*security.network_filters,
                    tcp_proxy_filter(names.INBOUND_STATS, [(cluster, 1)])]})


def gateway_resources(mesh: MeshConfig, proxy: NodeMetadata,
                      tracing: dict[str, Any] | None = None
                      ) -> tuple[XdsResource, list[XdsResource]]:
    """The gateway's inbound listener, and the clusters it needs: the TLS-originating
    clusters of its ExternalServices, and JWKS servers."""
    assert proxy.gateway is not None
    part = mesh.external.gateways.get((proxy.namespace, proxy.gateway)) or GatewayPart()
    services = mesh.index.proxy_services(proxy.namespace, proxy.workload, proxy.service)
    security, jwks = mesh.inbound_security(
        (proxy.namespace, services, 0, proxy.inbound_port, Protocol.HTTP))
    lis = inbound_listener(names.INBOUND_LISTENER, proxy.inbound_address, proxy.inbound_port,
                           Protocol.HTTP, NO_APP_CLUSTER, security,
                           inbound_traffic_filters(mesh.index, services),
                           proxy_access_log(mesh.index, proxy, services, "inbound"), tracing)
    lis = _with_routes(lis, part.vhosts, proxy.gateway)
    if part.tcp:
        tcp_security, _ = mesh.inbound_security(
            (proxy.namespace, services, 0, proxy.inbound_port, Protocol.TCP))
        lis.filter_chains.extend(_tcp_chain(sni, name, cluster, tcp_security)
                                 for sni, name, cluster in part.tcp)
        if not lis.listener_filters:  # mTLS off mesh-wide: SNI still needs reading
            lis.listener_filters.append(build(ListenerFilter, TLS_INSPECTOR_FILTER))
    return (XdsResource.from_message(LISTENER, lis.name, lis),
            [*part.clusters.values(), *jwks])
