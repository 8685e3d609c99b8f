"""A gateway's listeners: one per port, on the gateway's address.

- HTTP: an HTTP connection manager whose routes come from RDS (`gateway|PORT`).
- HTTPS and TLS (they may share a port): `tls_inspector`, then a filter chain per
  listener (HTTPS: TLS terminated with its certificates, sent over ADS as SDS
  secrets, then the port's HTTP routes) or per passthrough route (TLS: by SNI, the
  bytes to the route's backends by weight).
- TCP: `tcp_proxy` to the TCPRoute's backends by weight.

Safe defaults for the edge: the client address is the connection's, or the one
`xff-num-trusted-hops` proxies in front of the gateway put in `X-Forwarded-For`;
request headers and bodies are bounded (`max-request-headers-kb`,
`max-request-body-kb`); a host no route names gets a 404 saying so (routes.py);
Envoy's admin stays on loopback (the agent's bootstrap).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from envoy.config.listener.v3.listener_pb2 import Listener as EnvoyListener
from envoy.extensions.filters.http.buffer.v3 import buffer_pb2  # noqa: F401  (registers @type)
from envoy.extensions.transport_sockets.tls.v3.secret_pb2 import Secret as EnvoySecret

from gossamer.index import SvcKey
from gossamer.index.gateways import GatewayView, ListenerView
from gossamer.model import Secret, Service, TCPRoute, TLSRoute
from gossamer.model.gateway import MAX_BODY_KB, MAX_HEADERS_KB, XFF_HOPS
from gossamer.translate.fault import FAULT_FILTER
from gossamer.translate.gateway.routes import route_config_name
from gossamer.translate.listeners import (
    CORS_HTTP_FILTER,
    JWT_MAPPER,
    TAP_FILTER,
    tcp_proxy_filter,
)
from gossamer.translate.protos import ADS, DOWNSTREAM_TLS, HCM, ROUTER, build, socket_address
from gossamer.translate.tcproutes import tcp_route_clusters
from gossamer.translate.tls import TLS_INSPECTOR_FILTER, TLS_SOCKET


def secret_name(secret: Secret) -> str:
    return f"gateway-cert|{secret.metadata.namespace}/{secret.metadata.name}"


def envoy_secret(secret: Secret) -> EnvoySecret:
    return build(EnvoySecret, {"name": secret_name(secret), "tlsCertificate": {
        "certificateChain": {"inlineBytes": _b64(secret.certificate_pem)},
        "privateKey": {"inlineBytes": _b64(secret.key_pem)}}})


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def listener_name(port: int) -> str:
    return f"gateway|{port}"


@dataclass(frozen=True)
class EdgeHttp:
    """What a gateway's HTTP connection managers add: the required-JWT filter, the
    access loggers and the tracing block (the gateway starts the trace) of the
    Telemetry covering its namespace, and the rate limits of a RateLimitPolicy that
    targets the Gateway."""

    jwt: dict[str, Any] | None = None
    # The RateLimitPolicy's local and global filters (translate/ratelimit.py).
    ratelimit: tuple[dict[str, Any], ...] = ()
    access_log: tuple[dict[str, Any], ...] = ()
    tracing: dict[str, Any] | None = None


BUFFER = "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer"
ROUTER_FILTER = {"name": "envoy.filters.http.router", "typedConfig": {"@type": ROUTER}}


def _filters(edge: EdgeHttp, body: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The tap filter (off unless a tap session runs: routes.py) before everything, so
    `gossamer tap gateway/NAME` sees what the edge refuses too; then JWT (a request
    without a valid token spends no quota), the rate limits, the body limit (what those
    refuse is never buffered), CORS, the fault filter (disabled: a FaultPolicy enables
    it per route, an RDS change), the router."""
    jwt = [edge.jwt] if edge.jwt else []
    return [TAP_FILTER, *jwt, *edge.ratelimit, *([body] if body else []), CORS_HTTP_FILTER,
            FAULT_FILTER, ROUTER_FILTER]


def _body_limit(view: GatewayView) -> dict[str, Any]:
    """The buffer filter answers 413 to a body over the limit. It buffers whole
    requests, so upgraded connections (WebSocket), whose body never ends, run the chain
    without it."""
    return {"name": "envoy.filters.http.buffer", "typedConfig": {
        "@type": BUFFER, "maxRequestBytes": view.gateway.setting(MAX_BODY_KB) * 1024}}


