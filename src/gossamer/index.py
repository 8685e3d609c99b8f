"""The mesh index: an immutable, query-friendly view of the desired state.

Built from one consistent listing of the store; translation reads only this.
It also derives the status conditions users see (unresolved references are
reported here, never a crash).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TypeVar

from gossamer.model import (
    AuthorizationPolicy,
    Condition,
    FaultPolicy,
    GRPCRoute,
    HTTPRoute,
    PeerAuthentication,
    RateLimitPolicy,
    RequestAuthentication,
    ResiliencePolicy,
    Resource,
    ResourceKey,
    Service,
    Sidecar,
    TCPRoute,
    Telemetry,
    Workload,
)
from gossamer.model.mesh import Mesh
from gossamer.model.policy import MESH_ROOT_NAMESPACE, policy_scope, target_name
from gossamer.model.resilienceeffect import resilience_conditions
from gossamer.model.service import Protocol
from gossamer.model.workload import Health
from gossamer.virtualips.assign import index_virtual_ips
from gossamer.virtualips.table import VirtualIPTable

SvcKey = tuple[str, str]  # (namespace, name)
WorkloadKey = tuple[str, str]  # (namespace, name)
PortKey = tuple[str, str, int]  # (namespace, service, port)
AnyRoute = HTTPRoute | GRPCRoute | TCPRoute
Policy = (PeerAuthentication | AuthorizationPolicy | RequestAuthentication | ResiliencePolicy
          | RateLimitPolicy | FaultPolicy | Telemetry)
R = TypeVar("R", bound=Resource)


@dataclass(frozen=True)
class Endpoint:
    address: str
    port: int
    workload: str
    namespace: str
    labels: Mapping[str, str]


@dataclass(frozen=True)
class MeshIndex:
    revision: int
    services: Mapping[SvcKey, Service]
    workloads: tuple[Workload, ...]
    routes: tuple[HTTPRoute, ...]
    # Healthy endpoints of each service, in a stable order.
    endpoints: Mapping[SvcKey, tuple[Endpoint, ...]]
    # Routes attached to each service, in precedence-stable (namespace, name) order.
    routes_by_parent: Mapping[SvcKey, tuple[HTTPRoute, ...]]
    conditions: Mapping[ResourceKey, tuple[Condition, ...]] = field(default_factory=dict)
    # Security policies, each in (namespace, name) order.
    peer_authentications: tuple[PeerAuthentication, ...] = ()
    authorization_policies: tuple[AuthorizationPolicy, ...] = ()
    request_authentications: tuple[RequestAuthentication, ...] = ()
    # Service accounts of every workload a service selects, healthy or not, so
    # that health changes never change the identities callers verify.
    accounts: Mapping[SvcKey, tuple[str, ...]] = field(default_factory=dict)
    # The services that select each workload.
    workload_services: Mapping[WorkloadKey, tuple[SvcKey, ...]] = field(default_factory=dict)
    # The ResiliencePolicy in effect for each Service (the first by (namespace, name)).
    resilience: Mapping[SvcKey, ResiliencePolicy] = field(default_factory=dict)
    # The RateLimitPolicy in effect for each Service (the first by (namespace, name)).
    rate_limits: Mapping[SvcKey, RateLimitPolicy] = field(default_factory=dict)
    # The FaultPolicy in effect for each Service (the first by (namespace, name)).
    faults: Mapping[SvcKey, FaultPolicy] = field(default_factory=dict)
    # GRPCRoutes attached to each service, in (namespace, name) order.
    grpc_routes_by_parent: Mapping[SvcKey, tuple[GRPCRoute, ...]] = field(default_factory=dict)
    # The TCPRoute in effect on each TCP service port (the first by (namespace, name)).
    tcp_routes: Mapping[PortKey, TCPRoute] = field(default_factory=dict)
    # Telemetry resources in effect, at most one per scope, in (namespace, name) order.
    telemetries: tuple[Telemetry, ...] = ()
    # Sidecar resources in effect, in (namespace, name) order (model/sidecar.py).
    sidecars: tuple[Sidecar, ...] = ()
    # Issue 21 (capture): each Service's virtual IP (virtualips/assign.py), and the
    # Mesh resource (model/mesh.py), None when none is applied.
    virtual_ips: Mapping[SvcKey, str] = field(default_factory=dict)
    mesh: Mesh | None = None

    def service(self, namespace: str, name: str) -> Service | None:
        return self.services.get((namespace, name))

    def service_accounts(self, namespace: str, name: str) -> tuple[str, ...]:
        """Accounts a caller of the service may meet; the service's name if none is known."""
        return self.accounts.get((namespace, name)) or (name,)

    def proxy_services(self, namespace: str, workload: str, service: str) -> frozenset[SvcKey]:
        """The services whose policies cover a proxy: those selecting its workload, and
        the service it runs as (its workload may not be registered yet)."""
        return frozenset({*self.workload_services.get((namespace, workload), ()),
                          (namespace, service)})

    def status(self, key: ResourceKey) -> dict[str, object]:
        conds = self.conditions.get(key, ())
        out: dict[str, object] = {}
        if key.kind == Service.KIND and (vip := self.virtual_ips.get(key[1:])) is not None:
            out["virtualIP"] = vip
        if conds:
            out["conditions"] = [c.model_dump(mode="json") for c in conds]
        return out


