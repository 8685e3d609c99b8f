"""The per-proxy half of translation: one proxy's snapshot, from the shared mesh.

`translate_proxy` adds to the mesh's shared clusters and endpoints (of the proxy's
egress scope) only what is the proxy's own: its listeners and the clusters they
bring (translate/proxylisteners.py), and its route configs. Nothing here may be
O(services) per proxy (see `MeshConfig.cluster_sum`).

Each part of the config is built beside the declaration of what it reads (its
`_inputs`), so the two are changed together; `proxy_inputs` is their sum. When a
later mesh gives equal inputs, the proxy's last config with the new endpoints
(`with_endpoints`) is what a translation would give, and the reconciler skips it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gossamer.contract.node import NodeMetadata
from gossamer.contract.protocol import Protocol
from gossamer.translate import names
from gossamer.translate.capture import capture_routes
from gossamer.translate.consistency import check_consistency
from gossamer.translate.consumer import port_route_config, port_route_refs
from gossamer.translate.external import via_cluster_resource
from gossamer.translate.gateway import gateway_inputs, translate_gateway
from gossamer.translate.listeners import inbound_route_config
from gossamer.translate.mesh import EDS_PREFIX, MeshConfig, ScopedView
from gossamer.translate.ondemand import demand_of, mirrored, on_demand_for, vhost_demand
from gossamer.translate.proxylisteners import ProxyListeners, listener_inputs, proxy_listeners
from gossamer.translate.scope import Scope
from gossamer.translate.serviceparts import upstream_route_config
from gossamer.translate.vhds import VHDS_OUTBOUND, by_vhds, outbound_vhosts
from gossamer.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, VHOST, Snapshot, XdsResource


@dataclass(frozen=True)
class ProxyConfig:
    proxy: NodeMetadata
    snapshot: Snapshot
    scope: Scope = None
    # proxy_inputs() of the mesh it was translated from: equal inputs, equal config.
    inputs: tuple[object, ...] = ()
    # Its listeners, kept by a later translation when what they read is unchanged.
    listeners: ProxyListeners | None = None


def proxy_inputs(mesh: MeshConfig, proxy: NodeMetadata,
                 tapped: bool = False) -> tuple[object, ...]:
    """What `translate_proxy` reads for this proxy, apart from endpoints: when a later
    mesh gives an equal tuple, the proxy's last config (`with_endpoints`) is what a
    translation would give, and a route change elsewhere costs this proxy only this.

    Resources are compared as objects: the reconciler keeps an unchanged resource's
    object across builds, so equality is mostly an identity check. Deliberately
    coarse where precision would be fragile: any policy change anywhere
    (`policy_inputs`) re-translates every proxy.
    """
    if proxy.ingress_gateway:  # translate/gateway/
        return gateway_inputs(mesh, proxy, tapped)
    return _inputs(mesh, proxy, mesh.scope_of(proxy), tapped)


def _inputs(mesh: MeshConfig, proxy: NodeMetadata, scope: Scope, tapped: bool,
            listeners: tuple[object, ...] | None = None) -> tuple[object, ...]:
    """The inputs of each part: listeners (given, or computed), clusters, routes."""
    if listeners is None:
        listeners = listener_inputs(mesh, proxy)
    return (listeners, scope, _cluster_inputs(mesh, scope),
            _route_inputs(mesh, proxy, scope), tapped,
            mirrored(mesh) if on_demand_for(mesh, proxy, scope) else None)


def _cluster_inputs(mesh: MeshConfig, scope: Scope) -> object:
    """What `_clusters` reads beyond the listeners' own clusters: the scope's shared
    ones, and the ExternalServices' (every proxy may call those)."""
    return mesh.view(scope).cluster_sum, mesh.external.key, tuple(
        mesh.clusters[n].version for n in sorted(mesh.external.mesh_refs) if n in mesh.clusters)


def _external_clusters(mesh: MeshConfig) -> dict[str, XdsResource]:
    """The ExternalServices' clusters, and the egress gateways' Service clusters their
    routes send to (with their endpoints, `proxy_endpoints`), whatever the scope."""
    refs = mesh.external.mesh_refs
    via = {n: via_cluster_resource(n, sni, mesh.clusters[gateway])
           for n, (gateway, sni) in mesh.external.via_clusters.items()
           if gateway in mesh.clusters}
    return {**mesh.external.clusters, **via, **{n: mesh.clusters[n] for n in refs
                                                if n in mesh.clusters}}


