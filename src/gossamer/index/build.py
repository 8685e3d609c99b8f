"""How the index is built: from the store's resources, and on the previous index.

A rebuild after a route or policy change keeps the previous index's workload
selection (most of a build: it reads every workload), and a heartbeat patches the
endpoints alone (`with_health`), so a running mesh rarely pays for a full build.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

from gossamer.contract.spiffe import DEFAULT_TRUST_DOMAIN
from gossamer.index.conditions import (
    by_name,
    external_service_conditions,
    external_target_conditions,
    gamma_routes,
    one_per_scope,
    one_per_service,
    policy_conditions,
    route_conditions,
    sidecars_in_effect,
)
from gossamer.index.gateways import gateway_index
from gossamer.index.view import Endpoint, MeshIndex, Policy, R, SvcKey, WorkloadKey
from gossamer.model import (
    AuthorizationPolicy,
    Condition,
    FaultPolicy,
    Gateway,
    GRPCRoute,
    HTTPRoute,
    Namespace,
    PeerAuthentication,
    RateLimitPolicy,
    ReferenceGrant,
    RequestAuthentication,
    ResiliencePolicy,
    Resource,
    ResourceKey,
    Secret,
    Service,
    Sidecar,
    TCPRoute,
    Telemetry,
    TLSRoute,
    Workload,
)
from gossamer.model.errors import InvalidResource
from gossamer.model.externalservice import ExternalService
from gossamer.model.mesh import Mesh
from gossamer.model.namespace import namespace_labels
from gossamer.model.policy import gateway_target
from gossamer.model.resilienceeffect import resilience_conditions
from gossamer.model.workload import Health
from gossamer.smi.expand import SMI, expand
from gossamer.virtualips.assign import index_virtual_ips
from gossamer.virtualips.external import external_virtual_ips
from gossamer.virtualips.table import VirtualIPTable


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
        return by_name(found)


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


def _same_services(old: Mapping[SvcKey, R], new: dict[SvcKey, R]) -> Mapping[SvcKey, R]:
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


def _smi_accepted(key: ResourceKey, refused: Mapping[ResourceKey, InvalidResource]
                  ) -> Condition:
    exc = refused.get(key)
    if exc is None:
        return Condition(type="Accepted", status="True", reason="Accepted",
                         message="mapped onto native resources")
    return Condition(type="Accepted", status="False", reason="Invalid",
                     message="; ".join(str(e) for e in exc.errors))


def build_index(resources: Iterable[Resource], revision: int = 0,
                previous: MeshIndex | None = None,
                trust_domain: str = DEFAULT_TRUST_DOMAIN) -> MeshIndex:
    """The index of `resources`. With `previous`, the index of an earlier state of
    the same store, parts whose inputs are the same objects are taken from it. SMI
    resources are read as the native ones they map to (smi/expand.py), so they take
    effect through the same translation; one that cannot be mapped is not Accepted."""
    resources = list(resources)
    expanded = expand(resources, trust_domain)
    smi_conditions = {r.key: (_smi_accepted(r.key, expanded.refused),) for r in resources
                      if isinstance(r, SMI)}
    kinds = _Kinds(expanded.resources)
    by_key = {(s.metadata.namespace, s.metadata.name): s for s in kinds.of(Service)}
    services: Mapping[SvcKey, Service] = MappingProxyType(by_key)
    workloads = tuple(by_name(kinds.of(Workload)))
    sidecars, sidecar_conditions = sidecars_in_effect(kinds.of(Sidecar))
    if previous is not None:
        services = _same_services(previous.services, by_key)
        workloads = _same_items(previous.workloads, workloads)
        sidecars = _same_items(previous.sidecars, sidecars)
    routes = by_name(kinds.of(HTTPRoute))
    policies = kinds.policies()
    grpc_routes, tcp_routes, gamma_conditions = gamma_routes(
        kinds.of(GRPCRoute), kinds.of(TCPRoute), services)
    by_parent: dict[SvcKey, list[HTTPRoute]] = defaultdict(list)
    conditions: dict[ResourceKey, tuple[Condition, ...]] = {}
    for route in routes:
        for parent in {(p.namespace or route.metadata.namespace, p.name)
                       for p in route.spec.parent_refs if not p.is_gateway}:
            by_parent[parent].append(route)
        conditions[route.key] = route_conditions(route, services)
    peers = [p for p in policies if isinstance(p, PeerAuthentication)]
    resilience, resilience_conflicts = one_per_service(
        p for p in policies if isinstance(p, ResiliencePolicy) and not p.spec.target_ref.external)
    external_resilience, external_conflicts = one_per_service(
        p for p in policies if isinstance(p, ResiliencePolicy) and p.spec.target_ref.external)
    rate_limits, rate_limit_conflicts = one_per_service(
        p for p in policies if isinstance(p, RateLimitPolicy) and not gateway_target(p)
        and not p.spec.target_ref.external)
    external_limits, external_limit_conflicts = one_per_service(
        (p for p in policies if isinstance(p, RateLimitPolicy) and p.spec.target_ref.external),
        "ExternalService")
    faults, fault_conflicts = one_per_service(
        p for p in policies if isinstance(p, FaultPolicy) and not gateway_target(p))
    edge_limits, edge_limit_conflicts = one_per_service(
        (p for p in policies if isinstance(p, RateLimitPolicy) and gateway_target(p)), "Gateway")
    edge_faults, edge_fault_conflicts = one_per_service(
        (p for p in policies if isinstance(p, FaultPolicy) and gateway_target(p)), "Gateway")
    telemetries = [p for p in policies if isinstance(p, Telemetry)]
    telemetry_conflicts = one_per_scope(telemetries)
    conditions.update(gamma_conditions)
    conditions.update(policy_conditions(
        policies, services, {**one_per_scope(peers), **resilience_conflicts,
                             **rate_limit_conflicts, **fault_conflicts,
                             **edge_limit_conflicts, **edge_fault_conflicts,
                             **telemetry_conflicts, **external_conflicts,
                             **external_limit_conflicts}))
    externals = _externals(kinds.of(ExternalService), previous)
    conditions.update(external_target_conditions(policies, externals, conditions))
    mesh = next(iter(kinds.of(Mesh)), None)
    conditions.update(external_service_conditions(externals, services, mesh))
    resilience_conditions(conditions, (p for p in policies if isinstance(p, ResiliencePolicy)
                                       and not p.spec.target_ref.external),
                          resilience, services, [*routes, *kinds.of(GRPCRoute),
                                                 *kinds.of(TCPRoute)])
    conditions.update(sidecar_conditions)
    conditions.update(smi_conditions)
    vips, vip_conditions = index_virtual_ips(services, kinds.of(VirtualIPTable),
                                             previous.virtual_ips if previous else None)
    conditions.update(vip_conditions)
    selection = _selection(services, workloads, previous)
    tables = kinds.of(VirtualIPTable)
    external_vips = external_virtual_ips(externals, tables[0] if tables else None,
                                         vips.values(),
                                         previous.external_vips if previous else None)
    gateways, gateway_status = gateway_index(
        by_name(kinds.of(Gateway)),
        by_name([*routes, *kinds.of(GRPCRoute), *kinds.of(TLSRoute), *kinds.of(TCPRoute)]),
        kinds.of(Secret), services, kinds.of(ReferenceGrant),
        namespace_labels(kinds.of(Namespace)))
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
        gateway_rate_limits=MappingProxyType(edge_limits),
        gateway_faults=MappingProxyType(edge_faults),
        grpc_routes_by_parent=MappingProxyType({k: tuple(v) for k, v in grpc_routes.items()}),
        tcp_routes=MappingProxyType(tcp_routes),
        telemetries=tuple(p for p in telemetries if p.key not in telemetry_conflicts),
        sidecars=sidecars,
        virtual_ips=vips,
        mesh=mesh,
        external_services=externals,
        external_vips=external_vips,
        external_resilience=MappingProxyType(external_resilience),
        external_rate_limits=MappingProxyType(external_limits),
        gateways=MappingProxyType(gateways),
        gateway_status=MappingProxyType(gateway_status),
    )


def _externals(found: list[ExternalService],
               previous: MeshIndex | None) -> Mapping[SvcKey, ExternalService]:
    """By (namespace, name); the previous index's mapping when it holds the same
    objects, so translation tells "no ExternalService changed" by identity."""
    new = {(e.metadata.namespace, e.metadata.name): e for e in found}
    if previous is not None:
        return _same_services(previous.external_services, new)
    return MappingProxyType(new)