def _selects(service: Service, workload: Workload) -> bool:
    if workload.metadata.namespace != service.metadata.namespace:
        return False
    selector = service.spec.selector
    if not selector:
        return bool(workload.spec.service == service.metadata.name)
    labels = workload.metadata.labels
    return all(labels.get(k) == v for k, v in selector.items())


def _selected(services: Mapping[SvcKey, Service],
              workloads: Iterable[Workload]) -> dict[SvcKey, list[Workload]]:
    """The workloads each service selects, in workload order.

    Through an index of workloads by (namespace, label, value) and by (namespace,
    service), so the cost follows the matches rather than services x workloads
    (a thousand services of three workloads each took ~50 s the naive way).
    """
    by_label: dict[tuple[str, str, str], list[Workload]] = defaultdict(list)
    by_service: dict[SvcKey, list[Workload]] = defaultdict(list)
    for w in workloads:
        ns = w.metadata.namespace
        by_service[(ns, w.spec.service)].append(w)
        for k, v in w.metadata.labels.items():
            by_label[(ns, k, v)].append(w)
    out: dict[SvcKey, list[Workload]] = {}
    for key, svc in services.items():
        ns = svc.metadata.namespace
        selector = svc.spec.selector
        if not selector:
            candidates = by_service.get((ns, svc.metadata.name), [])
        else:
            candidates = min((by_label.get((ns, k, v), []) for k, v in selector.items()),
                             key=len)
        out[key] = [w for w in candidates if _selects(svc, w)]
    return out


def _endpoint(w: Workload) -> Endpoint:
    return Endpoint(w.spec.address, w.spec.port, w.metadata.name, w.metadata.namespace,
                    MappingProxyType(dict(w.metadata.labels)))


def _endpoint_order(e: Endpoint) -> tuple[str, int, str]:
    return e.address, e.port, e.workload


def _endpoints(selected: Mapping[SvcKey, list[Workload]]) -> dict[SvcKey, tuple[Endpoint, ...]]:
    out: dict[SvcKey, tuple[Endpoint, ...]] = {}
    for key, chosen in selected.items():
        eps = [_endpoint(w) for w in chosen if w.spec.health is Health.HEALTHY]
        eps.sort(key=_endpoint_order)
        out[key] = tuple(eps)
    return out


def with_health(index: MeshIndex, changed: Iterable[Workload], revision: int) -> MeshIndex:
    """`build_index` of the same store after only these workloads' health changed
    (the caller vouches that nothing else about them did), without re-reading it.

    Heartbeats are most of the changes a running mesh sees, and re-indexing the
    store for each (tens of ms at a few thousand workloads) was most of an
    endpoint change's propagation time. Selection, accounts and conditions do not
    depend on health, so only the endpoints of the Services selecting these
    workloads move.
    """
    by_key = {(w.metadata.namespace, w.metadata.name): w for w in changed}
    endpoints = dict(index.endpoints)
    for key, w in by_key.items():
        for svc in index.workload_services.get(key, ()):
            eps = [e for e in endpoints[svc] if (e.namespace, e.workload) != key]
            if w.spec.health is Health.HEALTHY:
                eps.append(_endpoint(w))
                eps.sort(key=_endpoint_order)
            endpoints[svc] = tuple(eps)
    workloads = tuple(by_key.get((w.metadata.namespace, w.metadata.name), w)
                      for w in index.workloads)
    return replace(index, revision=revision, workloads=workloads,
                   endpoints=MappingProxyType(endpoints))


