"""Routes: Gateway API HTTPRoute rules -> Envoy virtual-host routes.

Precedence follows the Gateway API spec: Exact path, then regex, then the
longest PathPrefix, then a method match, then the most header matches, then
the most query matches, then route (namespace, name) and rule order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from gossamer.index import SvcKey
from gossamer.model import HTTPRoute, Service
from gossamer.model.cors import CORS
from gossamer.model.httproute import (
    BackendRef,
    FilterType,
    HeaderModifier,
    ParentRef,
    PathMatchType,
    PathModifier,
    PathModifierType,
    RequestMirror,
    RouteFilter,
    RouteMatch,
    RouteRule,
    ValueMatchType,
)
from gossamer.model.resiliencepolicy import ResiliencePolicy
from gossamer.translate import names
from gossamer.translate.protos import CORS_POLICY, seconds
from gossamer.translate.resilience import ROUTE_FIELDS, route_settings, rule_policies

REDIRECT_CODES = {301: "MOVED_PERMANENTLY", 302: "FOUND", 303: "SEE_OTHER",
                  307: "TEMPORARY_REDIRECT", 308: "PERMANENT_REDIRECT"}
# The inbound sidecar marks replies it made because its app was unreachable
# (see listeners.UNREACHABLE_REPLY): the app never saw that request.
UNREACHABLE_HEADER = "x-gossamer-unreachable"
# Safe to retry whatever the method: the request never reached an app.
# Retried on another instance, so a dying or draining one stays invisible.
DEFAULT_RETRY: dict[str, Any] = {
    "retryOn": "connect-failure,refused-stream,reset-before-request,retriable-headers",
    "retriableHeaders": [{"name": UNREACHABLE_HEADER, "presentMatch": True}],
    "numRetries": 2,
    "retryHostPredicate": [{
        "name": "envoy.retry_host_predicates.previous_hosts",
        "typedConfig": {"@type": "type.googleapis.com/envoy.extensions.retry.host."
                                  "previous_hosts.v3.PreviousHostsPredicate"},
    }],
    "hostSelectionRetryMaxAttempts": "3",
}
CORS_FILTER = "envoy.filters.http.cors"
# What `*.` stands for in an allowed origin: one or more DNS labels.
SUBDOMAINS = "[A-Za-z0-9-]+(?:\\.[A-Za-z0-9-]+)*"
_PATH_RANK = {PathMatchType.EXACT: 0, PathMatchType.REGULAR_EXPRESSION: 1,
              PathMatchType.PATH_PREFIX: 2}


def _string_match(kind: ValueMatchType, value: str) -> dict[str, Any]:
    if kind is ValueMatchType.REGULAR_EXPRESSION:
        return {"safeRegex": {"regex": value}}
    return {"exact": value}


def _path_match(match: RouteMatch) -> dict[str, Any]:
    path = match.path
    if path is None or (path.type is PathMatchType.PATH_PREFIX and path.value.rstrip("/") == ""):
        return {"prefix": "/"}
    if path.type is PathMatchType.EXACT:
        return {"path": path.value}
    if path.type is PathMatchType.REGULAR_EXPRESSION:
        return {"safeRegex": {"regex": path.value}}
    # Gateway prefixes match whole path segments: /foo matches /foo/bar, not /foobar.
    return {"pathSeparatedPrefix": path.value.rstrip("/")}


def envoy_match(match: RouteMatch) -> dict[str, Any]:
    out = _path_match(match)
    headers = [{"name": h.name, "stringMatch": _string_match(h.type, h.value)}
               for h in match.headers]
    if match.method:
        headers.append({"name": ":method", "stringMatch": {"exact": match.method}})
    if headers:
        out["headers"] = headers
    if match.query_params:
        out["queryParameters"] = [
            {"name": q.name, "stringMatch": _string_match(q.type, q.value)}
            for q in match.query_params
        ]
    return out


def _literal(value: str) -> str:
    """A header value Envoy sends as written: it reads `%...%` in the values it adds
    as its format commands (`100%` alone is a NACK), and `%%` as one `%`."""
    return value.replace("%", "%%")


def _substitution(path: str) -> str:
    """A path as an RE2 rewrite's literal text: a backslash there starts `\\1`."""
    return path.replace("\\", "\\\\")


def _headers(mod: HeaderModifier) -> tuple[list[dict[str, Any]], list[str]]:
    add = [{"header": {"key": h.name, "value": _literal(h.value)},
            "appendAction": "OVERWRITE_IF_EXISTS_OR_ADD"} for h in mod.set]
    add += [{"header": {"key": h.name, "value": _literal(h.value)},
             "appendAction": "APPEND_IF_EXISTS_OR_ADD"} for h in mod.add]
    return add, list(mod.remove)


