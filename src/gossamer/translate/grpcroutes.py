"""GRPCRoute rules -> Envoy routes on a Service's grpc and http2 ports.

A gRPC call is an HTTP/2 POST to `/package.Service/Method`, so each GRPCRoute
match becomes an HTTPRoute path match (Exact, PathPrefix or RE2 regex) and the
rule is translated like an HTTPRoute rule: same backends, header modifiers,
mirrors, retries and ResiliencePolicy settings.

Precedence follows Gateway API for GRPCRoute: the most characters in an exact
service, then in an exact method, then the most header matches, then route
(namespace, name) and rule order. Regular-expression matches follow exact ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gossamer.index import SvcKey
from gossamer.model import GRPCRoute, Service
from gossamer.model.grpcroute import GRPCRouteMatch, GRPCRouteRule, MethodMatchType
from gossamer.model.httproute import PathMatch, PathMatchType, RouteFilter, RouteMatch, RouteRule
from gossamer.model.resiliencepolicy import ResiliencePolicy
from gossamer.translate.routes import attaches, envoy_route, rule_route_name


def grpc_path(match: GRPCRouteMatch) -> PathMatch | None:
    """The request-path match of a gRPC method match (None: every method). Built
    without validation: the method match was checked as this path (its regex can be
    longer than a user's PathMatch may be)."""
    method = match.method
    if method is None:
        return None
    regex = method.path_regex
    if regex is not None:
        return PathMatch.model_construct(type=PathMatchType.REGULAR_EXPRESSION, value=regex)
    if method.method:
        return PathMatch.model_construct(type=PathMatchType.EXACT,
                                         value=f"/{method.service}/{method.method}")
    return PathMatch.model_construct(type=PathMatchType.PATH_PREFIX, value=f"/{method.service}")


def http_match(match: GRPCRouteMatch) -> RouteMatch:
    # Not validated again: the gRPC match was, and its path may be longer than a user's.
    return RouteMatch.model_construct(path=grpc_path(match), headers=list(match.headers))


def http_rule(rule: GRPCRouteRule) -> RouteRule:
    """The HTTPRoute rule a GRPCRoute rule behaves as (its filters are a subset)."""
    filters = [RouteFilter.model_validate(f.model_dump(by_alias=True, exclude_none=True))
               for f in rule.filters]
    return RouteRule(name=rule.name, filters=filters, backend_refs=list(rule.backend_refs))


def grpc_precedence(match: GRPCRouteMatch) -> tuple[int, int, int, int]:
    method = match.method
    if method is None:
        return (2, 0, 0, -len(match.headers))
    exact = method.type is MethodMatchType.EXACT
    return (0 if exact else 1, -len(method.service or "") if exact else 0,
            -len(method.method or "") if exact else 0, -len(match.headers))


def grpc_service_routes(service: Service, port: int, attached: Sequence[GRPCRoute],
                        services: Mapping[SvcKey, Service],
                        policies: Mapping[SvcKey, ResiliencePolicy] | None = None,
                        ) -> list[dict[str, Any]]:
    """The Envoy routes the GRPCRoutes attached to one service port make, in precedence
    order; empty when none attaches."""
    key = (service.metadata.namespace, service.metadata.name)
    ordered: list[tuple[tuple[int, ...], dict[str, Any]]] = []
    seq = 0
    for route in attached:
        ns = route.metadata.namespace
        if not attaches(route.spec.parent_refs, ns, service, port):
            continue
        for i, rule in enumerate(route.spec.rules):
            as_http = http_rule(rule)
            for j, match in enumerate(rule.matches or [GRPCRouteMatch()]):
                name = "grpc:" + rule_route_name(ns, route.metadata.name, i, rule.name, j)
                er = envoy_route(as_http, http_match(match), name, ns, port, services, key,
                                 policies)
                ordered.append(((*grpc_precedence(match), seq), er))
                seq += 1
    ordered.sort(key=lambda pair: pair[0])
    return [r for _, r in ordered]