@functools.cache
def _true(type_: str, message: str = "") -> Condition:
    """A condition that holds (the reason is its type). Shared: Conditions are
    frozen, and every resource in a large mesh gets one or two of these."""
    return Condition(type=type_, status="True", reason=type_, message=message)


def _missing_backends(route: AnyRoute, services: Mapping[SvcKey, Service]) -> list[str]:
    """Backends and mirror targets that name no Service, or a port it does not have."""
    ns = route.metadata.namespace
    refs = [(b.namespace, b.name, b.port) for rule in route.spec.rules for b in rule.backend_refs]
    if not isinstance(route, TCPRoute):
        refs += [(m.backend_ref.namespace, m.backend_ref.name, m.backend_ref.port)
                 for rule in route.spec.rules for m in rule.mirrors]
    out: set[str] = set()
    for namespace, name, port in refs:
        svc = services.get((namespace or ns, name))
        if svc is None:
            out.add(name)
        elif port is not None and svc.port(port) is None:
            out.add(f"{name}:{port}")
    return sorted(out)


def _unresolved_effect(route: AnyRoute) -> str:
    if isinstance(route, TCPRoute):
        return "its share of connections is closed"
    return "its share of traffic gets HTTP 500, a mirror to it is dropped"


def _route_conditions(
    route: AnyRoute, services: Mapping[SvcKey, Service]
) -> tuple[Condition, ...]:
    ns = route.metadata.namespace
    missing_parents = [
        p.name for p in route.spec.parent_refs if (p.namespace or ns, p.name) not in services
    ]
    missing_backends = _missing_backends(route, services)
    accepted = _true("Accepted")
    if missing_parents:
        accepted = Condition(
            type="Accepted", status="False", reason="NoMatchingParent",
            message="parent Service not found: " + ", ".join(missing_parents),
        )
    resolved = _true("ResolvedRefs")
    if missing_backends:
        resolved = Condition(
            type="ResolvedRefs", status="False", reason="BackendNotFound",
            message=f"backend Service not found ({_unresolved_effect(route)}): "
            + ", ".join(missing_backends),
        )
    return accepted, resolved


def _parent_ports(route: GRPCRoute | TCPRoute, services: Mapping[SvcKey, Service],
                  fits: Callable[[Protocol], bool]) -> list[PortKey]:
    """The service ports a route attaches to whose protocol it can route."""
    out = []
    for p in route.spec.parent_refs:
        key = (p.namespace or route.metadata.namespace, p.name)
        svc = services.get(key)
        for port in svc.spec.ports if svc else ():
            if p.port in (None, port.port) and fits(port.protocol):
                out.append((*key, port.port))
    return out


def _protocol_condition(route: GRPCRoute | TCPRoute, ports: list[PortKey],
                        conds: tuple[Condition, ...], wanted: str) -> tuple[Condition, ...]:
    if ports or conds[0].status == "False":
        return conds
    return (Condition(type="Accepted", status="False", reason="UnsupportedValue",
                      message=f"no parent Service port has protocol {wanted}"), *conds[1:])


