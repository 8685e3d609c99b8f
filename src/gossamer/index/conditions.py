"""What the index reports back to users: each resource's status conditions.

Which resource of a kind is in effect where two compete (the first by namespace and
name), and why a route or policy does not fully apply (a missing parent, backend or
target, a protocol it cannot route). Unresolved references are reported here, never
raised: a route to a Service that does not exist yet is normal while applying a
directory.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from gossamer.contract.protocol import Protocol
from gossamer.index.view import AnyRoute, Policy, PortKey, R, SvcKey
from gossamer.model import (
    Condition,
    ExternalService,
    FaultPolicy,
    GRPCRoute,
    PeerAuthentication,
    RateLimitPolicy,
    ResiliencePolicy,
    ResourceKey,
    Service,
    Sidecar,
    TCPRoute,
    Telemetry,
)
from gossamer.model.mesh import DEFAULT_DNS_DOMAIN, Mesh
from gossamer.model.policy import MESH_ROOT_NAMESPACE, policy_scope, target_name


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


def route_conditions(
    route: AnyRoute, services: Mapping[SvcKey, Service]
) -> tuple[Condition, ...]:
    ns = route.metadata.namespace
    missing_parents = [
        p.name for p in route.spec.parent_refs
        if not p.is_gateway and (p.namespace or ns, p.name) not in services
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
        if p.is_gateway:
            continue
        key = (p.namespace or route.metadata.namespace, p.name)
        svc = services.get(key)
        for port in svc.spec.ports if svc else ():
            if p.port in (None, port.port) and fits(port.protocol):
                out.append((*key, port.port))
    return out


def _protocol_condition(route: GRPCRoute | TCPRoute, ports: list[PortKey],
                        conds: tuple[Condition, ...], wanted: str) -> tuple[Condition, ...]:
    if ports or conds[0].status == "False" or all(p.is_gateway for p in route.spec.parent_refs):
        return conds  # a route only at the edge: its Gateway parents' status says
    return (Condition(type="Accepted", status="False", reason="UnsupportedValue",
                      message=f"no parent Service port has protocol {wanted}"), *conds[1:])


def gamma_routes(grpc_routes: Iterable[GRPCRoute], tcp_routes: Iterable[TCPRoute],
                  services: Mapping[SvcKey, Service]) -> tuple[
        dict[SvcKey, list[GRPCRoute]], dict[PortKey, TCPRoute],
        dict[ResourceKey, tuple[Condition, ...]]]:
    """GRPCRoutes by parent Service, the winning TCPRoute of each TCP port, and both
    kinds' conditions. Two TCPRoutes on one port: the first by (namespace, name) wins."""
    grpc: dict[SvcKey, list[GRPCRoute]] = defaultdict(list)
    tcp: dict[PortKey, TCPRoute] = {}
    conditions: dict[ResourceKey, tuple[Condition, ...]] = {}
    for route in by_name(grpc_routes):
        for parent in sorted({(p.namespace or route.metadata.namespace, p.name)
                              for p in route.spec.parent_refs if not p.is_gateway}):
            grpc[parent].append(route)
        ports = _parent_ports(route, services, lambda p: p.is_h2)
        conditions[route.key] = _protocol_condition(
            route, ports, route_conditions(route, services), "grpc or http2")
    for troute in by_name(tcp_routes):
        ports = _parent_ports(troute, services, lambda p: p is Protocol.TCP)
        conds = _protocol_condition(troute, ports, route_conditions(troute, services), "tcp")
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


def _target_condition(policy: Policy, services: Mapping[SvcKey, Service]) -> Condition:
    """Accepted either way: the policy takes effect as soon as its Service exists."""
    name = target_name(policy)
    if name is None or (policy.metadata.namespace, name) in services:
        return _true("ResolvedRefs")
    return Condition(type="ResolvedRefs", status="False", reason="TargetNotFound",
                     message=f"target Service {name!r} not found in namespace "
                     f"{policy.metadata.namespace!r}; the policy applies once it exists")


