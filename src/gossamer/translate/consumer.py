"""Which routes of a Service port a caller follows: GAMMA producer and consumer routes.

A route (HTTPRoute, GRPCRoute) in its parent Service's namespace is a producer route
and applies to every caller. A route in another namespace is a consumer route
(GEP-1294, "Namespace boundaries"): it applies only to callers in the route's
namespace, so an unrelated namespace cannot reshape the traffic between two others.
For a caller in a namespace with consumer routes on a Service port, those routes
replace the producer's (they are not merged); every other caller follows the
producer routes. This is decided per port: consumer routes that attach to port 80
only leave the caller's other ports on the producer routes.

Only Service ports that have consumer routes get a per-namespace variant
(`CallerRoutes`); every other caller shares the port's one route config
(`MeshConfig.upstream_routes`), so a mesh without consumer routes costs nothing
more. `port_route_config` is the one place that picks: every path a caller's
request takes (outbound, VHDS, dedicated upstream listeners, capture) goes through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from typing import Protocol as Structural

from gossamer.index import MeshIndex, PortKey, SvcKey
from gossamer.model import GRPCRoute, HTTPRoute, Service
from gossamer.model.service import ServicePort
from gossamer.translate import names
from gossamer.translate.fault import with_fault
from gossamer.translate.grpcroutes import grpc_service_routes
from gossamer.translate.routes import attaches, service_routes, with_called_stats
from gossamer.xds.types import XdsResource

ConsumerKey = tuple[str, PortKey]  # (the callers' namespace, the Service port)


@dataclass(frozen=True)
class CallerRoutes:
    """A Service port's routes as the callers in one namespace see them."""

    routes: list[dict[str, Any]]
    refs: frozenset[str]  # the clusters they send or mirror to
    config: XdsResource  # the port's upstream route config, with these routes


class RoutesView(Structural):
    """What choosing a caller's routes reads of the translated mesh (MeshConfig)."""

    @property
    def upstream_routes(self) -> dict[PortKey, XdsResource]: ...

    @property
    def port_refs(self) -> dict[PortKey, frozenset[str]]: ...

    @property
    def consumer_routes(self) -> dict[ConsumerKey, CallerRoutes]: ...


def _variant(mesh: RoutesView, pkey: PortKey, namespace: str) -> CallerRoutes | None:
    return mesh.consumer_routes.get((namespace, pkey)) if mesh.consumer_routes else None


def port_route_config(mesh: RoutesView, pkey: PortKey, namespace: str) -> XdsResource | None:
    """The route config (`upstream|PORT||SVC.NS`) of an HTTP Service port for a caller
    in `namespace`: its namespace's consumer routes where it has some, else the
    producer routes. None: not an HTTP port of a Service in the mesh."""
    variant = _variant(mesh, pkey, namespace)
    return variant.config if variant is not None else mesh.upstream_routes.get(pkey)


def port_route_refs(mesh: RoutesView, pkey: PortKey, namespace: str) -> frozenset[str] | None:
    """The clusters `port_route_config` of the same caller sends to."""
    variant = _variant(mesh, pkey, namespace)
    return variant.refs if variant is not None else mesh.port_refs.get(pkey)


def has_variant(mesh: RoutesView, pkey: PortKey, namespace: str) -> bool:
    """Whether callers in `namespace` follow consumer routes on this port."""
    return _variant(mesh, pkey, namespace) is not None


def http_port_routes(index: MeshIndex, key: SvcKey, svc: Service, port: int,
                     http: Sequence[HTTPRoute], grpc: Sequence[GRPCRoute],
                     h2: bool) -> list[dict[str, Any]]:
    """The Envoy routes of an HTTP Service port made of these routes (the default
    route when none attaches): GRPCRoutes first on an h2 port, the port's fault
    policy, the called stats of a port that sends elsewhere."""
    grpc_routes = grpc_service_routes(svc, port, grpc, index.services,
                                      index.resilience) if h2 else []
    routes = with_fault(service_routes(svc, port, http, index.services, index.resilience,
                                       grpc_routes), index.faults.get(key))
    return with_called_stats(routes, names.outbound_cluster(key[0], key[1], port))


def producer_routes(key: SvcKey, http: Sequence[HTTPRoute],
                    grpc: Sequence[GRPCRoute]) -> tuple[list[HTTPRoute], list[GRPCRoute]]:
    """The routes in the Service's own namespace: what every other caller follows."""
    return ([r for r in http if r.metadata.namespace == key[0]],
            [r for r in grpc if r.metadata.namespace == key[0]])


def consumers(key: SvcKey, svc: Service, http: Sequence[HTTPRoute], grpc: Sequence[GRPCRoute]
              ) -> list[tuple[str, ServicePort, list[HTTPRoute], list[GRPCRoute]]]:
    """The consumer routes of each (callers' namespace, HTTP port) that has some, in
    (namespace, port) order. A GRPCRoute counts only on an h2 port (the only ports
    it routes)."""
    namespaces = sorted({r.metadata.namespace for r in [*http, *grpc]} - {key[0]})
    out = []
    for ns in namespaces:
        mine_http = [r for r in http if r.metadata.namespace == ns]
        mine_grpc = [r for r in grpc if r.metadata.namespace == ns]
        for port in svc.spec.ports:
            if not port.protocol.is_http:
                continue
            on_port = any(attaches(r.spec.parent_refs, ns, svc, port.port) for r in mine_http)
            on_port = on_port or (port.protocol.is_h2 and any(
                attaches(r.spec.parent_refs, ns, svc, port.port) for r in mine_grpc))
            if on_port:
                out.append((ns, port, mine_http, mine_grpc))
    return out