def _gamma_routes(grpc_routes: Iterable[GRPCRoute], tcp_routes: Iterable[TCPRoute],
                  services: Mapping[SvcKey, Service]) -> tuple[
        dict[SvcKey, list[GRPCRoute]], dict[PortKey, TCPRoute],
        dict[ResourceKey, tuple[Condition, ...]]]:
    """GRPCRoutes by parent Service, the winning TCPRoute of each TCP port, and both
    kinds' conditions. Two TCPRoutes on one port: the first by (namespace, name) wins."""
    grpc: dict[SvcKey, list[GRPCRoute]] = defaultdict(list)
    tcp: dict[PortKey, TCPRoute] = {}
    conditions: dict[ResourceKey, tuple[Condition, ...]] = {}
    for route in _sorted(grpc_routes):
        for parent in sorted({(p.namespace or route.metadata.namespace, p.name)
                              for p in route.spec.parent_refs}):
            grpc[parent].append(route)
        ports = _parent_ports(route, services, lambda p: p.is_h2)
        conditions[route.key] = _protocol_condition(
            route, ports, _route_conditions(route, services), "grpc or http2")
    for troute in _sorted(tcp_routes):
        ports = _parent_ports(troute, services, lambda p: p is Protocol.TCP)
        conds = _protocol_condition(troute, ports, _route_conditions(troute, services), "tcp")
        taken = [k for k in ports if k in tcp]
        for k in ports:
            tcp.setdefault(k, troute)
        if taken and conds[0].status == "True":
            winner = tcp[taken[0]].metadata.name
            conds = (Condition(type="Accepted", status="False", reason="Conflicted",
                               message=f"TCPRoute {winner!r} already routes port "
                               f"{taken[0][2]} of Service {taken[0][1]!r} (the first by "
                               "name wins)"), *conds[1:])
        conditions[troute.key] = conds
    return grpc, tcp, conditions


def _selections(
    selected: Mapping[SvcKey, list[Workload]],
) -> tuple[dict[SvcKey, tuple[str, ...]], dict[WorkloadKey, tuple[SvcKey, ...]]]:
    accounts: dict[SvcKey, set[str]] = defaultdict(set)
    selected_by: dict[WorkloadKey, list[SvcKey]] = defaultdict(list)
    for key, chosen in selected.items():
        for w in chosen:
            accounts[key].add(w.account)
            selected_by[(w.metadata.namespace, w.metadata.name)].append(key)
    return ({k: tuple(sorted(v)) for k, v in accounts.items()},
            {k: tuple(sorted(v)) for k, v in selected_by.items()})


def _target_condition(policy: Policy, services: Mapping[SvcKey, Service]) -> Condition:
    """Accepted either way: the policy takes effect as soon as its Service exists."""
    name = target_name(policy)
    if name is None or (policy.metadata.namespace, name) in services:
        return _true("ResolvedRefs")
    return Condition(type="ResolvedRefs", status="False", reason="TargetNotFound",
                     message=f"target Service {name!r} not found in namespace "
                     f"{policy.metadata.namespace!r}; the policy applies once it exists")


OnePerScope = TypeVar("OnePerScope", PeerAuthentication, Telemetry)


def _peer_conflicts(policies: Iterable[OnePerScope]) -> dict[ResourceKey, str]:
    """Only one policy of a kind per scope counts: the first by name; the rest are reported."""
    first: dict[tuple[str, str | None], OnePerScope] = {}
    out: dict[ResourceKey, str] = {}
    for p in policies:
        slot = (p.metadata.namespace, target_name(p))
        if slot in first:
            out[p.key] = (f"{p.KIND} {first[slot].metadata.name!r} already sets "
                          "this scope (the first by name wins)")
        else:
            first[slot] = p
    return out


OnePerService = TypeVar("OnePerService", ResiliencePolicy, RateLimitPolicy, FaultPolicy)


def _one_per_service(policies: Iterable[OnePerService]) -> tuple[
        dict[SvcKey, OnePerService], dict[ResourceKey, str]]:
    """One policy of a kind per Service: the first by (namespace, name); the rest conflict."""
    winners: dict[SvcKey, OnePerService] = {}
    conflicts: dict[ResourceKey, str] = {}
    for p in policies:
        slot = (p.metadata.namespace, p.spec.target_ref.name)
        if slot in winners:
            conflicts[p.key] = (f"{p.KIND} {winners[slot].metadata.name!r} already "
                                f"targets Service {slot[1]!r} (the first by name wins)")
        else:
            winners[slot] = p
    return winners, conflicts