def _prefix_rewrite(match: RouteMatch, mod: PathModifier) -> dict[str, Any]:
    """Gateway path rewrites as RE2 rewrites, which keep segment semantics
    (replacing /foo with / turns /foo/bar into /bar, not //bar)."""
    if mod.type is PathModifierType.REPLACE_FULL_PATH:
        return {"regexRewrite": {"pattern": {"regex": "^/.*$"},
                                 "substitution": _substitution(mod.replace_full_path or "/")}}
    prefix = match.path.value.rstrip("/") if match.path else ""
    replacement = _substitution((mod.replace_prefix_match or "/").rstrip("/"))
    if not replacement:
        return {"regexRewrite": {"pattern": {"regex": f"^{re.escape(prefix)}/?(.*)$"},
                                 "substitution": "/\\1"}}
    return {"regexRewrite": {"pattern": {"regex": f"^{re.escape(prefix)}(/.*)?$"},
                             "substitution": f"{replacement}\\1"}}


def _backend_cluster(ref: BackendRef, route_ns: str, parent_port: int,
                     services: Mapping[SvcKey, Service]) -> str:
    ns = ref.namespace or route_ns
    svc = services.get((ns, ref.name))
    port = ref.port or parent_port
    if svc is None or svc.port(port) is None:
        return names.NO_ROUTE_CLUSTER
    return names.outbound_cluster(ns, ref.name, port)


