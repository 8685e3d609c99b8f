"""One gateway replica's snapshot: its listeners, route configs and certificates, over
the shared mesh's clusters and endpoints of the Services its routes send to.

A gateway's upstream clusters are the mesh's own (translate/mesh.py): mTLS with the
gateway's SPIFFE identity from its agent's SDS, so an AuthorizationPolicy can name
the gateway like any workload. Its certificates (TLS Secrets) reach only its Envoy,
as SDS secrets on its ADS stream.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.route.v3.route_pb2 import RouteConfiguration
from google.protobuf.message import Message

from gossamer.contract.node import NodeMetadata
from gossamer.index import MeshIndex, SvcKey
from gossamer.index.gateways import GatewayView, ListenerView, backend_keys
from gossamer.model import RequestAuthentication, TCPRoute, TLSRoute
from gossamer.model.policy import gateway_target
from gossamer.translate import names
from gossamer.translate.consistency import check_consistency
from gossamer.translate.gateway.listeners import (
    EdgeHttp,
    envoy_secret,
    port_listener,
    secret_name,
)
from gossamer.translate.gateway.routes import port_route_config, route_config_name
from gossamer.translate.jwt import jwks_cluster, jwks_uris, jwt_filter
from gossamer.translate.mesh import EDS_PREFIX, MeshConfig
from gossamer.translate.protos import build
from gossamer.translate.ratelimit import policy_filters
from gossamer.translate.serviceparts import cluster_refs
from gossamer.translate.tcproutes import tcp_route_clusters
from gossamer.translate.telemetry import proxy_access_log
from gossamer.translate.tracing import proxy_tracing
from gossamer.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, Snapshot, XdsResource


def gateway_view(mesh: MeshConfig, proxy: NodeMetadata) -> GatewayView | None:
    assert proxy.gateway is not None
    return mesh.index.gateways.get((proxy.namespace, proxy.gateway))


def gateway_scope(view: GatewayView | None) -> frozenset[SvcKey]:
    """The Services the gateway's routes may send (or mirror) to: its clusters."""
    keys: set[SvcKey] = set()
    if view is None:
        return frozenset()
    for lst in view.serving:
        for route, _ in lst.routes:
            keys.update(backend_keys(route) - view.refused.get(route.key, frozenset()))
    return frozenset(keys)


def edge_jwt(index: MeshIndex, view: GatewayView) -> list[RequestAuthentication]:
    """The RequestAuthentications that target this Gateway."""
    ns, name = view.key
    return [p for p in index.request_authentications
            if p.metadata.namespace == ns and gateway_target(p) == name]


def _required_jwt(policies: list[RequestAuthentication]) -> dict[str, Any] | None:
    """At the edge a token is required: nothing behind the gateway could still ask for
    one (in the mesh, AuthorizationPolicy does), so a request without one gets 401."""
    found = jwt_filter(policies)
    if found is None:
        return None
    requires = found["typedConfig"]["rules"][0]["requires"]["requiresAny"]
    requires["requirements"] = [r for r in requires["requirements"] if "allowMissing" not in r]
    if len(requires["requirements"]) == 1:
        found["typedConfig"]["rules"][0]["requires"] = requires["requirements"][0]
    return found


def gateway_inputs(mesh: MeshConfig, proxy: NodeMetadata,
                   tapped: bool = False) -> tuple[object, ...]:
    """What `translate_gateway` reads besides endpoints (see translate/proxy.py)."""
    view = gateway_view(mesh, proxy)
    scope = gateway_scope(view)
    return (proxy, view, mesh.policy_inputs, mesh.services_epoch,
            mesh.view(scope).cluster_sum, mesh.settings, tapped)


def _res(type_url: str, name: str, message: Message) -> XdsResource:
    return XdsResource.from_message(type_url, name, message)


def _by_port(view: GatewayView) -> dict[int, list[ListenerView]]:
    out: dict[int, list[ListenerView]] = defaultdict(list)
    for lst in view.serving:
        out[lst.listener.port].append(lst)
    return out


def translate_gateway(mesh: MeshConfig, proxy: NodeMetadata, tapped: bool = False
                      ) -> tuple[Snapshot, frozenset[SvcKey]]:
    """The gateway's snapshot and its scope (the Services it sends to). A gateway
    whose Gateway does not exist (yet) gets no listeners. `tapped`: a tap session of
    this replica runs (its routes keep the tap filter on)."""
    view = gateway_view(mesh, proxy)
    scope = gateway_scope(view)
    shared = mesh.view(scope)
    clusters: dict[str, XdsResource] = dict(shared.clusters)
    listeners: dict[str, XdsResource] = {}
    routes: dict[str, XdsResource] = {}
    secrets: dict[str, XdsResource] = {}
    ports: dict[str, int] = {}
    refs: set[str] = set()
    if view is not None:
        policies = edge_jwt(mesh.index, view)
        own = frozenset({(proxy.namespace, proxy.service)})
        tracing = proxy_tracing(mesh.index, proxy.namespace, own, proxy.service,
                                proxy.workload)
        if tracing is not None:
            clusters[tracing.cluster.name] = _res(CLUSTER, tracing.cluster.name,
                                                  tracing.cluster)
        limits = mesh.index.gateway_rate_limits.get(view.key)
        edge = EdgeHttp(_required_jwt(policies),
                        tuple(policy_filters(limits)) if limits is not None else (),
                        proxy_access_log(mesh.index, proxy, own, "inbound"),
                        tracing.hcm if tracing is not None else None)
        for uri in jwks_uris(policies):
            cluster: Cluster = jwks_cluster(uri, mesh.settings.jwks_ca_file)
            clusters[cluster.name] = _res(CLUSTER, cluster.name, cluster)
        for port, lsts in sorted(_by_port(view).items()):
            lis = port_listener(view, proxy.inbound_address, port, lsts, edge,
                                mesh.index.services)
            if lis is None:
                continue
            listeners[lis.name] = _res(LISTENER, lis.name, lis)
            ports[lis.name] = port
            refs.update(c for lst in lsts for route, _ in lst.routes
                        if isinstance(route, TCPRoute | TLSRoute)
                        for c, _ in tcp_route_clusters(
                            route, view.services_for(route, mesh.index.services)))
            if any(lst.listener.protocol in ("HTTP", "HTTPS") for lst in lsts):
                config = port_route_config(mesh.index, view, port, lsts, tapped)
                refs.update(cluster_refs(config["virtualHosts"], set()))
                routes[route_config_name(port)] = _res(
                    ROUTE, route_config_name(port), build(RouteConfiguration, config))
            for lst in lsts:
                secrets.update((secret_name(s), _res(SECRET, secret_name(s), envoy_secret(s)))
                               for s in lst.certificates)
    eds = [n for n in clusters if n.startswith(EDS_PREFIX)]
    check_consistency(eds_refs=eds, endpoints=[n for n in eds if n in shared.endpoints],
                      rds_refs=list(routes), routes=routes, listener_ports=ports,
                      cluster_refs=refs - {names.NO_ROUTE_CLUSTER}, clusters=clusters)
    snapshot = Snapshot.build({CLUSTER: clusters, ENDPOINT: shared.endpoints,
                               LISTENER: listeners, ROUTE: routes, SECRET: secrets})
    return snapshot, scope