def _policy_conditions(policies: Iterable[Policy], services: Mapping[SvcKey, Service],
                       conflicts: Mapping[ResourceKey, str]) -> dict[ResourceKey,
                                                                     tuple[Condition, ...]]:
    out: dict[ResourceKey, tuple[Condition, ...]] = {}
    for p in policies:
        accepted = _true("Accepted", f"scope: {policy_scope(p).value}")
        if p.key in conflicts:
            accepted = Condition(type="Accepted", status="False", reason="Conflicted",
                                 message=conflicts[p.key])
        out[p.key] = (accepted, _target_condition(p, services))
    return out


def _sidecars(all_sidecars: Iterable[Sidecar]) -> tuple[
        tuple[Sidecar, ...], dict[ResourceKey, tuple[Condition, ...]]]:
    """Every Sidecar is in effect except a second one without a selector in a
    namespace (the first by name is its namespace's default)."""
    sidecars = _sorted(all_sidecars)
    defaults: dict[str, Sidecar] = {}
    accepted: list[Sidecar] = []
    conditions: dict[ResourceKey, tuple[Condition, ...]] = {}
    for sc in sidecars:
        ns = sc.metadata.namespace
        if sc.spec.workload_selector is None and ns in defaults:
            conditions[sc.key] = (Condition(
                type="Accepted", status="False", reason="Conflicted",
                message=f"Sidecar {defaults[ns].metadata.name!r} is already this "
                        "namespace's default (no workloadSelector; the first by name wins)"),)
            continue
        if sc.spec.workload_selector is None:
            defaults[ns] = sc
        scope = ("workloads" if sc.spec.workload_selector is not None
                 else "mesh" if ns == MESH_ROOT_NAMESPACE else "namespace")
        conditions[sc.key] = (_true("Accepted", f"scope: {scope}"),)
        accepted.append(sc)
    return tuple(accepted), conditions


def _sorted(items: Iterable[R]) -> list[R]:
    return sorted(items, key=lambda r: (r.metadata.namespace, r.metadata.name))


class _Kinds:
    """The resources by kind, in one pass (one dict lookup each rather than a chain of
    isinstance checks per kind: a rebuild reads every resource in the store)."""

    def __init__(self, resources: Iterable[Resource]) -> None:
        self._by: dict[type, list[Resource]] = defaultdict(list)
        for r in resources:
            self._by[type(r)].append(r)

    def of(self, kind: type[R]) -> list[R]:
        return self._by.get(kind, [])  # type: ignore[return-value]

    def policies(self) -> list[Policy]:
        found: list[Policy] = [
            *self.of(PeerAuthentication), *self.of(AuthorizationPolicy),
            *self.of(RequestAuthentication), *self.of(ResiliencePolicy),
            *self.of(RateLimitPolicy), *self.of(FaultPolicy), *self.of(Telemetry)]
        return _sorted(found)


@dataclass(frozen=True)
class _Selection:
    """What follows from which workloads each Service selects."""

    endpoints: Mapping[SvcKey, tuple[Endpoint, ...]]
    accounts: Mapping[SvcKey, tuple[str, ...]]
    workload_services: Mapping[WorkloadKey, tuple[SvcKey, ...]]


def _same_items(old: tuple[R, ...], new: tuple[R, ...]) -> tuple[R, ...]:
    """`old` when it holds the same objects as `new`: translation then tells an
    unchanged part by one identity check (`translate_mesh(previous=)`)."""
    if len(old) == len(new) and all(a is b for a, b in zip(old, new, strict=True)):
        return old
    return new


def _same_services(old: Mapping[SvcKey, Service],
                   new: dict[SvcKey, Service]) -> Mapping[SvcKey, Service]:
    if len(old) == len(new) and all(old.get(k) is v for k, v in new.items()):
        return old
    return MappingProxyType(new)


def _selection(services: Mapping[SvcKey, Service], workloads: tuple[Workload, ...],
               previous: MeshIndex | None) -> _Selection:
    """Selecting workloads is most of an index build (it reads every workload); a
    build where no Service or Workload changed (a route or a policy: most applies)
    keeps the previous index's selection. Unchanged means the same objects."""
    if previous is not None and services is previous.services \
            and workloads is previous.workloads:
        return _Selection(previous.endpoints, previous.accounts, previous.workload_services)
    selected = _selected(services, workloads)
    accounts, selected_by = _selections(selected)
    return _Selection(MappingProxyType(_endpoints(selected)), MappingProxyType(accounts),
                      MappingProxyType(selected_by))


