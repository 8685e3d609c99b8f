"""How much of a ResiliencePolicy takes effect, given the routes of the Service it targets.

The policy's route settings (timeouts, retries, hedging) apply to the routes of the
Service callers address, wherever those routes send (translate/routes.py), as an Istio
VirtualService's do on the host it names. Its cluster settings (connect timeout,
circuit breaker, retry budget, outlier detection, health check, load balancer)
apply to the Service's own clusters, as an Istio DestinationRule's do on its host.
Once every route of a port sends elsewhere (an HTTPRoute sending `catalog` to
`catalog-v1` and `catalog-v2`), the Service's own cluster of that port gets no
traffic, so its cluster settings do nothing there: they belong in the backends'
policies. Pure: model objects in, words out; the index's status condition and
`apply`'s warning say it alike.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from gossamer.model.grpcroute import GRPCRoute
from gossamer.model.httproute import HTTPRoute
from gossamer.model.meta import Condition, ResourceKey
from gossamer.model.resiliencepolicy import ResiliencePolicy, ResiliencePolicySpec
from gossamer.model.service import Service
from gossamer.model.tcproute import TCPRoute

AnyRoute = HTTPRoute | GRPCRoute | TCPRoute
# The condition that says a policy's cluster settings do nothing (set only then).
CLUSTER_CONDITION = "ClusterSettingsApplied"
CLUSTER_REASON = "TrafficRoutedElsewhere"


def cluster_fields(spec: ResiliencePolicySpec) -> list[str]:
    """The cluster settings a policy sets, by field path."""
    found = {"timeouts.connect": spec.timeouts is not None and spec.timeouts.connect,
             "retries.budget": spec.retries is not None and spec.retries.budget,
             "circuitBreaker": spec.circuit_breaker, "outlierDetection": spec.outlier_detection,
             "healthCheck": spec.health_check, "loadBalancer": spec.load_balancer}
    return [name for name, value in found.items() if value]


def route_fields(spec: ResiliencePolicySpec) -> list[str]:
    found = {"timeouts": spec.timeouts is not None and (
                 spec.timeouts.request or spec.timeouts.per_try or spec.timeouts.idle),
             "retries": spec.retries, "hedging": spec.hedging, "routes": spec.routes}
    return [name for name, value in found.items() if value]


def _attached(route: AnyRoute, ns: str, name: str, port: int) -> bool:
    own = route.metadata.namespace
    return any((p.namespace or own, p.name) == (ns, name) and p.port in (None, port)
               for p in route.spec.parent_refs if not p.is_gateway)


def routed_away(service: Service, routes: Iterable[AnyRoute]) -> dict[int, list[str]]:
    """Each port of `service` whose attached routes (of its protocol's kinds) never
    send to the Service's own cluster of that port -> the Services they send to."""
    ns, name = service.metadata.namespace, service.metadata.name
    routes = list(routes)
    out: dict[int, list[str]] = {}
    for port in service.spec.ports:
        kinds: tuple[type, ...] = ((HTTPRoute, GRPCRoute) if port.protocol.is_http
                                   else (TCPRoute,))
        attached = [r for r in routes
                    if isinstance(r, kinds) and _attached(r, ns, name, port.port)]
        if not attached:
            continue
        sends = {((b.namespace or r.metadata.namespace), b.name, b.port or port.port)
                 for r in attached for rule in r.spec.rules for b in rule.backend_refs
                 if b.weight > 0}
        if (ns, name, port.port) not in sends:
            out[port.port] = sorted({n if bns == ns else f"{bns}/{n}" for bns, n, _ in sends})
    return out


def unapplied(policy: ResiliencePolicy, service: Service | None,
              routes: Iterable[AnyRoute]) -> str | None:
    """Why the policy's cluster settings have no effect on some ports, and what does
    apply; None when they all take effect (or it sets none)."""
    clusters = cluster_fields(policy.spec)
    away = routed_away(service, routes) if service is not None and clusters else {}
    if not away:
        return None
    svc = policy.spec.target_ref.name
    ports = ", ".join(str(p) for p in sorted(away))
    every = len(away) == len(service.spec.ports) if service is not None else False
    backends = sorted({b for sent in away.values() for b in sent})
    where = "" if every else f" on port(s) {ports}"
    said = [f"the routes of {svc!r}{where} send all its traffic to other Services "
            f"({', '.join(backends) or 'none'}), so its cluster settings "
            f"({', '.join(clusters)}) have no effect there: set them in a ResiliencePolicy "
            "of each backend Service"]
    if applied := route_fields(policy.spec):
        said.append(f"its route settings ({', '.join(applied)}) apply to those routes")
    return "; ".join(said)


def _missing_sections(policy: ResiliencePolicy, routes: Sequence[AnyRoute]) -> list[str]:
    rules = {(r.metadata.namespace, r.metadata.name): {rule.name for rule in r.spec.rules}
             for r in routes if isinstance(r, HTTPRoute)}
    missing = []
    for i, section in enumerate(policy.spec.routes):
        names = rules.get((policy.metadata.namespace, section.http_route))
        if names is None:
            missing.append(f"routes[{i}]: HTTPRoute {section.http_route!r} not found")
        elif section.rule is not None and section.rule not in names:
            missing.append(f"routes[{i}]: HTTPRoute {section.http_route!r} has no rule "
                           f"named {section.rule!r}")
    return missing


def resilience_conditions(conditions: dict[ResourceKey, tuple[Condition, ...]],
                          policies: Iterable[ResiliencePolicy],
                          in_effect: Mapping[tuple[str, str], ResiliencePolicy],
                          services: Mapping[tuple[str, str], Service],
                          routes: Sequence[AnyRoute]) -> None:
    """Add to the policies' (Accepted, ResolvedRefs) conditions, in place: a `routes`
    section naming a missing HTTPRoute or rule is reported (ResolvedRefs=False,
    RouteNotFound; the rest of the policy applies); the policy in effect for a Service
    whose routes send elsewhere says which of its settings do nothing there
    (ClusterSettingsApplied=False, TrafficRoutedElsewhere)."""
    for p in policies:
        missing = _missing_sections(p, routes) if p.spec.routes else []
        accepted, resolved = conditions[p.key]
        if missing and resolved.status == "True":
            conditions[p.key] = (accepted, Condition(
                type="ResolvedRefs", status="False", reason="RouteNotFound",
                message="; ".join(missing) + " (that section has no effect)"))
    by_parent: dict[tuple[str, str], list[AnyRoute]] = defaultdict(list)
    for r in routes:
        for parent in {(p.namespace or r.metadata.namespace, p.name) for p in r.spec.parent_refs
                       if not p.is_gateway}:
            by_parent[parent].append(r)
    for key, p in in_effect.items():
        why = unapplied(p, services.get(key), by_parent.get(key, ()))
        if why is not None:
            conditions[p.key] = (*conditions[p.key], Condition(
                type=CLUSTER_CONDITION, status="False", reason=CLUSTER_REASON, message=why))