def _hcm(view: GatewayView, port: int, edge: EdgeHttp) -> dict[str, Any]:
    gw = view.gateway
    filters = _filters(edge, _body_limit(view))
    return {"name": "envoy.filters.network.http_connection_manager", "typedConfig": {
        "@type": HCM,
        "statPrefix": f"gateway_{port}",
        "codecType": "AUTO",
        "rds": {"configSource": ADS, "routeConfigName": route_config_name(port)},
        # The client's address: the peer's, or the one trusted proxies put in XFF.
        "useRemoteAddress": True,
        "xffNumTrustedHops": gw.setting(XFF_HOPS),
        "maxRequestHeadersKb": gw.setting(MAX_HEADERS_KB),
        "stripAnyHostPort": True,
        "normalizePath": True,
        "mergeSlashes": True,
        "pathWithEscapedSlashesAction": "REJECT_REQUEST",
        "commonHttpProtocolOptions": {"headersWithUnderscoresAction": "REJECT_REQUEST"},
        "upgradeConfigs": [{"upgradeType": "websocket", "filters": _filters(edge, None)}],
        "localReplyConfig": {"mappers": [JWT_MAPPER]},
        "httpFilters": filters,
        **({"accessLog": list(edge.access_log)} if edge.access_log else {}),
        **({"tracing": edge.tracing} if edge.tracing else {}),
    }}


def _tls_socket(certs: tuple[Secret, ...]) -> dict[str, Any]:
    return {"name": TLS_SOCKET, "typedConfig": {"@type": DOWNSTREAM_TLS, "commonTlsContext": {
        "tlsParams": {"tlsMinimumProtocolVersion": "TLSv1_2"},
        "alpnProtocols": ["h2", "http/1.1"],
        "tlsCertificateSdsSecretConfigs": [
            {"name": secret_name(s), "sdsConfig": ADS} for s in certs]}}}


def _server_names(hosts: tuple[str, ...] | list[str]) -> dict[str, Any]:
    named = [h for h in hosts if h != "*"]
    return {"serverNames": named} if named and len(named) == len(hosts) else {}


def _tls_chains(view: GatewayView, port: int, listeners: list[ListenerView],
                edge: EdgeHttp,
                services: Mapping[SvcKey, Service]) -> list[dict[str, Any]]:
    """A chain per HTTPS listener and per passthrough route; SNI names already taken
    on the port (by an earlier listener or route) are left out, so no two chains
    match alike (Envoy would refuse the listener)."""
    taken: set[str] = set()
    chains: list[dict[str, Any]] = []

    def fresh(hosts: tuple[str, ...]) -> tuple[str, ...]:
        out = tuple(h for h in hosts if h not in taken)
        taken.update(out)
        return out

    for lst in listeners:
        lis = lst.listener
        if lis.protocol == "HTTPS":
            hosts = fresh((lis.hostname or "*",))
            if hosts:
                chains.append({"name": lis.name,
                               "filterChainMatch": _server_names(hosts),
                               "transportSocket": _tls_socket(lst.certificates),
                               "filters": [_hcm(view, port, edge)]})
            continue
        for route, route_hosts in lst.routes:
            if isinstance(route, TLSRoute) and (hosts := fresh(route_hosts)):
                chains.append({"name": f"{lis.name}/{route.metadata.namespace}/"
                                       f"{route.metadata.name}",
                               "filterChainMatch": _server_names(hosts),
                               "filters": [tcp_proxy_filter(
                                   f"gateway_{port}_{route.metadata.name}",
                                   tcp_route_clusters(route,
                                                      view.services_for(route, services)))]})
    return chains


def port_listener(view: GatewayView, address: str, port: int, listeners: list[ListenerView],
                  edge: EdgeHttp,
                  services: Mapping[SvcKey, Service]) -> EnvoyListener | None:
    """The listener of one port (its listeners share a protocol family: the index
    reports the others Conflicted); None when nothing can be served there."""
    first = listeners[0].listener.protocol
    config: dict[str, Any] = {"name": listener_name(port),
                              "address": socket_address(address, port),
                              "trafficDirection": "INBOUND",
                              "perConnectionBufferLimitBytes": 32768}
    if first == "HTTP":
        config["filterChains"] = [{"filters": [_hcm(view, port, edge)]}]
    elif first == "TCP":
        routes = [r for lst in listeners for r, _ in lst.routes if isinstance(r, TCPRoute)]
        if not routes:
            return None
        config["filterChains"] = [{"filters": [tcp_proxy_filter(
            f"gateway_{port}", tcp_route_clusters(routes[0],
                                                  view.services_for(routes[0], services)))]}]
    else:
        chains = _tls_chains(view, port, listeners, edge, services)
        if not chains:
            return None
        config["listenerFilters"] = [TLS_INSPECTOR_FILTER]
        config["filterChains"] = chains
    return build(EnvoyListener, config)

