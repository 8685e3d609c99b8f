"""The route config of one gateway port: a virtual host per hostname its routes are
served under, each with the Envoy routes of those routes' rules, built by the mesh's
own route builder (translate/routes.py: matches, filters, weights, mirrors, timeouts,
the backends' ResiliencePolicy), in Gateway API precedence order.

GRPCRoutes share a host with HTTPRoutes: their routes come first and match only gRPC
requests (content-type application/grpc), so a GRPCRoute without method matches does
not take a host's browser traffic. The request body limit (a buffer filter) is off
on them: it would hold a streaming call until the client closes its stream, and a
gRPC server bounds its messages itself."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from gossamer.index import MeshIndex
from gossamer.index.gateways import GatewayView, ListenerView
from gossamer.model import GRPCRoute, HTTPRoute
from gossamer.model.grpcroute import GRPCRouteMatch
from gossamer.model.httproute import RouteMatch
from gossamer.translate.fault import with_fault
from gossamer.translate.grpcroutes import grpc_precedence, http_match, http_rule
from gossamer.translate.listeners import TAP_OFF
from gossamer.translate.names import NO_HOST_ROUTE
from gossamer.translate.routes import (
    UNREACHABLE_HEADER,
    envoy_route,
    precedence,
    rule_route_name,
)

NO_HOST_BODY = "gossamer: gateway {gateway} has no route for this host\n"
# While a tap session runs, each forwarding route names itself in this request header,
# which the tap filter records (`gossamer tap gateway/NAME` shows the route chosen).
# The tap records the header map as it is when the request ends, so a response header
# removed before the client would be gone from the trace too.
ROUTE_HEADER = "x-gossamer-gateway-route"
BUFFER_FILTER = "envoy.filters.http.buffer"
BUFFER_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute"


def route_config_name(port: int) -> str:
    return f"gateway|{port}"


def _envoy_routes(index: MeshIndex, view: GatewayView,
                  routes: list[HTTPRoute]) -> list[dict[str, Any]]:
    ordered: list[tuple[tuple[int, ...], dict[str, Any]]] = []
    seq = 0
    for route in routes:
        ns, name = route.metadata.namespace, route.metadata.name
        for i, rule in enumerate(route.spec.rules):
            for j, match in enumerate(rule.matches or [RouteMatch()]):
                er = envoy_route(rule, match, rule_route_name(ns, name, i, rule.name, j), ns,
                                 0, view.services_for(route, index.services), None,
                                 index.resilience)
                ordered.append(((*precedence(match), seq), er))
                seq += 1
    ordered.sort(key=lambda pair: pair[0])
    return [r for _, r in ordered]


def _grpc_routes(index: MeshIndex, view: GatewayView,
                 routes: list[GRPCRoute]) -> list[dict[str, Any]]:
    ordered: list[tuple[tuple[int, ...], dict[str, Any]]] = []
    seq = 0
    for route in routes:
        ns, name = route.metadata.namespace, route.metadata.name
        for i, rule in enumerate(route.spec.rules):
            as_http = http_rule(rule)
            for j, match in enumerate(rule.matches or [GRPCRouteMatch()]):
                er = envoy_route(as_http, http_match(match),
                                 "grpc:" + rule_route_name(ns, name, i, rule.name, j), ns, 0,
                                 view.services_for(route, index.services), None,
                                 index.resilience)
                er["match"]["grpc"] = {}
                er.setdefault("typedPerFilterConfig", {})[BUFFER_FILTER] = {
                    "@type": BUFFER_PER_ROUTE, "disabled": True}
                ordered.append(((*grpc_precedence(match), seq), er))
                seq += 1
    ordered.sort(key=lambda pair: pair[0])
    return [r for _, r in ordered]


def port_route_config(index: MeshIndex, view: GatewayView, port: int,
                      listeners: list[ListenerView], tapped: bool = False) -> dict[str, Any]:
    """Hostnames of every HTTP(S) listener of `port`; a host no route names gets 404
    saying so (a wildcard-only gateway still answers unknown hosts clearly). A
    FaultPolicy targeting the Gateway covers every route that forwards. `tapped`: a
    tap session of this replica runs, so the tap filter stays on and forwarded
    requests carry their route's name (the backend sees it too, for that while)."""
    by_host: dict[str, list[HTTPRoute | GRPCRoute]] = defaultdict(list)
    for lst in listeners:
        for route, hosts in lst.routes:
            if isinstance(route, HTTPRoute | GRPCRoute):
                for host in hosts:
                    if route not in by_host[host]:
                        by_host[host].append(route)
    fault = index.gateway_faults.get(view.key)
    vhosts: list[dict[str, Any]] = []
    for host in sorted(by_host, key=lambda h: (h == "*", h)):
        grpc = [r for r in by_host[host] if isinstance(r, GRPCRoute)]
        http = [r for r in by_host[host] if isinstance(r, HTTPRoute)]
        routes = [*_grpc_routes(index, view, grpc), *_envoy_routes(index, view, http)]
        vhosts.append({"name": host, "domains": [host], "routes": with_fault(routes, fault)})
    if "*" not in by_host:
        ns, name = view.key
        vhosts.append({"name": "no-such-host", "domains": ["*"], "routes": [{
            "name": NO_HOST_ROUTE, "match": {"prefix": "/"}, "directResponse": {
                "status": 404, "body": {"inlineString": NO_HOST_BODY.format(
                    gateway=f"{ns}/{name}")}}}]})
    for vhost in vhosts:
        if not tapped:
            vhost["typedPerFilterConfig"] = TAP_OFF
            continue
        for route in vhost["routes"]:
            if "route" in route:
                route["requestHeadersToAdd"] = [*route.get("requestHeadersToAdd", ()), {
                    "header": {"key": ROUTE_HEADER, "value": "%ROUTE_NAME%"},
                    "appendAction": "OVERWRITE_IF_EXISTS_OR_ADD"}]
    # As every caller side's: the callee sidecars' retry marker never reaches a client.
    return {"name": route_config_name(port), "virtualHosts": vhosts, "validateClusters": False,
            "responseHeadersToRemove": [UNREACHABLE_HEADER]}