def _mirror_policies(mirrors: Sequence[RequestMirror], route_ns: str, parent_port: int,
                     services: Mapping[SvcKey, Service]) -> list[dict[str, Any]]:
    """Envoy sends the copies and discards their responses. A mirror to a Service
    (or port) that does not exist is left out; the route's status says so."""
    out = []
    for mirror in mirrors:
        ref, share = mirror.backend_ref, mirror.per_million
        ns, port = ref.namespace or route_ns, ref.port or parent_port
        svc = services.get((ns, ref.name))
        if svc is None or svc.port(port) is None or share == 0:
            continue
        fraction = ({"numerator": share // 10_000, "denominator": "HUNDRED"}
                    if share % 10_000 == 0 else {"numerator": share, "denominator": "MILLION"})
        out.append({"cluster": names.outbound_cluster(ns, ref.name, port),
                    "runtimeFraction": {"defaultValue": fraction}})
    return out


def _origin_match(origin: str) -> dict[str, Any]:
    if origin == "*":
        return {"safeRegex": {"regex": ".*"}}
    scheme, rest = origin.split("://", 1)
    if rest.startswith("*."):
        host = f"{SUBDOMAINS}\\.{re.escape(rest[2:])}"
        return {"safeRegex": {"regex": f"{re.escape(scheme)}://{host}"}}
    return {"exact": origin}


def cors_policy(cors: CORS) -> dict[str, Any]:
    """Per-route config of the CORS HTTP filter that outbound listeners carry."""
    out: dict[str, Any] = {"@type": CORS_POLICY,
                           "allowOriginStringMatch": [_origin_match(o) for o in cors.allow_origins],
                           "maxAge": str(cors.max_age)}
    for key, values in (("allowMethods", cors.allow_methods),
                        ("allowHeaders", cors.allow_headers),
                        ("exposeHeaders", cors.expose_headers)):
        if values:
            out[key] = ",".join(values)
    if cors.allow_credentials is not None:
        out["allowCredentials"] = cors.allow_credentials
    return out


def _policy_for(backends: Sequence[BackendRef], route_ns: str, parent: SvcKey | None,
                policies: Mapping[SvcKey, ResiliencePolicy]) -> ResiliencePolicy | None:
    """The policy whose route settings a rule gets. The called Service's (the route's
    parent's) timeouts, retries and hedging apply to its routes wherever they send, as
    an Istio VirtualService's do on the host it names. When every backend is one
    Service, that Service's policy gives the rest: what the called Service's does not
    set, and the load-balancer hash, which feeds the backend's own clusters. A rule
    that splits traffic across Services gets the called Service's policy."""
    called = policies.get(parent) if parent is not None else None
    targets = {(b.namespace or route_ns, b.name) for b in backends}
    if len(targets) != 1:
        return called
    backend = policies.get(targets.pop())
    if called is None or called is backend:
        return backend
    if backend is None:  # the called Service's route settings, no load-balancer hash
        return called.model_copy(update={"spec": called.spec.model_copy(
            update={"load_balancer": None})})
    t = called.spec.timeouts  # `connect` alone is no route setting
    own = {f: getattr(called.spec, f) for f in ROUTE_FIELDS if getattr(called.spec, f)
           and (f != "timeouts" or (t is not None and (t.request or t.per_try or t.idle)))}
    return backend.model_copy(update={"spec": backend.spec.model_copy(update=own)})


def _backend_headers(ref: BackendRef) -> dict[str, Any]:
    """A backend's own header modifiers, for its entry of the weighted clusters."""
    out: dict[str, Any] = {}
    for f in ref.filters or ():
        side = "request" if f.type is FilterType.REQUEST_HEADER_MODIFIER else "response"
        mod = f.request_header_modifier or f.response_header_modifier
        assert mod is not None
        add, remove = _headers(mod)
        if add:
            out[f"{side}HeadersToAdd"] = add
        if remove:
            out[f"{side}HeadersToRemove"] = remove
    return out


def _forward(rule: RouteRule, route_ns: str, parent_port: int,
             services: Mapping[SvcKey, Service], parent: SvcKey | None = None,
             policies: Mapping[SvcKey, ResiliencePolicy] | None = None) -> dict[str, Any]:
    weighted = [(b, _backend_cluster(b, route_ns, parent_port, services))
                for b in rule.backend_refs if b.weight > 0]
    action: dict[str, Any]
    filtered = any(ref.filters for ref, _ in weighted)
    if len(weighted) == 1 and not filtered:
        action = {"cluster": weighted[0][1]}
    else:
        # Backends to one cluster add up, unless their filters differ.
        totals: dict[tuple[str, str], dict[str, Any]] = {}
        for ref, cluster in weighted:
            extra = _backend_headers(ref)
            entry = totals.setdefault((cluster, repr(extra)),
                                      {"name": cluster, "weight": 0, **extra})
            entry["weight"] += ref.weight
        action = {"weightedClusters": {"clusters": list(totals.values())}}
    # Gateway API: a request to an unresolvable backend gets HTTP 500.
    action["clusterNotFoundResponseCode"] = "INTERNAL_SERVER_ERROR"
    timeouts = rule.timeouts
    request_ms = timeouts.request_ms if timeouts else None
    action["timeout"] = seconds(request_ms or 0)
    action["retryPolicy"] = dict(DEFAULT_RETRY)
    if timeouts and timeouts.backend_request_ms:
        action["retryPolicy"]["perTryTimeout"] = seconds(timeouts.backend_request_ms)
    if policies:
        policy = _policy_for([b for b, _ in weighted], route_ns, parent, policies)
        route_settings(action, policy, DEFAULT_RETRY,
                       rule_request=bool(timeouts and timeouts.request is not None),
                       rule_per_try=bool(timeouts and timeouts.backend_request is not None))
    return action


def _redirect(filt: RouteFilter, match: RouteMatch) -> dict[str, Any]:
    red = filt.request_redirect
    assert red is not None
    out: dict[str, Any] = {"responseCode": REDIRECT_CODES[red.status_code]}
    if red.scheme:
        out["schemeRedirect"] = red.scheme
    if red.hostname:
        out["hostRedirect"] = red.hostname
    if red.port:
        out["portRedirect"] = red.port
    if red.path:
        if red.path.type is PathModifierType.REPLACE_FULL_PATH:
            out["pathRedirect"] = red.path.replace_full_path
        else:
            out["regexRewrite"] = _prefix_rewrite(match, red.path)["regexRewrite"]
    return out


def envoy_route(rule: RouteRule, match: RouteMatch, name: str, route_ns: str,
                parent_port: int, services: Mapping[SvcKey, Service],
                parent: SvcKey | None = None,
                policies: Mapping[SvcKey, ResiliencePolicy] | None = None) -> dict[str, Any]:
    route: dict[str, Any] = {"name": name, "match": envoy_match(match)}
    by_type = {f.type: f for f in rule.filters}
    if FilterType.REQUEST_REDIRECT in by_type:
        route["redirect"] = _redirect(by_type[FilterType.REQUEST_REDIRECT], match)
        return route
    if not [b for b in rule.backend_refs if b.weight > 0]:
        route["directResponse"] = {"status": 500, "body": {
            "inlineString": "gossamer: this route rule has no backend with weight > 0\n"}}
        return route
    action = _forward(rule, route_ns, parent_port, services, parent, policies)
    if (rw := by_type.get(FilterType.URL_REWRITE)) and rw.url_rewrite:
        if rw.url_rewrite.hostname:
            action["hostRewriteLiteral"] = rw.url_rewrite.hostname
        if rw.url_rewrite.path:
            action.update(_prefix_rewrite(match, rw.url_rewrite.path))
    if mirrors := _mirror_policies(rule.mirrors, route_ns, parent_port, services):
        action["requestMirrorPolicies"] = mirrors
    route["route"] = action
    if (cors := by_type.get(FilterType.CORS)) and cors.cors:
        route.setdefault("typedPerFilterConfig", {})[CORS_FILTER] = cors_policy(cors.cors)
    if (req := by_type.get(FilterType.REQUEST_HEADER_MODIFIER)) and req.request_header_modifier:
        add, remove = _headers(req.request_header_modifier)
        route["requestHeadersToAdd"], route["requestHeadersToRemove"] = add, remove
    if (resp := by_type.get(FilterType.RESPONSE_HEADER_MODIFIER)) and \
            resp.response_header_modifier:
        add, remove = _headers(resp.response_header_modifier)
        route["responseHeadersToAdd"], route["responseHeadersToRemove"] = add, remove
    return route


def precedence(match: RouteMatch) -> tuple[int, int, int, int, int]:
    path = match.path
    rank = _PATH_RANK[path.type] if path else 2
    length = len(path.value.rstrip("/")) if path else 0
    return (rank, -length, 0 if match.method else 1, -len(match.headers),
            -len(match.query_params))


def route_clusters(route: Mapping[str, Any]) -> set[str]:
    """The clusters an Envoy route forwards to (not those it mirrors to)."""
    action = route.get("route", {})
    if "cluster" in action:
        return {action["cluster"]}
    return {c["name"] for c in action.get("weightedClusters", {}).get("clusters", ())}


def with_called_stats(routes: list[dict[str, Any]], own: str) -> list[dict[str, Any]]:
    """A port whose routes send elsewhere than its own cluster (`own`) counts what its
    callers sent it under its virtual host (`vhost.<vhost>.route.called.*`): the
    backends' cluster stats name only where requests went, and `gossamer edges` asks
    about the Service a client called. Ports that send only to themselves need no
    more stats than their cluster's."""
    if all(route_clusters(r) <= {own} for r in routes):
        return routes
    return [{**r, "statPrefix": names.CALLED_STATS} if "route" in r else r for r in routes]


def rule_route_name(namespace: str, route: str, index: int, rule_name: str | None,
                    match: int) -> str:
    """Envoy route name of one match of a rule: a named rule by its name (stable when
    rules are reordered), others by position."""
    return f"{namespace}/{route}/{rule_name or f'rule{index}'}/match{match}"


def attaches(parent_refs: Sequence[ParentRef], route_ns: str, service: Service,
             port: int) -> bool:
    ns, name = service.metadata.namespace, service.metadata.name
    return any(p.name == name and (p.namespace or route_ns) == ns and p.port in (None, port)
               for p in parent_refs if not p.is_gateway)


def service_routes(service: Service, port: int, attached: Sequence[HTTPRoute],
                   services: Mapping[SvcKey, Service],
                   policies: Mapping[SvcKey, ResiliencePolicy] | None = None,
                   grpc: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """The Envoy routes of one service port; the default route when nothing attaches.
    `policies`: the ResiliencePolicy in effect for each Service. `grpc`: the
    port's GRPCRoute routes (translate.grpcroutes), which come first."""
    ns, name = service.metadata.namespace, service.metadata.name
    applicable = [r for r in attached if attaches(r.spec.parent_refs, r.metadata.namespace,
                                                  service, port)]
    if grpc and not applicable:
        return list(grpc)
    if not applicable:
        action: dict[str, Any] = {"cluster": names.outbound_cluster(ns, name, port),
                                  "timeout": "0s", "retryPolicy": DEFAULT_RETRY}
        route_settings(action, (policies or {}).get((ns, name)), DEFAULT_RETRY)
        return [{"name": "default", "match": {"prefix": "/"}, "route": action}]
    ordered: list[tuple[tuple[int, ...], dict[str, Any]]] = []
    seq = 0
    for route in applicable:
        for i, rule in enumerate(route.spec.rules):
            in_effect = policies and rule_policies(
                policies, route.metadata.namespace, route.metadata.name,
                rule.name)
            for j, match in enumerate(rule.matches or [RouteMatch()]):
                rname = rule_route_name(route.metadata.namespace, route.metadata.name, i,
                                        rule.name, j)
                er = envoy_route(rule, match, rname, route.metadata.namespace, port, services,
                                 (ns, name), in_effect or None)
                ordered.append(((*precedence(match), seq), er))
                seq += 1
    ordered.sort(key=lambda pair: pair[0])
    return [*grpc, *(r for _, r in ordered)]
