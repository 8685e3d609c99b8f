"""One Service's share of the mesh config (`ServiceParts`), and what it is made from.

`translate_mesh` (translate/mesh.py) keeps a Service's parts while their inputs
(`service_inputs`) are the same objects, so a route change translates the Services
it attaches to, not the mesh.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from envoy.config.route.v3.route_pb2 import RouteConfiguration

from gossamer.contract.protocol import Protocol
from gossamer.contract.spiffe import SpiffeId
from gossamer.index import MeshIndex, PortKey, SvcKey
from gossamer.model import GRPCRoute, HTTPRoute, Service
from gossamer.translate import names
from gossamer.translate.clusters import outbound_clusters
from gossamer.translate.consumer import (
    CallerRoutes,
    ConsumerKey,
    consumers,
    http_port_routes,
    producer_routes,
)
from gossamer.translate.protos import build
from gossamer.translate.routes import UNREACHABLE_HEADER
from gossamer.translate.settings import MeshSettings
from gossamer.translate.tcproutes import tcp_route_clusters
from gossamer.xds.types import CLUSTER, ROUTE, XdsResource

NO_SERVICE_VHOST = {
    "name": names.NO_SERVICE_ROUTE, "domains": ["*"],
    "routes": [{"name": names.NO_SERVICE_ROUTE, "match": {"prefix": "/"}, "directResponse": {
        "status": 404,
        "body": {"inlineString": "gossamer: no mesh service matches this request's host\n"},
    }}],
}


def cluster_refs(node: object, out: set[str]) -> set[str]:
    """Every cluster an Envoy route (or route list) sends or mirrors to."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "cluster" and isinstance(value, str):
                out.add(value)
            elif key == "weightedClusters" and isinstance(value, dict):
                out.update(c["name"] for c in value.get("clusters", ()))
            else:
                cluster_refs(value, out)
    elif isinstance(node, list):
        for item in node:
            cluster_refs(item, out)
    return out


def upstream_route_config(name: str, routes: list[dict[str, Any]] | None) -> XdsResource:
    """The route config of an upstream listener: `routes` under any host; None: the
    catch-all 404 of a Service that does not exist."""
    vhost = NO_SERVICE_VHOST if routes is None else {
        "name": name, "domains": ["*"], "routes": routes}
    config = build(RouteConfiguration, {"name": name, "virtualHosts": [vhost],
                                        "validateClusters": False,
                                        "responseHeadersToRemove": [UNREACHABLE_HEADER]})
    return _res(ROUTE, name, config)


def _identities(index: MeshIndex, key: SvcKey, settings: MeshSettings) -> list[str] | None:
    """SPIFFE IDs a caller accepts from the service's workloads; None: plaintext."""
    if not settings.mtls:
        return None
    return [str(SpiffeId(settings.trust_domain, key[0], account))
            for account in index.service_accounts(*key)]


@dataclass(frozen=True)
class ServiceParts:
    """One Service's share of the mesh config, and the inputs it was made from."""

    inputs: tuple[object, ...]
    clusters: dict[str, XdsResource]
    locality: dict[str, tuple[str, ...]]  # cluster -> failover labels
    port_routes: dict[PortKey, list[dict[str, Any]]]
    protocols: dict[PortKey, Protocol]
    port_refs: dict[PortKey, frozenset[str]]
    upstream_routes: dict[PortKey, XdsResource]
    consumers: dict[ConsumerKey, CallerRoutes]

    @property
    def route_refs(self) -> frozenset[str]:
        """The clusters this Service's HTTP routes send to, whoever calls."""
        return frozenset({*(c for pkey in self.port_routes for c in self.port_refs[pkey]),
                          *(c for v in self.consumers.values() for c in v.refs)})

    @property
    def needed(self) -> frozenset[str]:
        """What a caller of this Service needs: its clusters, and those its routes
        (HTTP or TCP, whoever calls) send to."""
        return frozenset({*self.clusters, *(c for r in self.port_refs.values() for c in r),
                          *(c for v in self.consumers.values() for c in v.refs)})


def service_inputs(index: MeshIndex, key: SvcKey, svc: Service, services: tuple[object, ...],
                   policies: tuple[object, ...]) -> tuple[object, ...]:
    """What `service_parts` reads. Coarse on purpose: any Service or policy change
    anywhere (`services`, `policies`) translates every Service again; a route change
    translates only the Services it attaches to."""
    return (svc, index.accounts.get(key), index.routes_by_parent.get(key, ()),
            index.grpc_routes_by_parent.get(key, ()),
            tuple(index.tcp_routes.get((key[0], key[1], p.port)) for p in svc.spec.ports),
            services, policies)


def service_parts(index: MeshIndex, key: SvcKey, svc: Service, settings: MeshSettings,
                  inputs: tuple[object, ...]) -> ServiceParts:
    policy = index.resilience.get(key)
    lb = policy.spec.load_balancer if policy is not None else None
    clusters: dict[str, XdsResource] = {}
    locality: dict[str, tuple[str, ...]] = {}
    for cname, cluster in outbound_clusters(svc, _identities(index, key, settings),
                                            policy).items():
        clusters[cname] = _res(CLUSTER, cname, cluster)
        if lb is not None and lb.locality is not None:
            locality[cname] = tuple(lb.locality.failover_priority)
    http = index.routes_by_parent.get(key, ())
    grpc = index.grpc_routes_by_parent.get(key, ())
    own_http, own_grpc = producer_routes(key, http, grpc)
    port_routes: dict[PortKey, list[dict[str, Any]]] = {}
    protocols: dict[PortKey, Protocol] = {}
    port_refs: dict[PortKey, frozenset[str]] = {}
    for port in svc.spec.ports:
        pkey = (key[0], key[1], port.port)
        protocols[pkey] = port.protocol
        if port.protocol.is_http:
            routes = http_port_routes(index, key, svc, port.port, own_http, own_grpc,
                                      port.protocol.is_h2)
            port_routes[pkey] = routes
            port_refs[pkey] = frozenset(cluster_refs(routes, set()))
        elif (troute := index.tcp_routes.get(pkey)) is not None:
            port_refs[pkey] = frozenset(c for c, _ in tcp_route_clusters(troute, index.services))
    upstream = {pkey: upstream_route_config(names.upstream_listener(*pkey), routes)
                for pkey, routes in port_routes.items()}
    return ServiceParts(inputs, clusters, locality, port_routes, protocols, port_refs,
                        upstream, _consumer_parts(index, key, svc, http, grpc))


def _consumer_parts(index: MeshIndex, key: SvcKey, svc: Service, http: tuple[HTTPRoute, ...],
                    grpc: tuple[GRPCRoute, ...]) -> dict[ConsumerKey, CallerRoutes]:
    """The ports' routes for callers in namespaces with consumer routes on them."""
    out: dict[ConsumerKey, CallerRoutes] = {}
    for ns, port, mine_http, mine_grpc in consumers(key, svc, http, grpc):
        pkey = (key[0], key[1], port.port)
        routes = http_port_routes(index, key, svc, port.port, mine_http, mine_grpc,
                                  port.protocol.is_h2)
        config = upstream_route_config(names.upstream_listener(*pkey), routes)
        out[(ns, pkey)] = CallerRoutes(routes, frozenset(cluster_refs(routes, set())), config)
    return out


def _res(type_url: str, name: str, message: Any) -> XdsResource:
    return XdsResource.from_message(type_url, name, message)
