"""Assemble snapshots: shared mesh-wide resources once per index, then per proxy.

Everything that does not depend on the proxy (clusters, endpoints, each
service's routes) is built and serialized once per index and the same
`XdsResource` objects are shared by every proxy's snapshot. A proxy with an
egress scope (translate/scope.py) gets the subset for the Services in it, and
proxies with the same scope share that subset (`MeshConfig.view`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from envoy.config.route.v3.route_components_pb2 import VirtualHost
from envoy.config.route.v3.route_pb2 import RouteConfiguration

from gossamer.identity import SpiffeId
from gossamer.index import MeshIndex, SvcKey
from gossamer.model import Service, Workload
from gossamer.model.service import Protocol
from gossamer.translate import names
from gossamer.translate.adaptive import inbound_traffic_filters
from gossamer.translate.capture import capture_inputs, capture_listeners, capture_routes
from gossamer.translate.clusters import inbound_cluster, outbound_clusters
from gossamer.translate.consistency import check_consistency
from gossamer.translate.endpoints import load_assignment, locality_assignment
from gossamer.translate.fault import with_fault
from gossamer.translate.grpcroutes import grpc_service_routes
from gossamer.translate.listeners import (
    InboundSecurity,
    http_outbound_listener,
    inbound_listener,
    tcp_outbound_listener,
    tcp_split_listener,
)
from gossamer.translate.protos import build
from gossamer.translate.proxy import ProxyIdentity, Upstream
from gossamer.translate.ratelimit import ratelimit_filters
from gossamer.translate.resilience import tcp_settings
from gossamer.translate.routes import UNREACHABLE_HEADER, service_routes, with_called_stats
from gossamer.translate.scope import Scope, SidecarIndex, egress_scope
from gossamer.translate.security import InboundKey, inbound_security
from gossamer.translate.settings import MeshSettings
from gossamer.translate.tcproutes import tcp_route_clusters
from gossamer.translate.telemetry import proxy_access_log
from gossamer.translate.tracing import ProxyTracing, proxy_tracing
from gossamer.xds.types import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    Snapshot,
    XdsResource,
    digest_sum,
)

PortKey = tuple[str, str, int]  # (namespace, service, port)
EDS_PREFIX = "outbound|"
NO_SERVICE_VHOST = {
    "name": names.NO_SERVICE_ROUTE, "domains": ["*"],
    "routes": [{"name": names.NO_SERVICE_ROUTE, "match": {"prefix": "/"}, "directResponse": {
        "status": 404,
        "body": {"inlineString": "gossamer: no mesh service matches this request's host\n"},
    }}],
}

_NO_SERVICE = build(VirtualHost, NO_SERVICE_VHOST)


@dataclass(frozen=True)
class ScopedView:
    """The shared clusters and endpoints of one egress scope, and their digest sums."""

    clusters: Mapping[str, XdsResource]
    cluster_sum: int
    endpoints: Mapping[str, XdsResource]
    endpoint_sum: int
    # EDS clusters without an assignment (always none, unless translation has a bug).
    eds_missing: tuple[str, ...]
    # The clusters the scope's HTTP routes send to (for the consistency check).
    route_refs: frozenset[str] = frozenset()


def _cluster_refs(node: object, out: set[str]) -> set[str]:
    """Every cluster an Envoy route (or route list) sends or mirrors to."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "cluster" and isinstance(value, str):
                out.add(value)
            elif key == "weightedClusters" and isinstance(value, dict):
                out.update(c["name"] for c in value.get("clusters", ()))
            else:
                _cluster_refs(value, out)
    elif isinstance(node, list):
        for item in node:
            _cluster_refs(item, out)
    return out


