"""The mesh-wide half of translation: everything that is the same for every proxy.

Clusters, endpoints and each Service's routes are built and serialized once per
index, and the same `XdsResource` objects are shared by every proxy's snapshot
(translate/proxy.py assembles those). A proxy with an egress scope
(translate/scope.py) gets the subset for the Services in it, and proxies with the
same scope share that subset (`MeshConfig.view`).

A mesh is built on the previous one (`translate_mesh(previous=)`): a Service whose
inputs (`service_inputs`, beside `service_parts`, which reads them) are the same
objects keeps its parts, so a route change translates one Service, not the mesh.
What a mesh derives lazily for its proxies lives in one `MeshMemo`, whose fields
say how long each stays valid.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from envoy.config.route.v3.route_components_pb2 import VirtualHost
from envoy.config.route.v3.route_pb2 import RouteConfiguration

from gossamer.contract.node import NodeMetadata
from gossamer.contract.protocol import Protocol
from gossamer.index import MeshIndex, PortKey, SvcKey
from gossamer.model import Service, Workload
from gossamer.translate import names
from gossamer.translate.consumer import (
    CallerRoutes,
    ConsumerKey,
    has_variant,
    port_route_config,
)
from gossamer.translate.endpoints import load_assignment, locality_assignment
from gossamer.translate.external import EMPTY as NO_EXTERNALS
from gossamer.translate.external import ExternalConfig, external_config
from gossamer.translate.listeners import InboundSecurity
from gossamer.translate.policies import PolicyIndex, policy_index
from gossamer.translate.protos import build
from gossamer.translate.ratelimit import ratelimit_filters
from gossamer.translate.reach import Reachability, inferred_for
from gossamer.translate.routes import UNREACHABLE_HEADER
from gossamer.translate.scope import Scope, SidecarIndex, egress_scope
from gossamer.translate.security import InboundKey, inbound_security
from gossamer.translate.serviceparts import (
    NO_SERVICE_VHOST,
    ServiceParts,
    service_inputs,
    service_parts,
)
from gossamer.translate.settings import MeshSettings
from gossamer.xds.types import CLUSTER, ENDPOINT, ROUTE, XdsResource, digest_sum

EDS_PREFIX = "outbound|"
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


@dataclass
class MeshMemo:
    """What a mesh derives lazily for its proxies, each at most once per mesh.

    Only `MeshConfig`'s methods read and write it. How long each part stays valid
    decides where it goes: `update_endpoints` keeps the parts endpoints do not feed
    (`for_endpoints`), and the next mesh keeps the index lookups whose index parts
    are the same objects (`carry`) and reuses an outbound route config of equal
    content (`outbound_prior`).
    """

    # Lookups over the index: Workloads by (namespace, name), their labels, the
    # Sidecar index. At a few thousand workloads, building them again was half of
    # a route change's rebuild.
    workloads: dict[tuple[str, str], Workload] | None = None
    workload_labels: dict[tuple[str, str], Mapping[str, str]] | None = None
    sidecars: SidecarIndex | None = None
    # The egress scopes inferred from AuthorizationPolicies (translate/reach.py), and
    # the policies by where they apply.
    reach: Reachability | None = None
    policies: PolicyIndex | None = None
    # The shared clusters and endpoints per egress scope (they hold endpoints).
    views: dict[Scope, ScopedView] = field(default_factory=dict)
    # Endpoint priorities per (cluster, the caller's failover label values).
    local_endpoints: dict[tuple[str, tuple[str | None, ...]], XdsResource] = field(
        default_factory=dict)
    # `outbound` route configs by content (the route configs' versions), the previous
    # mesh's by content, and by (namespace, scope); the virtual hosts they are made of.
    outbound_routes: dict[tuple[object, ...], XdsResource] = field(default_factory=dict)
    outbound_prior: dict[tuple[object, ...], XdsResource] = field(default_factory=dict)
    outbound_here: dict[tuple[str, Scope], XdsResource] = field(default_factory=dict)
    vhosts: dict[tuple[PortKey, bool, str | None], VirtualHost] = field(default_factory=dict)
    # The inbound filters of each replica set and the JWKS clusters they need.
    inbound: dict[InboundKey, tuple[InboundSecurity, tuple[XdsResource, ...]]] = field(
        default_factory=dict)
    # Capture's shared parts, per (namespace, scope, mode) (translate/capture.py).
    capture: dict[object, object] = field(default_factory=dict)
    # VHDS's virtual hosts by content and their sets per (namespace, scope), and the
    # previous mesh's by content (translate/vhds.py).
    vhds: dict[object, object] = field(default_factory=dict)
    vhds_prior: dict[object, object] = field(default_factory=dict)

    def for_endpoints(self) -> MeshMemo:
        """The memo of a mesh that differs from this one's only in which workloads
        are healthy: health changes Workload objects and endpoints, nothing else."""
        return replace(self, workloads=None, views={}, local_endpoints={})

    def carry(self, index: MeshIndex, previous: MeshConfig) -> None:
        """Keep the previous mesh's index lookups whose index parts are the same
        objects in `index` (`build_index(previous=)` keeps them so), and its
        outbound route configs for reuse by content."""
        old, memo = previous.index, previous.memo
        if index.workloads is old.workloads:
            self.workloads, self.workload_labels = memo.workloads, memo.workload_labels
        if index.sidecars is old.sidecars and index.services is old.services:
            self.sidecars = memo.sidecars
        if memo.reach is not None and memo.reach.inputs == Reachability.inputs_of(index):
            self.reach = memo.reach
        self.outbound_prior = memo.outbound_routes
        self.vhds_prior = memo.vhds


@dataclass
class MeshConfig:
    index: MeshIndex
    clusters: dict[str, XdsResource]
    endpoints: dict[str, XdsResource]
    # Envoy routes of each HTTP service port (dicts, placed into virtual hosts per caller).
    port_routes: dict[PortKey, list[dict[str, Any]]]
    protocols: dict[PortKey, Protocol]
    # Route configs of per-upstream listeners.
    upstream_routes: dict[PortKey, XdsResource] = field(default_factory=dict)
    # The ports' routes for callers in namespaces with consumer routes (translate/consumer.py).
    consumer_routes: dict[ConsumerKey, CallerRoutes] = field(default_factory=dict)
    settings: MeshSettings = field(default_factory=MeshSettings)
    # Clusters whose Service prefers the caller's locality: the failover labels.
    locality: dict[str, tuple[SvcKey, tuple[str, ...]]] = field(default_factory=dict)
    # The Service behind each outbound (EDS) cluster.
    cluster_services: dict[str, SvcKey] = field(default_factory=dict)
    # The clusters each service port's routes (or TCPRoute) send to.
    port_refs: dict[PortKey, frozenset[str]] = field(default_factory=dict)
    # Every policy object and the settings: what all inbound sides read (proxy_inputs).
    policy_inputs: tuple[object, ...] = ()
    # The clusters whose endpoints changed since the previous mesh (update_endpoints,
    # translate_mesh(previous=)), and the Services translate_mesh did not reuse.
    endpoint_changes: set[str] = field(default_factory=set)
    changed_services: set[SvcKey] = field(default_factory=set)
    # Every Service object (translate_mesh's reuse of a Service's parts).
    services_epoch: tuple[object, ...] = ()
    # Each Service's share of the mesh, and the inputs it was made from.
    parts: dict[SvcKey, ServiceParts] = field(default_factory=dict)
    memo: MeshMemo = field(default_factory=MeshMemo)
    # The ExternalServices' clusters, virtual hosts and capture parts.
    external: ExternalConfig = NO_EXTERNALS
    # Once per mesh rather than once per proxy (they are O(services)): the digest
    # sums behind the shared clusters' and endpoints' versions, and the shared EDS
    # clusters without an assignment (always none, unless translation has a bug).
    cluster_sum: int = field(default=0, init=False)
    endpoint_sum: int = field(default=0, init=False)
    eds_missing: tuple[str, ...] = field(default=(), init=False)

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
        if self.memo.workloads is None:
            self.memo.workloads = {(w.metadata.namespace, w.metadata.name): w
                                   for w in self.index.workloads}
        return self.memo.workloads.get((namespace, name))

    def outbound_routes(self, namespace: str, scope: Scope = None) -> XdsResource:
        """Memoized: callers in one namespace with one scope share the `outbound`
        route config. Keyed by content (the versions of the Services' route configs),
        so the previous mesh's config is kept when none of its Services changed."""
        memo = self.memo
        here = memo.outbound_here.get((namespace, scope))
        if here is not None:
            return here
        pkeys = self.outbound_pkeys(scope)
        slot = (namespace, scope, tuple(self.port_route_config(p, namespace).version
                                        for p in pkeys), self.external.key)
        if slot not in memo.outbound_routes:
            memo.outbound_routes[slot] = memo.outbound_prior.get(slot) or \
                self._outbound_route_config(namespace, pkeys)
        memo.outbound_here[(namespace, scope)] = memo.outbound_routes[slot]
        return memo.outbound_routes[slot]

    def outbound_pkeys(self, scope: Scope) -> list[PortKey]:
        """The HTTP Service ports whose virtual hosts `outbound` holds, sorted."""
        if scope is None:
            return sorted(self.port_routes)
        return sorted(pkey for key in scope if key in self.parts
                      for pkey in self.parts[key].port_routes)

    def _outbound_route_config(self, namespace: str, pkeys: list[PortKey]) -> XdsResource:
        """The catch-all listener's routes: a virtual host per Service port in scope
        (`pkeys`, sorted; only the scope's own, so a sidecar that calls 3 Services of
        1000 costs 3 steps, not 1000). Assembled from each port's VirtualHost, built
        once per mesh and shared by every scope it is in (the same message ParseDict
        of the whole config gives)."""
        config = RouteConfiguration(name=names.OUTBOUND_ROUTES,
                                    response_headers_to_remove=[UNREACHABLE_HEADER])
        config.validate_clusters.SetInParent()  # present and false, as in the JSON form
        vhosts = self.memo.vhosts
        for pkey in pkeys:
            # A consumer namespace's own routes (consumer.py) are its own.
            slot = (pkey, pkey[0] == namespace,
                    namespace if has_variant(self, pkey, namespace) else None)
            if slot not in vhosts:
                vhosts[slot] = virtual_host(self, pkey, namespace)
            config.virtual_hosts.append(vhosts[slot])
        config.virtual_hosts.extend(self.external.vhosts)
        config.virtual_hosts.append(_NO_SERVICE)
        return _res(ROUTE, names.OUTBOUND_ROUTES, config)

    def port_route_config(self, pkey: PortKey, namespace: str) -> XdsResource:
        """An HTTP Service port's routes for a caller in `namespace` (consumer.py)."""
        config = port_route_config(self, pkey, namespace)
        assert config is not None, pkey
        return config

    @property
    def capture_memo(self) -> dict[object, object]:
        return self.memo.capture

    @property
    def vhds_memo(self) -> tuple[dict[object, object], dict[object, object]]:
        """This mesh's VHDS memo and the previous mesh's (reused by content)."""
        return self.memo.vhds, self.memo.vhds_prior

    def sidecar_index(self) -> SidecarIndex:
        if self.memo.sidecars is None:
            self.memo.sidecars = SidecarIndex(self.index)
        return self.memo.sidecars

    def reachability(self) -> Reachability:
        settings = (self.settings.trust_domain, self.settings.mtls)
        if self.memo.reach is None or self.memo.reach.settings != settings:
            self.memo.reach = Reachability(self.index, self.settings.trust_domain,
                                           self.settings.mtls)
        return self.memo.reach

    def scope_of(self, proxy: NodeMetadata) -> Scope:
        return egress_scope(self.sidecar_index(), proxy, self.caller_labels(proxy),
                            self.reachability() if inferred_for(self.index) else None)

    def view(self, scope: Scope) -> ScopedView:
        """Memoized: the shared clusters and endpoints a proxy with `scope` gets."""
        views = self.memo.views
        if scope not in views:
            views[scope] = self._whole_view() if scope is None else self._subset(scope)
        return views[scope]

    def _whole_view(self) -> ScopedView:
        return ScopedView(self.clusters, self.cluster_sum, self.endpoints_view,
                          self.endpoint_sum, self.eds_missing)

    def _subset(self, scope: frozenset[SvcKey]) -> ScopedView:
        parts = [self.parts[key] for key in scope if key in self.parts]
        names_ = sorted({n for p in parts for n in p.needed if n in self.clusters})
        clusters = {n: self.clusters[n] for n in names_}
        endpoints = {n: self.endpoints[n] for n in names_ if n in self.endpoints}
        missing = tuple(n for n in names_ if n.startswith(EDS_PREFIX) and n not in endpoints)
        refs = frozenset(c for p in parts for c in p.route_refs)
        return ScopedView(clusters, digest_sum(clusters), MappingProxyType(endpoints),
                          digest_sum(endpoints), missing, refs)

    def caller_labels(self, proxy: NodeMetadata) -> dict[str, str]:
        """The registered Workload's labels, overlaid by what the agent declared."""
        if self.memo.workload_labels is None:
            self.memo.workload_labels = {
                (w.metadata.namespace, w.metadata.name): w.metadata.labels
                for w in self.index.workloads}
        return {**self.memo.workload_labels.get((proxy.namespace, proxy.workload), {}),
                **dict(proxy.labels)}

    def endpoints_for(self, cluster: str, caller: Mapping[str, str]) -> XdsResource:
        """Memoized: callers sharing the values of the failover labels share the
        endpoint priorities, so a zone's proxies share one resource."""
        if cluster not in self.locality:
            return self.endpoints[cluster]
        key, failover = self.locality[cluster]
        values = tuple(caller.get(label) for label in failover)
        slot = (cluster, values)
        local = self.memo.local_endpoints
        if slot not in local:
            cla = locality_assignment(cluster, self.index.endpoints.get(key, ()),
                                      caller, failover)
            local[slot] = _res(ENDPOINT, cluster, cla)
        return local[slot]

    def inbound_security(self, key: InboundKey) -> tuple[InboundSecurity,
                                                         tuple[XdsResource, ...]]:
        """Memoized: the replicas of a service share their policies' filters and
        the JWKS clusters those need."""
        inbound = self.memo.inbound
        if key not in inbound:
            if self.memo.policies is None:
                self.memo.policies = policy_index(self.index)
            security, jwks = inbound_security(self.index, self.settings, key,
                                              self.memo.policies)
            if key[4] is not Protocol.TCP:
                # After authentication and RBAC: denied requests consume no quota.
                security = replace(security, http_filters=security.http_filters
                                   + ratelimit_filters(self.index, key[1]))
            inbound[key] = security, tuple(_res(CLUSTER, c.name, c) for c in jwks)
        return inbound[key]


def _res(type_url: str, name: str, message: Any) -> XdsResource:
    return XdsResource.from_message(type_url, name, message)


def _default_port(service: Service) -> int:
    ports = [p.port for p in service.spec.ports]
    return 80 if 80 in ports else ports[0]


def outbound_domains(mesh: MeshConfig, pkey: PortKey, same_ns: bool) -> list[str]:
    """The host names a caller (in the namespace or not: `same_ns`) uses for a port."""
    ns, name, port = pkey
    svc = mesh.index.services[(ns, name)]
    return names.service_domains(name, ns, port, same_ns=same_ns,
                                 default_port=port == _default_port(svc))


def virtual_host(mesh: MeshConfig, pkey: PortKey, namespace: str,
                 domains: list[str] | None = None) -> VirtualHost:
    """The port's routes for a caller in `namespace`, under the names it uses. The
    routes are those of the port's upstream route config for that caller, already
    built (and canonicalized): parsing them back from its bytes costs a thirtieth of
    building them again, which after a restart (an empty build memo) was a tenth of
    the control plane's CPU while the proxies reconnected."""
    ns, name, port = pkey
    if domains is None:
        domains = outbound_domains(mesh, pkey, ns == namespace)
    upstream = RouteConfiguration.FromString(mesh.port_route_config(pkey, namespace).payload)
    vhost = VirtualHost(name=f"{name}.{ns}:{port}", domains=domains)
    vhost.routes.extend(upstream.virtual_hosts[0].routes)
    return vhost


def _policy_inputs(index: MeshIndex, settings: MeshSettings) -> tuple[object, ...]:
    return (settings, *index.peer_authentications, *index.authorization_policies,
            *index.request_authentications, *index.resilience.values(),
            *index.rate_limits.values(), *index.faults.values(), *index.telemetries,
            *index.gateway_rate_limits.values(), *index.gateway_faults.values())


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
    memo = MeshMemo()
    if previous is not None:
        memo.carry(index, previous)
    clusters: dict[str, XdsResource] = {}
    endpoints: dict[str, XdsResource] = {}
    mesh = MeshConfig(index, clusters, endpoints, {}, {}, settings=settings,
                      policy_inputs=policies, services_epoch=services, memo=memo,
                      external=_external(index, previous))
    for key, svc in sorted(index.services.items()):
        inputs = service_inputs(index, key, svc, services, policies)
        parts = previous.parts.get(key) if previous is not None else None
        if parts is None or parts.inputs != inputs:
            parts = service_parts(index, key, svc, settings, inputs)
            mesh.changed_services.add(key)
        mesh.parts[key] = parts
        eps = index.endpoints.get(key, ())
        same_eps = previous is not None and previous.index.endpoints.get(key, ()) == eps
        for cname, cluster in parts.clusters.items():
            clusters[cname] = cluster
            mesh.cluster_services[cname] = key
            old = previous.endpoints.get(cname) if previous is not None and same_eps else None
            endpoints[cname] = old or _res(ENDPOINT, cname, load_assignment(cname, eps))
            if old is None:
                mesh.endpoint_changes.add(cname)
        mesh.locality.update((c, (key, f)) for c, f in parts.locality.items())
        mesh.port_routes.update(parts.port_routes)
        mesh.protocols.update(parts.protocols)
        mesh.port_refs.update(parts.port_refs)
        mesh.upstream_routes.update(parts.upstream_routes)
        mesh.consumer_routes.update(parts.consumers)
    mesh.seal()
    return mesh


def _external(index: MeshIndex, previous: MeshConfig | None) -> ExternalConfig:
    """The previous mesh's when what it reads is the same objects."""
    if previous is not None and index.external_services is previous.index.external_services \
            and index.external_vips is previous.index.external_vips \
            and index.services is previous.index.services \
            and index.external_resilience == previous.index.external_resilience \
            and index.external_rate_limits == previous.index.external_rate_limits:
        return previous.external
    return external_config(index)


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
    return replace(mesh, index=index, endpoints=endpoints, memo=mesh.memo.for_endpoints(),
                   endpoint_changes=changed, changed_services=set())


def only_services_changed(previous: MeshConfig, mesh: MeshConfig) -> bool:
    """Did nothing change between the two meshes but some Services' parts
    (`changed_services`: their routes)? Then a scoped proxy whose scope holds none of
    those Services reads nothing that changed (see `proxy_inputs`; the same Workloads
    and Services mean the same endpoints): it may be skipped."""
    index, before = mesh.index, previous.index
    return (mesh.policy_inputs is previous.policy_inputs
            and mesh.services_epoch is previous.services_epoch
            and index.sidecars == before.sidecars and index.workloads == before.workloads
            # what capturing proxies read besides their scope's Services
            and index.virtual_ips is before.virtual_ips and index.mesh is before.mesh
            # the ExternalServices' part
            and mesh.external is previous.external
            and index.gateways == before.gateways)  # what gateways read
