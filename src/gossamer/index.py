"""The mesh index: an immutable, query-friendly view of the desired state.

Built from one consistent listing of the store; translation reads only this.
It also derives the status conditions users see (unresolved references are
reported here, never a crash).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from gossamer.model import Condition, HTTPRoute, Resource, ResourceKey, Service, Workload
from gossamer.model.workload import Health

SvcKey = tuple[str, str]  # (namespace, name)


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

    def service(self, namespace: str, name: str) -> Service | None:
        return self.services.get((namespace, name))

    def status(self, key: ResourceKey) -> dict[str, object]:
        conds = self.conditions.get(key, ())
        return {"conditions": [c.model_dump(mode="json") for c in conds]} if conds else {}


def _selects(service: Service, workload: Workload) -> bool:
    if workload.metadata.namespace != service.metadata.namespace:
        return False
    selector = service.spec.selector
    if not selector:
        return bool(workload.spec.service == service.metadata.name)
    labels = workload.metadata.labels
    return all(labels.get(k) == v for k, v in selector.items())


def _endpoints(
    services: Mapping[SvcKey, Service], workloads: Iterable[Workload]
) -> dict[SvcKey, tuple[Endpoint, ...]]:
    healthy = [w for w in workloads if w.spec.health is Health.HEALTHY]
    out: dict[SvcKey, tuple[Endpoint, ...]] = {}
    for key, svc in services.items():
        eps = [
            Endpoint(w.spec.address, w.spec.port, w.metadata.name, w.metadata.namespace,
                     MappingProxyType(dict(w.metadata.labels)))
            for w in healthy
            if _selects(svc, w)
        ]
        eps.sort(key=lambda e: (e.address, e.port, e.workload))
        out[key] = tuple(eps)
    return out


def _route_conditions(
    route: HTTPRoute, services: Mapping[SvcKey, Service]
) -> tuple[Condition, ...]:
    ns = route.metadata.namespace
    missing_parents = [
        p.name for p in route.spec.parent_refs if (p.namespace or ns, p.name) not in services
    ]
    missing_backends = sorted({
        b.name
        for rule in route.spec.rules
        for b in rule.backend_refs
        if (b.namespace or ns, b.name) not in services
    })
    accepted = Condition(type="Accepted", status="True", reason="Accepted")
    if missing_parents:
        accepted = Condition(
            type="Accepted", status="False", reason="NoMatchingParent",
            message="parent Service not found: " + ", ".join(missing_parents),
        )
    resolved = Condition(type="ResolvedRefs", status="True", reason="ResolvedRefs")
    if missing_backends:
        resolved = Condition(
            type="ResolvedRefs", status="False", reason="BackendNotFound",
            message="backend Service not found (its share of traffic gets HTTP 500): "
            + ", ".join(missing_backends),
        )
    return accepted, resolved


def build_index(resources: Iterable[Resource], revision: int = 0) -> MeshIndex:
    services: dict[SvcKey, Service] = {}
    workloads: list[Workload] = []
    routes: list[HTTPRoute] = []
    for r in resources:
        if isinstance(r, Service):
            services[(r.metadata.namespace, r.metadata.name)] = r
        elif isinstance(r, Workload):
            workloads.append(r)
        elif isinstance(r, HTTPRoute):
            routes.append(r)
    workloads.sort(key=lambda w: (w.metadata.namespace, w.metadata.name))
    routes.sort(key=lambda r: (r.metadata.namespace, r.metadata.name))
    by_parent: dict[SvcKey, list[HTTPRoute]] = defaultdict(list)
    conditions: dict[ResourceKey, tuple[Condition, ...]] = {}
    for route in routes:
        for parent in {(p.namespace or route.metadata.namespace, p.name)
                       for p in route.spec.parent_refs}:
            by_parent[parent].append(route)
        conditions[route.key] = _route_conditions(route, services)
    return MeshIndex(
        revision=revision,
        services=MappingProxyType(services),
        workloads=tuple(workloads),
        routes=tuple(routes),
        endpoints=MappingProxyType(_endpoints(services, workloads)),
        routes_by_parent=MappingProxyType({k: tuple(v) for k, v in by_parent.items()}),
        conditions=MappingProxyType(conditions),
    )