@dataclass
class MeshConfig:
    index: MeshIndex
    clusters: dict[str, XdsResource]
    endpoints: dict[str, XdsResource]
    # Envoy routes of each HTTP service port (dicts, placed into virtual hosts per caller).
    port_routes: dict[PortKey, list[dict[str, Any]]]
    protocols: dict[PortKey, Protocol]
    # Route configs of per-upstream listeners, and the per-namespace `outbound` one.
    upstream_routes: dict[PortKey, XdsResource] = field(default_factory=dict)
    settings: MeshSettings = field(default_factory=MeshSettings)
    # Clusters whose Service prefers the caller's locality: the failover labels.
    locality: dict[str, tuple[SvcKey, tuple[str, ...]]] = field(default_factory=dict)
    # The Service behind each outbound (EDS) cluster.
    cluster_services: dict[str, SvcKey] = field(default_factory=dict)
    # The clusters each service port's routes (or TCPRoute) send to.
    port_refs: dict[PortKey, frozenset[str]] = field(default_factory=dict)
    _views: dict[Scope, ScopedView] = field(default_factory=dict)
    _sidecars: SidecarIndex | None = None
    _workloads: dict[tuple[str, str], Workload] | None = None
    # Every policy object and the settings: what all inbound sides read (proxy_inputs).
    policy_inputs: tuple[object, ...] = ()
    # The clusters whose endpoints changed since the previous mesh (update_endpoints,
    # translate_mesh(previous=)), and the Services translate_mesh did not reuse.
    endpoint_changes: set[str] = field(default_factory=set)
    changed_services: set[SvcKey] = field(default_factory=set)
    # Every Service object (translate_mesh's reuse of a Service's parts).
    services_epoch: tuple[object, ...] = ()
    _parts: dict[SvcKey, _ServiceParts] = field(default_factory=dict)
    # The previous mesh's outbound route configs, by content (outbound_routes).
    _outbound_prior: dict[tuple[object, ...], XdsResource] = field(default_factory=dict)
    _outbound_routes: dict[tuple[object, ...], XdsResource] = field(default_factory=dict)
    _outbound_here: dict[tuple[str, Scope], XdsResource] = field(default_factory=dict)
    _vhosts: dict[tuple[PortKey, bool], VirtualHost] = field(default_factory=dict)
    _local_endpoints: dict[tuple[str, tuple[str | None, ...]], XdsResource] = field(
        default_factory=dict)
    _workload_labels: dict[tuple[str, str], Mapping[str, str]] | None = None
    _inbound: dict[InboundKey, tuple[InboundSecurity, tuple[XdsResource, ...]]] = field(
        default_factory=dict)
    # Once per mesh rather than once per proxy (they are O(services)): the digest
    # sums behind the shared clusters' and endpoints' versions, and the shared EDS
    # clusters without an assignment (always none, unless translation has a bug).
    cluster_sum: int = 0
    endpoint_sum: int = 0
    eds_missing: tuple[str, ...] = ()
    # Issue 21: capture's shared parts, per (namespace, scope, mode) (translate/capture.py).
    capture_memo: dict[object, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.seal()

    def seal(self) -> None:
        """Derive the shared sums and views, once the mesh's maps are complete."""
        # Shared as is by every proxy without locality overrides (never mutated).
        self.endpoints_view: Mapping[str, XdsResource] = MappingProxyType(self.endpoints)
        self.cluster_sum = digest_sum(self.clusters)
        self.endpoint_sum = digest_sum(self.endpoints)
        self.eds_missing = tuple(n for n in self.clusters
                                 if n.startswith(EDS_PREFIX) and n not in self.endpoints)
        if not self.policy_inputs:
            self.policy_inputs = _policy_inputs(self.index, self.settings)

    def workload(self, namespace: str, name: str) -> Workload | None:
        if self._workloads is None:
            self._workloads = {(w.metadata.namespace, w.metadata.name): w
                               for w in self.index.workloads}
        return self._workloads.get((namespace, name))

    def outbound_routes(self, namespace: str, scope: Scope = None) -> XdsResource:
        """Memoized: callers in one namespace with one scope share the `outbound`
        route config. Keyed by content (the versions of the Services' route configs),
        so the previous mesh's config is kept when none of its Services changed."""
        here = self._outbound_here.get((namespace, scope))
        if here is not None:
            return here
        if scope is None:
            pkeys = sorted(self.port_routes)
        else:
            pkeys = sorted(pkey for key in scope if key in self._parts
                           for pkey in self._parts[key].port_routes)
        slot = (namespace, scope, tuple(self.upstream_routes[p].version for p in pkeys))
        if slot not in self._outbound_routes:
            self._outbound_routes[slot] = self._outbound_prior.get(slot) or \
                _outbound_route_config(self, namespace, pkeys)
        self._outbound_here[(namespace, scope)] = self._outbound_routes[slot]
        return self._outbound_routes[slot]

    def sidecar_index(self) -> SidecarIndex:
        if self._sidecars is None:
            self._sidecars = SidecarIndex(self.index)
        return self._sidecars

    def scope_of(self, proxy: ProxyIdentity) -> Scope:
        return egress_scope(self.sidecar_index(), proxy, self.caller_labels(proxy))

    def view(self, scope: Scope) -> ScopedView:
        """Memoized: the shared clusters and endpoints a proxy with `scope` gets."""
        if scope not in self._views:
            self._views[scope] = self._whole_view() if scope is None else self._subset(scope)
        return self._views[scope]

    def _whole_view(self) -> ScopedView:
        return ScopedView(self.clusters, self.cluster_sum, self.endpoints_view,
                          self.endpoint_sum, self.eds_missing)

    def _subset(self, scope: frozenset[SvcKey]) -> ScopedView:
        parts = [self._parts[key] for key in scope if key in self._parts]
        names_ = sorted({n for p in parts for n in p.needed if n in self.clusters})
        clusters = {n: self.clusters[n] for n in names_}
        endpoints = {n: self.endpoints[n] for n in names_ if n in self.endpoints}
        missing = tuple(n for n in names_ if n.startswith(EDS_PREFIX) and n not in endpoints)
        refs = frozenset(c for p in parts for c in p.route_refs)
        return ScopedView(clusters, digest_sum(clusters), MappingProxyType(endpoints),
                          digest_sum(endpoints), missing, refs)

    def caller_labels(self, proxy: ProxyIdentity) -> dict[str, str]:
        """The registered Workload's labels, overlaid by what the agent declared."""
        if self._workload_labels is None:
            self._workload_labels = {(w.metadata.namespace, w.metadata.name): w.metadata.labels
                                     for w in self.index.workloads}
        return {**self._workload_labels.get((proxy.namespace, proxy.workload), {}),
                **dict(proxy.labels)}

    def endpoints_for(self, cluster: str, caller: Mapping[str, str]) -> XdsResource:
        """Memoized: callers sharing the values of the failover labels share the
        endpoint priorities, so a zone's proxies share one resource."""
        if cluster not in self.locality:
            return self.endpoints[cluster]
        key, failover = self.locality[cluster]
        values = tuple(caller.get(label) for label in failover)
        slot = (cluster, values)
        if slot not in self._local_endpoints:
            cla = locality_assignment(cluster, self.index.endpoints.get(key, ()),
                                      caller, failover)
            self._local_endpoints[slot] = _res(ENDPOINT, cluster, cla)
        return self._local_endpoints[slot]

    def inbound_security(self, key: InboundKey) -> tuple[InboundSecurity,
                                                         tuple[XdsResource, ...]]:
        """Memoized: the replicas of a service share their policies' filters and
        the JWKS clusters those need."""
        if key not in self._inbound:
            security, jwks = inbound_security(self.index, self.settings, key)
            if key[4] is not Protocol.TCP:
                # After authentication and RBAC: denied requests consume no quota.
                security = replace(security, http_filters=security.http_filters
                                   + ratelimit_filters(self.index, key[1]))
            self._inbound[key] = security, tuple(_res(CLUSTER, c.name, c) for c in jwks)
        return self._inbound[key]


@dataclass(frozen=True)
class ProxyConfig:
    proxy: ProxyIdentity
    snapshot: Snapshot
    scope: Scope = None
    # proxy_inputs() of the mesh it was translated from: equal inputs, equal config.
    inputs: tuple[object, ...] = ()
    # Its listeners, kept by a later translation when what they read is unchanged.
    listeners: _Listeners | None = None


def _res(type_url: str, name: str, message: Any) -> XdsResource:
    return XdsResource.from_message(type_url, name, message)


def _default_port(service: Service) -> int:
    ports = [p.port for p in service.spec.ports]
    return 80 if 80 in ports else ports[0]


def _virtual_host(mesh: MeshConfig, pkey: PortKey, same_ns: bool) -> VirtualHost:
    """The port's routes under the names a caller uses. The routes are those of the
    port's upstream route config, already built (and canonicalized) from the same
    `port_routes`: parsing them back from its bytes costs a thirtieth of building
    them again, which after a restart (an empty build memo) was a tenth of the
    control plane's CPU while the proxies reconnected."""
    ns, name, port = pkey
    svc = mesh.index.services[(ns, name)]
    domains = names.service_domains(name, ns, port, same_ns=same_ns,
                                    default_port=port == _default_port(svc))
    upstream = RouteConfiguration.FromString(mesh.upstream_routes[pkey].payload)
    vhost = VirtualHost(name=f"{name}.{ns}:{port}", domains=domains)
    vhost.routes.extend(upstream.virtual_hosts[0].routes)
    return vhost


def _outbound_route_config(mesh: MeshConfig, namespace: str,
                           pkeys: list[PortKey]) -> XdsResource:
    """The catch-all listener's routes: a virtual host per Service port in scope
    (`pkeys`, sorted; only the scope's own, so a sidecar that calls 3 Services of
    1000 costs 3 steps, not 1000). Assembled from each port's VirtualHost, built
    once per mesh and shared by every scope it is in (the same message ParseDict
    of the whole config gives)."""
    config = RouteConfiguration(name=names.OUTBOUND_ROUTES,
                                response_headers_to_remove=[UNREACHABLE_HEADER])
    config.validate_clusters.SetInParent()  # present and false, as in the JSON form
    for pkey in pkeys:
        slot = (pkey, pkey[0] == namespace)
        if slot not in mesh._vhosts:
            mesh._vhosts[slot] = _virtual_host(mesh, pkey, pkey[0] == namespace)
        config.virtual_hosts.append(mesh._vhosts[slot])
    config.virtual_hosts.append(_NO_SERVICE)
    return _res(ROUTE, names.OUTBOUND_ROUTES, config)


def _upstream_route_config(name: str, routes: list[dict[str, Any]] | None) -> XdsResource:
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
class _ServiceParts:
    """One Service's share of the mesh config, and the inputs it was made from."""

    inputs: tuple[object, ...]
    clusters: dict[str, XdsResource]
    locality: dict[str, tuple[str, ...]]  # cluster -> failover labels
    port_routes: dict[PortKey, list[dict[str, Any]]]
    protocols: dict[PortKey, Protocol]
    port_refs: dict[PortKey, frozenset[str]]
    upstream_routes: dict[PortKey, XdsResource]

    @property
    def route_refs(self) -> frozenset[str]:
        """The clusters this Service's HTTP routes send to."""
        return frozenset(c for pkey in self.port_routes for c in self.port_refs[pkey])

    @property
    def needed(self) -> frozenset[str]:
        """What a caller of this Service needs: its clusters, and those its routes
        (HTTP or TCP) send to."""
        return frozenset({*self.clusters, *(c for r in self.port_refs.values() for c in r)})


def _service_inputs(index: MeshIndex, key: SvcKey, svc: Service, services: tuple[object, ...],
                    policies: tuple[object, ...]) -> tuple[object, ...]:
    """What `_service_parts` reads. Coarse on purpose: any Service or policy change
    anywhere (`services`, `policies`) translates every Service again; a route change
    translates only the Services it attaches to."""
    return (svc, index.accounts.get(key), index.routes_by_parent.get(key, ()),
            index.grpc_routes_by_parent.get(key, ()),
            tuple(index.tcp_routes.get((key[0], key[1], p.port)) for p in svc.spec.ports),
            services, policies)


def _service_parts(index: MeshIndex, key: SvcKey, svc: Service, settings: MeshSettings,
                   inputs: tuple[object, ...]) -> _ServiceParts:
    policy = index.resilience.get(key)
    lb = policy.spec.load_balancer if policy is not None else None
    clusters: dict[str, XdsResource] = {}
    locality: dict[str, tuple[str, ...]] = {}
    for cname, cluster in outbound_clusters(svc, _identities(index, key, settings),
                                            policy).items():
        clusters[cname] = _res(CLUSTER, cname, cluster)
        if lb is not None and lb.locality is not None:
            locality[cname] = tuple(lb.locality.failover_priority)
    attached = index.routes_by_parent.get(key, ())
    port_routes: dict[PortKey, list[dict[str, Any]]] = {}
    protocols: dict[PortKey, Protocol] = {}
    port_refs: dict[PortKey, frozenset[str]] = {}
    for port in svc.spec.ports:
        pkey = (key[0], key[1], port.port)
        protocols[pkey] = port.protocol
        if port.protocol.is_http:
            grpc = grpc_service_routes(svc, port.port, index.grpc_routes_by_parent.get(
                key, ()), index.services, index.resilience) if port.protocol.is_h2 else []
            routes = with_fault(service_routes(svc, port.port, attached, index.services,
                                               index.resilience, grpc), index.faults.get(key))
            routes = with_called_stats(routes, names.outbound_cluster(*pkey))
            port_routes[pkey] = routes
            port_refs[pkey] = frozenset(_cluster_refs(routes, set()))
        elif (troute := index.tcp_routes.get(pkey)) is not None:
            port_refs[pkey] = frozenset(c for c, _ in tcp_route_clusters(troute, index.services))
    upstream = {pkey: _upstream_route_config(names.upstream_listener(*pkey), routes)
                for pkey, routes in port_routes.items()}
    return _ServiceParts(inputs, clusters, locality, port_routes, protocols, port_refs,
                         upstream)


def _policy_inputs(index: MeshIndex, settings: MeshSettings) -> tuple[object, ...]:
    return (settings, *index.peer_authentications, *index.authorization_policies,
            *index.request_authentications, *index.resilience.values(),
            *index.rate_limits.values(), *index.faults.values(), *index.telemetries)


def translate_mesh(index: MeshIndex, settings: MeshSettings | None = None,
                   previous: MeshConfig | None = None) -> MeshConfig:
    """Everything proxy-independent, once per index. `settings` defaults to
    `MeshSettings()`: trust domain gossamer.local, mTLS on. `previous`: the last
    mesh, whose Services' parts (and endpoints) are kept where their inputs are
    unchanged, so a route change translates one Service, not the mesh."""
    settings = settings or MeshSettings()
    services: tuple[object, ...] = tuple(index.services.values())
    policies = _policy_inputs(index, settings)
    if previous is not None:  # the same objects: later comparisons are identity checks
        same = index.services is previous.index.services or \
            services == previous.services_epoch
        services = previous.services_epoch if same else services
        policies = previous.policy_inputs if policies == previous.policy_inputs else policies
    mesh = MeshConfig(index, {}, {}, {}, {}, settings=settings, policy_inputs=policies,
                      services_epoch=services,
                      _outbound_prior=previous._outbound_routes if previous else {})
    if previous is not None:
        _carry_lookups(mesh, previous)
    for key, svc in sorted(index.services.items()):
        inputs = _service_inputs(index, key, svc, services, policies)
        parts = previous._parts.get(key) if previous is not None else None
        if parts is None or parts.inputs != inputs:
            parts = _service_parts(index, key, svc, settings, inputs)
            mesh.changed_services.add(key)
        mesh._parts[key] = parts
        eps = index.endpoints.get(key, ())
        same_eps = previous is not None and previous.index.endpoints.get(key, ()) == eps
        for cname, cluster in parts.clusters.items():
            mesh.clusters[cname] = cluster
            mesh.cluster_services[cname] = key
            old = previous.endpoints.get(cname) if previous is not None and same_eps else None
            mesh.endpoints[cname] = old or _res(ENDPOINT, cname, load_assignment(cname, eps))
            if old is None:
                mesh.endpoint_changes.add(cname)
        mesh.locality.update((c, (key, f)) for c, f in parts.locality.items())
        mesh.port_routes.update(parts.port_routes)
        mesh.protocols.update(parts.protocols)
        mesh.port_refs.update(parts.port_refs)
        mesh.upstream_routes.update(parts.upstream_routes)
    mesh.seal()
    return mesh


def _carry_lookups(mesh: MeshConfig, previous: MeshConfig) -> None:
    """Keep the lookups a mesh builds lazily from its index (workloads by name, their
    labels, the Sidecar index) when the index parts they read are the same objects
    (`build_index(previous=)` keeps them so): at a few thousand workloads, building
    them again was half of a route change's rebuild."""
    old = previous.index
    if mesh.index.workloads is old.workloads:
        mesh._workloads = previous._workloads
        mesh._workload_labels = previous._workload_labels
    if mesh.index.sidecars is old.sidecars and mesh.index.services is old.services:
        mesh._sidecars = previous._sidecars


def update_endpoints(mesh: MeshConfig, index: MeshIndex) -> MeshConfig:
    """`translate_mesh(index)` for an index that differs from `mesh.index` only in
    which workloads are healthy (the caller vouches for that): only endpoints move.

    Health feeds nothing but `index.endpoints` (accounts and selections count
    every workload, healthy or not), so clusters, routes and listeners stay; the
    assignments of services whose endpoints did not change keep their objects.
    """
    endpoints = dict(mesh.endpoints)
    changed: set[str] = set()
    for cname, key in mesh.cluster_services.items():
        eps = index.endpoints.get(key, ())
        if eps != mesh.index.endpoints.get(key, ()):
            endpoints[cname] = _res(ENDPOINT, cname, load_assignment(cname, eps))
            changed.add(cname)
    return replace(mesh, index=index, endpoints=endpoints, _local_endpoints={}, _views={},
                   _workloads=None, endpoint_changes=changed,
                   changed_services=set())


def proxy_endpoints(mesh: MeshConfig, proxy: ProxyIdentity,
                    scope: Scope) -> tuple[Mapping[str, XdsResource], int]:
    """The proxy's endpoints (the shared ones of its scope, with its locality's
    priorities where a Service asks for them) and their `digest_sum`."""
    view = mesh.view(scope)
    if not mesh.locality:
        return view.endpoints, view.endpoint_sum
    caller = mesh.caller_labels(proxy)
    local = {c: mesh.endpoints_for(c, caller) for c in mesh.locality if c in view.endpoints}
    return ({**view.endpoints, **local},
            _overlay_sum(view.endpoints, view.endpoint_sum, local))


def with_endpoints(mesh: MeshConfig, proxy: ProxyIdentity, config: ProxyConfig) -> ProxyConfig:
    """The proxy's previous config from an earlier mesh, with this mesh's endpoints
    (after `update_endpoints`): O(1) per proxy instead of a whole translation.
    Health changes no scope, so the last one still holds."""
    endpoints, total = proxy_endpoints(mesh, proxy, config.scope)
    return ProxyConfig(proxy, config.snapshot.replace_type(ENDPOINT, endpoints, total),
                       config.scope, config.inputs, config.listeners)


def only_services_changed(previous: MeshConfig, mesh: MeshConfig) -> bool:
    """Did nothing change between the two meshes but some Services' parts
    (`changed_services`: their routes)? Then a scoped proxy whose scope holds none of
    those Services reads nothing that changed (see `proxy_inputs`; the same Workloads
    and Services mean the same endpoints): it may be skipped."""
    index, before = mesh.index, previous.index
    return (mesh.policy_inputs is previous.policy_inputs
            and mesh.services_epoch is previous.services_epoch
            and index.sidecars == before.sidecars and index.workloads == before.workloads
            # issue 21: what capturing proxies read besides their scope's Services
            and index.virtual_ips is before.virtual_ips and index.mesh is before.mesh)


def proxy_inputs(mesh: MeshConfig, proxy: ProxyIdentity) -> tuple[object, ...]:
    """What `translate_proxy` reads for this proxy, apart from endpoints: when a later
    mesh gives an equal tuple, the proxy's last config (`with_endpoints`) is what a
    translation would give, and a route change elsewhere costs this proxy only this.

    Resources are compared as objects: the reconciler keeps an unchanged resource's
    object across builds, so equality is mostly an identity check. Deliberately
    coarse where precision would be fragile: any policy change anywhere
    (`policy_inputs`) re-translates every proxy.
    """
    return _inputs(mesh, proxy, mesh.scope_of(proxy))


def _inputs(mesh: MeshConfig, proxy: ProxyIdentity, scope: Scope,
            listeners: tuple[object, ...] | None = None) -> tuple[object, ...]:
    """`_listener_inputs` (given, or computed) and what the rest of the config reads:
    the scope's clusters and the route configs' contents."""
    if listeners is None:
        listeners = _listener_inputs(mesh, proxy)
    routes = tuple(
        (mesh.port_refs.get(pkey), route.version if route is not None else None)
        for up in proxy.upstreams
        for pkey in [(up.namespace, up.service, up.port)]
        for route in [mesh.upstream_routes.get(pkey)])
    outbound = (mesh.outbound_routes(proxy.namespace, scope).version
                if proxy.outbound_port else None)
    return (listeners, scope, mesh.view(scope).cluster_sum, outbound, routes)


def _own_protocol(index: MeshIndex, proxy: ProxyIdentity) -> Protocol:
    """What the agent declared, else the Service's (first) port protocol."""
    if proxy.app_protocol is not None:
        return proxy.app_protocol
    svc = index.service(proxy.namespace, proxy.service)
    return svc.spec.ports[0].protocol if svc else Protocol.HTTP


def _upstream_listener(mesh: MeshConfig, up: Upstream, log: tuple[dict[str, Any], ...] = (),
                       tracing: dict[str, Any] | None = None) -> XdsResource:
    """`log`, `tracing`: the access loggers and tracing of the HTTP listener (a TCP one
    has neither). An HTTP listener takes its routes from RDS (`translate_proxy`)."""
    pkey: PortKey = (up.namespace, up.service, up.port)
    lname = names.upstream_listener(up.namespace, up.service, up.port)
    if mesh.protocols.get(pkey) is Protocol.TCP:
        cluster = names.outbound_cluster(up.namespace, up.service, up.port)
        settings = tcp_settings(mesh.index.resilience.get((up.namespace, up.service)))
        listener = tcp_outbound_listener(lname, up.local_port, cluster, settings)
        if (troute := mesh.index.tcp_routes.get(pkey)) is not None:
            split = tcp_route_clusters(troute, mesh.index.services)
            listener = tcp_split_listener(lname, up.local_port, split, settings)
        return _res(LISTENER, lname, listener)
    listener = http_outbound_listener(lname, up.local_port, lname, log, tracing)
    return _res(LISTENER, lname, listener)


def _inbound_resources(mesh: MeshConfig, proxy: ProxyIdentity,
                       tracing: dict[str, Any] | None = None
                       ) -> tuple[XdsResource, list[XdsResource]]:
    """The inbound listener, and the clusters it needs: the local app, JWKS servers."""
    protocol = _own_protocol(mesh.index, proxy)
    local = inbound_cluster(proxy.app_port, protocol)
    services = mesh.index.proxy_services(proxy.namespace, proxy.workload, proxy.service)
    security, jwks = mesh.inbound_security(
        (proxy.namespace, services, proxy.app_port, proxy.inbound_port, protocol))
    traffic = () if protocol is Protocol.TCP else inbound_traffic_filters(mesh.index, services)
    log = proxy_access_log(mesh.index, proxy, services, "inbound")
    lis = inbound_listener(names.INBOUND_LISTENER, proxy.inbound_address,
                           proxy.inbound_port, protocol, local.name, security, traffic,
                           log, tracing)
    return _res(LISTENER, lis.name, lis), [_res(CLUSTER, local.name, local), *jwks]


def _proxy_tracing(mesh: MeshConfig, proxy: ProxyIdentity) -> ProxyTracing | None:
    services = mesh.index.proxy_services(proxy.namespace, proxy.workload, proxy.service)
    return proxy_tracing(mesh.index, proxy.namespace, services, proxy.service, proxy.workload)


def _overlay_sum(base: Mapping[str, XdsResource], base_sum: int,
                 extra: Mapping[str, XdsResource]) -> int:
    """digest_sum of base updated with extra, in O(len(extra))."""
    total = base_sum + sum(r.digest for r in extra.values())
    return total - sum(base[n].digest for n in extra if n in base)


@dataclass(frozen=True)
class _Listeners:
    """A proxy's listeners and what comes with them: its own clusters (local app,
    JWKS, tracing) and each listener's port. They read only `_listener_inputs`."""

    inputs: tuple[object, ...]
    listeners: Mapping[str, XdsResource]
    extra: Mapping[str, XdsResource]
    ports: Mapping[str, int]


def _listener_inputs(mesh: MeshConfig, proxy: ProxyIdentity) -> tuple[object, ...]:
    """What a proxy's listeners read: the part of `_inputs` without its scope's
    clusters and its route configs (listeners name route configs, RDS sends them).
    A TCP upstream's listener names its clusters itself (a TCPRoute's split), so
    for TCP the clusters it sends to count too."""
    own = sorted(mesh.index.proxy_services(proxy.namespace, proxy.workload, proxy.service))
    upstreams = tuple(
        (pkey, protocol, mesh.index.tcp_routes.get(pkey),
         mesh.port_refs.get(pkey) if protocol is Protocol.TCP else None)
        for up in proxy.upstreams
        for pkey in [(up.namespace, up.service, up.port)]
        for protocol in [mesh.protocols.get(pkey)])
    return (proxy, upstreams, mesh.policy_inputs,
            tuple(mesh.index.services.get(k) for k in own),
            mesh.workload(proxy.namespace, proxy.workload),
            capture_inputs(mesh, proxy, mesh.scope_of(proxy)))  # issue 21


def _proxy_listeners(mesh: MeshConfig, proxy: ProxyIdentity,
                     inputs: tuple[object, ...]) -> _Listeners:
    extra: dict[str, XdsResource] = {}
    listeners: dict[str, XdsResource] = {}
    ports: dict[str, int] = {}
    tracing = _proxy_tracing(mesh, proxy)
    hcm_tracing = None if tracing is None else tracing.hcm
    if tracing is not None:
        extra[tracing.cluster.name] = _res(CLUSTER, tracing.cluster.name, tracing.cluster)
    own_services = mesh.index.proxy_services(proxy.namespace, proxy.workload, proxy.service)
    if proxy.inbound_port and proxy.app_port:
        listener, needed = _inbound_resources(mesh, proxy, hcm_tracing)
        extra.update((c.name, c) for c in needed)
        listeners[listener.name] = listener
        ports[listener.name] = proxy.inbound_port
    if proxy.outbound_port:
        lis = http_outbound_listener(names.OUTBOUND_LISTENER, proxy.outbound_port,
                                     names.OUTBOUND_ROUTES, proxy_access_log(
                                         mesh.index, proxy, own_services, "outbound"),
                                     hcm_tracing)
        listeners[lis.name] = _res(LISTENER, lis.name, lis)
        ports[lis.name] = proxy.outbound_port
    for up in proxy.upstreams:
        listener = _upstream_listener(mesh, up, proxy_access_log(
            mesh.index, proxy, own_services, "outbound", up), hcm_tracing)
        listeners[listener.name] = listener
        ports[listener.name] = up.local_port
    if proxy.capture is not None:  # issue 21
        capture = capture_listeners(mesh, proxy, mesh.scope_of(proxy), proxy_access_log(
            mesh.index, proxy, own_services, "outbound"), hcm_tracing)
        listeners.update(capture.listeners)
        ports.update(capture.ports)
        extra.update(capture.clusters)
    return _Listeners(inputs, listeners, extra, ports)


def translate_proxy(mesh: MeshConfig, proxy: ProxyIdentity,
                    previous: ProxyConfig | None = None) -> ProxyConfig:
    """`previous`: the proxy's config from an earlier mesh, whose listeners are kept
    when what they read is unchanged (a route change re-sends routes, not listeners:
    building a proxy's listeners is most of its translation)."""
    # The proxy's own clusters on top of the mesh's shared ones; nothing here may
    # be O(services) per proxy (see MeshConfig.cluster_sum).
    scope = mesh.scope_of(proxy)
    view = mesh.view(scope)
    key = _listener_inputs(mesh, proxy)
    own = previous.listeners if previous is not None else None
    if own is None or own.inputs != key:
        own = _proxy_listeners(mesh, proxy, key)
    extra = own.extra
    # Clusters the proxy's routes and TCP listeners send to: all must be in its scope.
    refs: set[str] = set()
    routes: dict[str, XdsResource] = {}
    rds_refs: list[str] = []
    if proxy.outbound_port:
        routes[names.OUTBOUND_ROUTES] = mesh.outbound_routes(proxy.namespace, scope)
        refs.update(view.route_refs)
        rds_refs.append(names.OUTBOUND_ROUTES)
    for up in proxy.upstreams:
        pkey = (up.namespace, up.service, up.port)
        refs.update(mesh.port_refs.get(pkey, ()))
        if mesh.protocols.get(pkey) is Protocol.TCP:
            if pkey not in mesh.index.tcp_routes:
                refs.add(names.outbound_cluster(*pkey))
            continue
        lname = names.upstream_listener(*pkey)
        route = mesh.upstream_routes.get(pkey) or _upstream_route_config(lname, None)
        routes[route.name] = route
        rds_refs.append(route.name)
    if proxy.capture is not None:  # issue 21
        capture_config, capture_refs = capture_routes(mesh, proxy, scope)
        routes[capture_config.name] = capture_config
        rds_refs.append(capture_config.name)
        refs.update(view.route_refs, capture_refs)
    eds_refs = [*view.eds_missing, *(n for n in extra if n.startswith(EDS_PREFIX))]
    clusters = {**view.clusters, **extra}
    check_consistency(eds_refs=eds_refs, endpoints=[n for n in eds_refs if n in mesh.endpoints],
                      rds_refs=rds_refs, routes=routes, listener_ports=dict(own.ports),
                      cluster_refs=refs - {names.NO_ROUTE_CLUSTER}, clusters=clusters)
    endpoints, endpoint_sum = proxy_endpoints(mesh, proxy, scope)
    sums = {CLUSTER: _overlay_sum(view.clusters, view.cluster_sum, extra),
            ENDPOINT: endpoint_sum}
    snapshot = Snapshot.build({CLUSTER: clusters, ENDPOINT: endpoints,
                               LISTENER: dict(own.listeners), ROUTE: routes}, sums)
    return ProxyConfig(proxy, snapshot, scope, _inputs(mesh, proxy, scope, key), own)