def external_target_conditions(
        policies: Iterable[Policy], externals: Mapping[SvcKey, object],
        conditions: Mapping[ResourceKey, tuple[Condition, ...]],
) -> dict[ResourceKey, tuple[Condition, ...]]:
    """Resilience and RateLimitPolicies on an ExternalService: ResolvedRefs says
    whether it exists (policy_conditions looked for a Service of that name)."""
    out: dict[ResourceKey, tuple[Condition, ...]] = {}
    for p in policies:
        if not isinstance(p, ResiliencePolicy | RateLimitPolicy) \
                or not p.spec.target_ref.external:
            continue
        name = p.spec.target_ref.name
        resolved = _true("ResolvedRefs") if (p.metadata.namespace, name) in externals else \
            Condition(type="ResolvedRefs", status="False", reason="TargetNotFound",
                      message=f"target ExternalService {name!r} not found in namespace "
                      f"{p.metadata.namespace!r}; the policy applies once it exists")
        out[p.key] = (conditions[p.key][0], resolved)
    return out


def service_host_names(services: Iterable[SvcKey], mesh: Mesh | None) -> dict[str, SvcKey]:
    """Every dotted name callers use for a mesh Service (Host headers, mesh DNS), and
    whose it is: what an ExternalService host may not take."""
    domain = mesh.spec.dns_domain if mesh is not None else DEFAULT_DNS_DOMAIN
    return {host: (ns, name) for ns, name in services
            for host in (f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local",
                         f"{name}.{ns}.{domain}")}


def external_service_conditions(
        externals: Mapping[SvcKey, ExternalService], services: Mapping[SvcKey, Service],
        mesh: Mesh | None = None) -> dict[ResourceKey, tuple[Condition, ...]]:
    """Each ExternalService is Accepted; a host that is also a mesh Service's name, or an
    earlier ExternalService's (by namespace and name), is left to that one (as
    translate/external.py does) and reported (`HostsAccepted=False`)."""
    owner = {host: f"Service {ns}/{name}"
             for host, (ns, name) in service_host_names(services, mesh).items()}
    out: dict[ResourceKey, tuple[Condition, ...]] = {}
    for key in sorted(externals):
        ext = externals[key]
        lost = [f"{h} ({owner[h]}'s)" for h in ext.spec.hosts if h in owner]
        for h in ext.spec.hosts:
            owner.setdefault(h, f"ExternalService {key[0]}/{key[1]}")
        conds = [_true("Accepted")]
        if lost:
            conds.append(Condition(type="HostsAccepted", status="False",
                                   reason="HostConflict",
                                   message="left to their owners: " + ", ".join(lost)))
        out[ext.key] = tuple(conds)
    return out


OnePerScope = TypeVar("OnePerScope", PeerAuthentication, Telemetry)


def one_per_scope(policies: Iterable[OnePerScope]) -> dict[ResourceKey, str]:
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


def one_per_service(policies: Iterable[OnePerService], target: str = "Service") -> tuple[
        dict[SvcKey, OnePerService], dict[ResourceKey, str]]:
    """One policy of a kind per Service (or Gateway, `target`): the first by (namespace,
    name); the rest conflict."""
    winners: dict[SvcKey, OnePerService] = {}
    conflicts: dict[ResourceKey, str] = {}
    for p in policies:
        slot = (p.metadata.namespace, p.spec.target_ref.name)
        if slot in winners:
            conflicts[p.key] = (f"{p.KIND} {winners[slot].metadata.name!r} already "
                                f"targets {target} {slot[1]!r} (the first by name wins)")
        else:
            winners[slot] = p
    return winners, conflicts


def policy_conditions(policies: Iterable[Policy], services: Mapping[SvcKey, Service],
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


def sidecars_in_effect(all_sidecars: Iterable[Sidecar]) -> tuple[
        tuple[Sidecar, ...], dict[ResourceKey, tuple[Condition, ...]]]:
    """Every Sidecar is in effect except a second one without a selector in a
    namespace (the first by name is its namespace's default)."""
    sidecars = by_name(all_sidecars)
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


def by_name(items: Iterable[R]) -> list[R]:
    return sorted(items, key=lambda r: (r.metadata.namespace, r.metadata.name))