def build_index(resources: Iterable[Resource], revision: int = 0,
                previous: MeshIndex | None = None) -> MeshIndex:
    """The index of `resources`. With `previous`, the index of an earlier state of
    the same store, parts whose inputs are the same objects are taken from it."""
    kinds = _Kinds(resources)
    by_key = {(s.metadata.namespace, s.metadata.name): s for s in kinds.of(Service)}
    services: Mapping[SvcKey, Service] = MappingProxyType(by_key)
    workloads = tuple(_sorted(kinds.of(Workload)))
    sidecars, sidecar_conditions = _sidecars(kinds.of(Sidecar))
    if previous is not None:
        services = _same_services(previous.services, by_key)
        workloads = _same_items(previous.workloads, workloads)
        sidecars = _same_items(previous.sidecars, sidecars)
    routes = _sorted(kinds.of(HTTPRoute))
    policies = kinds.policies()
    grpc_routes, tcp_routes, gamma_conditions = _gamma_routes(
        kinds.of(GRPCRoute), kinds.of(TCPRoute), services)
    by_parent: dict[SvcKey, list[HTTPRoute]] = defaultdict(list)
    conditions: dict[ResourceKey, tuple[Condition, ...]] = {}
    for route in routes:
        for parent in {(p.namespace or route.metadata.namespace, p.name)
                       for p in route.spec.parent_refs}:
            by_parent[parent].append(route)
        conditions[route.key] = _route_conditions(route, services)
    peers = [p for p in policies if isinstance(p, PeerAuthentication)]
    resilience, resilience_conflicts = _one_per_service(
        p for p in policies if isinstance(p, ResiliencePolicy))
    rate_limits, rate_limit_conflicts = _one_per_service(
        p for p in policies if isinstance(p, RateLimitPolicy))
    faults, fault_conflicts = _one_per_service(p for p in policies if isinstance(p, FaultPolicy))
    telemetries = [p for p in policies if isinstance(p, Telemetry)]
    telemetry_conflicts = _peer_conflicts(telemetries)
    conditions.update(gamma_conditions)
    conditions.update(_policy_conditions(
        policies, services, {**_peer_conflicts(peers), **resilience_conflicts,
                             **rate_limit_conflicts, **fault_conflicts,
                             **telemetry_conflicts}))
    resilience_conditions(conditions, (p for p in policies if isinstance(p, ResiliencePolicy)),
                          resilience, services, [*routes, *kinds.of(GRPCRoute),
                                                 *kinds.of(TCPRoute)])
    conditions.update(sidecar_conditions)
    vips, vip_conditions = index_virtual_ips(services, kinds.of(VirtualIPTable),
                                             previous.virtual_ips if previous else None)
    conditions.update(vip_conditions)
    selection = _selection(services, workloads, previous)
    return MeshIndex(
        revision=revision,
        services=services,
        workloads=workloads,
        routes=tuple(routes),
        endpoints=selection.endpoints,
        routes_by_parent=MappingProxyType({k: tuple(v) for k, v in by_parent.items()}),
        conditions=MappingProxyType(conditions),
        peer_authentications=tuple(peers),
        authorization_policies=tuple(p for p in policies if isinstance(p, AuthorizationPolicy)),
        request_authentications=tuple(
            p for p in policies if isinstance(p, RequestAuthentication)),
        accounts=selection.accounts,
        workload_services=selection.workload_services,
        resilience=MappingProxyType(resilience),
        rate_limits=MappingProxyType(rate_limits),
        faults=MappingProxyType(faults),
        grpc_routes_by_parent=MappingProxyType({k: tuple(v) for k, v in grpc_routes.items()}),
        tcp_routes=MappingProxyType(tcp_routes),
        telemetries=tuple(p for p in telemetries if p.key not in telemetry_conflicts),
        sidecars=sidecars,
        virtual_ips=vips,
        mesh=next(iter(kinds.of(Mesh)), None),
    )