def _clusters(view: ScopedView, own: ProxyListeners,
              external: Mapping[str, XdsResource]) -> tuple[dict[str, XdsResource], int]:
    """The proxy's clusters, its own and the ExternalServices' on top of its scope's
    shared ones, and their sum."""
    extra = {**external, **own.extra} if external else own.extra
    return {**view.clusters, **extra}, _overlay_sum(view.clusters, view.cluster_sum, extra)


def _route_inputs(mesh: MeshConfig, proxy: NodeMetadata, scope: Scope) -> object:
    """What `_routes` reads beyond the listener inputs (which hold the upstreams'
    protocols and TCPRoutes, and capture's routes by content, `capture_inputs`): the
    route configs' contents and where they send."""
    upstreams = tuple(
        (port_route_refs(mesh, pkey, proxy.namespace), route.version if route else None)
        for up in proxy.upstreams
        for pkey in [(up.namespace, up.service, up.port)]
        for route in [port_route_config(mesh, pkey, proxy.namespace)])
    outbound: object = None
    if proxy.outbound_port and by_vhds(proxy, scope):
        # Not the virtual hosts themselves: `with_endpoints` gives a later mesh's in
        # O(1), so a route change elsewhere does not re-translate the proxy. Only
        # what the consistency check of their clusters reads.
        outbound = ("vhds", mesh.view(scope).route_refs)
    elif proxy.outbound_port:
        outbound = mesh.outbound_routes(proxy.namespace, scope).version
    return outbound, upstreams


@dataclass
class _Routes:
    """A proxy's route configs, the names its listeners give RDS, and every cluster
    its routes and TCP listeners send to (all must be in its snapshot)."""

    configs: dict[str, XdsResource]
    rds_refs: list[str]
    cluster_refs: set[str]
    # VHDS: the virtual hosts of `outbound` and their digest sum (translate/vhds.py).
    vhosts: Mapping[str, XdsResource] | None = None
    vhost_sum: int = 0
    # The clusters the dedicated upstream listeners' routes send to: never on
    # demand (translate/ondemand.py).
    eager: set[str] = field(default_factory=set)


def _routes(mesh: MeshConfig, proxy: NodeMetadata, scope: Scope, view: ScopedView,
            own: ProxyListeners, tapped: bool) -> _Routes:
    out = _Routes({}, [], set())
    if own.inbound_http is not None:
        inbound = inbound_route_config(own.inbound_http, tapped)
        out.configs[names.INBOUND_ROUTES] = XdsResource.from_message(
            ROUTE, names.INBOUND_ROUTES, inbound)
        out.rds_refs.append(names.INBOUND_ROUTES)
        out.cluster_refs.add(own.inbound_http)
    if proxy.outbound_port:
        if by_vhds(proxy, scope):
            out.configs[names.OUTBOUND_ROUTES] = VHDS_OUTBOUND
            vhosts = outbound_vhosts(mesh, proxy.namespace, scope)
            out.vhosts, out.vhost_sum = vhosts.resources, vhosts.total
        else:
            out.configs[names.OUTBOUND_ROUTES] = mesh.outbound_routes(proxy.namespace, scope)
        out.cluster_refs.update(view.route_refs, mesh.external.refs)
        out.rds_refs.append(names.OUTBOUND_ROUTES)
    for up in proxy.upstreams:
        pkey = (up.namespace, up.service, up.port)
        refs = port_route_refs(mesh, pkey, proxy.namespace) or ()
        out.eager.update(refs)
        out.eager.add(names.outbound_cluster(*pkey))
        out.cluster_refs.update(refs)
        if mesh.protocols.get(pkey) is Protocol.TCP:
            if pkey not in mesh.index.tcp_routes:
                out.cluster_refs.add(names.outbound_cluster(*pkey))
            continue
        lname = names.upstream_listener(*pkey)
        route = port_route_config(mesh, pkey, proxy.namespace) or \
            upstream_route_config(lname, None)
        out.configs[route.name] = route
        out.rds_refs.append(route.name)
    if proxy.capture is not None:
        capture_configs, capture_refs = capture_routes(mesh, proxy, scope)
        out.configs.update(capture_configs)
        out.rds_refs.extend(capture_configs)
        out.cluster_refs.update(view.route_refs, capture_refs)
    return out


def translate_proxy(mesh: MeshConfig, proxy: NodeMetadata,
                    previous: ProxyConfig | None = None, tapped: bool = False) -> ProxyConfig:
    """`previous`: the proxy's config from an earlier mesh, whose listeners are kept
    when what they read is unchanged (a route change re-sends routes, not listeners:
    building a proxy's listeners is most of its translation). `tapped`: a tap session
    of this proxy runs (an input like the store's, kept by the reconciler): its
    inbound route keeps the tap filter on."""
    if proxy.ingress_gateway:  # not a sidecar
        snapshot, gateway_scope = translate_gateway(mesh, proxy, tapped)
        return ProxyConfig(proxy, snapshot, gateway_scope, gateway_inputs(mesh, proxy, tapped))
    scope = mesh.scope_of(proxy)
    view = mesh.view(scope)
    key = listener_inputs(mesh, proxy)
    own = previous.listeners if previous is not None else None
    if own is None or own.inputs != key:
        own = proxy_listeners(mesh, proxy, key)
    clusters, cluster_sum = _clusters(view, own, _external_clusters(mesh))
    routes = _routes(mesh, proxy, scope, view, own, tapped)
    eds_refs = [*view.eds_missing, *(n for n in own.extra if n.startswith(EDS_PREFIX)),
                *(n for n in mesh.external.mesh_refs if n not in view.endpoints)]
    check_consistency(eds_refs=eds_refs, endpoints=[n for n in eds_refs if n in mesh.endpoints],
                      rds_refs=routes.rds_refs, routes=routes.configs,
                      listener_ports=dict(own.ports),
                      cluster_refs=routes.cluster_refs - {names.NO_ROUTE_CLUSTER},
                      clusters=clusters)
    endpoints, endpoint_sum = proxy_endpoints(mesh, proxy, scope)
    demand = None
    if on_demand_for(mesh, proxy, scope):
        eager = routes.eager | own.extra.keys() | mesh.external.refs | mesh.external.mesh_refs
        demand = demand_of(mesh, proxy, view, frozenset(eager))
    snapshot = Snapshot.build({CLUSTER: clusters, ENDPOINT: endpoints,
                               LISTENER: dict(own.listeners), ROUTE: routes.configs,
                               VHOST: routes.vhosts or {}},
                              {CLUSTER: cluster_sum, ENDPOINT: endpoint_sum,
                               VHOST: routes.vhost_sum}, demand)
    return ProxyConfig(proxy, snapshot, scope, _inputs(mesh, proxy, scope, tapped, key), own)


def proxy_endpoints(mesh: MeshConfig, proxy: NodeMetadata,
                    scope: Scope) -> tuple[Mapping[str, XdsResource], int]:
    """The proxy's endpoints (the shared ones of its scope, with its locality's
    priorities where a Service asks for them) and their `digest_sum`."""
    view = mesh.view(scope)
    gateways = {n: mesh.endpoints[n] for n in mesh.external.mesh_refs
                if n in mesh.endpoints and n not in view.endpoints}  # egress gateways
    if not mesh.locality and not gateways:
        return view.endpoints, view.endpoint_sum
    caller = mesh.caller_labels(proxy)
    local = {c: mesh.endpoints_for(c, caller) for c in mesh.locality
             if c in view.endpoints or c in gateways}
    local = {**gateways, **local}
    return ({**view.endpoints, **local},
            _overlay_sum(view.endpoints, view.endpoint_sum, local))


def with_endpoints(mesh: MeshConfig, proxy: NodeMetadata, config: ProxyConfig) -> ProxyConfig:
    """The proxy's previous config from an earlier mesh, with this mesh's endpoints
    (after `update_endpoints`) and, by VHDS, virtual hosts: O(1) per proxy instead
    of a whole translation. The caller has checked that the inputs are equal (or
    only health changed, which changes no scope), so the last scope still holds."""
    endpoints, total = proxy_endpoints(mesh, proxy, config.scope)
    snapshot = config.snapshot.replace_type(ENDPOINT, endpoints, total)
    if proxy.outbound_port and by_vhds(proxy, config.scope):
        vhosts = outbound_vhosts(mesh, proxy.namespace, config.scope)
        if snapshot.version(VHOST) != vhosts.version:
            demand = (vhost_demand(mesh, proxy.namespace, config.scope)
                      if snapshot.demand(VHOST) is not None else None)
            snapshot = snapshot.replace_type(VHOST, vhosts.resources, vhosts.total, demand)
    return ProxyConfig(proxy, snapshot, config.scope, config.inputs, config.listeners)


def _overlay_sum(base: Mapping[str, XdsResource], base_sum: int,
                 extra: Mapping[str, XdsResource]) -> int:
    """digest_sum of base updated with extra, in O(len(extra))."""
    total = base_sum + sum(r.digest for r in extra.values())
    return total - sum(base[n].digest for n in extra if n in base)
