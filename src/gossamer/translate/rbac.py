"""AuthorizationPolicy -> Envoy RBAC filters on the inbound listener.

One Envoy policy per rule, named `<namespace>/<name>[rule-<i>]`, so a denial
(the 403 body, `rbac_access_denied_matched_policy[...]`) and the stats say
which rule decided. A DENY filter runs before an ALLOW filter; either is left
out when no policy of its action covers the proxy, and an ALLOW filter whose
policies have no rules denies everything (Envoy: no policy matched).

Ports in rules are the workload's application port (like Istio's target
ports): one sidecar serves one application, so they are decided here and
become "this listener's port" or "never".

TCP services get network RBAC filters, which see only the connection: a rule
that needs HTTP (methods, paths, headers, JWT) is dropped from an ALLOW
policy, and those conditions are dropped from a DENY rule, which then denies
more: both err on the side of denying, as Istio does.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gossamer.model import AuthorizationPolicy
from gossamer.model.authorizationpolicy import (
    Action,
    ConditionKey,
    Operation,
    Rule,
    RuleCondition,
    Source,
    principal_id,
)
from gossamer.translate import names
from gossamer.translate.jwt import JWT_FILTER, JWT_PAYLOAD
from gossamer.translate.protos import HTTP_RBAC, NETWORK_RBAC

Matcher = dict[str, Any]
ANY: Matcher = {"any": True}
NEVER: Matcher = {"notRule": {"any": True}}


@dataclass(frozen=True)
class Side:
    """Envoy spells the same combinators differently for principals and permissions."""

    and_: str
    or_: str
    items: str
    not_: str


PRINCIPAL = Side("andIds", "orIds", "ids", "notId")
PERMISSION = Side("andRules", "orRules", "rules", "notRule")


@dataclass(frozen=True)
class RuleContext:
    trust_domain: str
    app_port: int
    inbound_port: int
    tcp: bool


def _all(side: Side, items: Sequence[Matcher]) -> Matcher:
    if not items:
        return ANY
    return items[0] if len(items) == 1 else {side.and_: {side.items: list(items)}}


def _any(side: Side, items: Sequence[Matcher]) -> Matcher:
    return items[0] if len(items) == 1 else {side.or_: {side.items: list(items)}}


def _both(side: Side, yes: Sequence[Matcher], no: Sequence[Matcher]) -> list[Matcher]:
    """`values` (any of) and not `notValues` (none of), as one list to AND."""
    out = [_any(side, yes)] if yes else []
    if no:
        out.append({side.not_: _any(side, no)})
    return out


def string_match(pattern: str) -> Matcher:
    """Istio value syntax -> Envoy StringMatcher: `*`, `prefix*`, `*suffix` or exact."""
    if pattern == "*":
        return {"safeRegex": {"regex": ".+"}}
    if pattern.endswith("*"):
        return {"prefix": pattern[:-1]}
    if pattern.startswith("*"):
        return {"suffix": pattern[1:]}
    return {"exact": pattern}


def _peer(match: Matcher) -> Matcher:
    return {"authenticated": {"principalName": match}}


def principal(value: str) -> Matcher:
    if value == "*":
        return _peer({"safeRegex": {"regex": ".+"}})
    return _peer({"exact": principal_id(value)})


def namespace(value: str, trust_domain: str) -> Matcher:
    ns = "[^/]+" if value == "*" else re.escape(value)
    return _peer({"safeRegex": {"regex": f"spiffe://{re.escape(trust_domain)}/ns/{ns}/sa/[^/]+"}})


def payload(path: Sequence[str], value: Matcher) -> Matcher:
    """A match on the verified JWT payload jwt_authn leaves in dynamic metadata."""
    keys = [{"key": JWT_PAYLOAD}, *({"key": k} for k in path)]
    return {"sourcedMetadata": {"metadataMatcher": {
        "filter": JWT_FILTER, "path": keys, "value": value}}}


def claim(path: Sequence[str], pattern: str) -> Matcher:
    """A claim may be a string or a list of strings (`groups`): match either."""
    m = string_match(pattern)
    return payload(path, {"orMatch": {"valueMatchers": [
        {"stringMatch": m}, {"listMatch": {"oneOf": {"stringMatch": m}}}]}})


def request_principal(value: str) -> Matcher:
    """`<iss>/<sub>`: split at the last '/', each side exact or `*` (present)."""
    if value == "*":
        return payload(["iss"], {"presentMatch": True})
    iss, _, sub = value.rpartition("/")
    parts = [payload([k], {"presentMatch": True} if v == "*" else {"stringMatch": {"exact": v}})
             for k, v in (("iss", iss), ("sub", sub))]
    return _all(PRINCIPAL, parts)


def _port(ports: Sequence[int], ctx: RuleContext) -> Matcher:
    return {"destinationPort": ctx.inbound_port} if ctx.app_port in ports else NEVER


def _header(name: str, pattern: str) -> Matcher:
    return {"header": {"name": name, "stringMatch": string_match(pattern)}}


def _path(pattern: str) -> Matcher:
    return {"urlPath": {"path": string_match(pattern)}}


def _source(src: Source, ctx: RuleContext) -> list[Matcher]:
    td = ctx.trust_domain
    ids = _both(PRINCIPAL, [principal(p) for p in src.principals],
                [principal(p) for p in src.not_principals])
    ids += _both(PRINCIPAL, [namespace(n, td) for n in src.namespaces],
                 [namespace(n, td) for n in src.not_namespaces])
    if not ctx.tcp:
        ids += _both(PRINCIPAL, [request_principal(p) for p in src.request_principals],
                     [request_principal(p) for p in src.not_request_principals])
    return ids


def _operation(op: Operation, ctx: RuleContext) -> list[Matcher]:
    rules = []
    if op.ports:
        rules.append(_port(op.ports, ctx))
    if op.not_ports:
        rules.append({"notRule": _port(op.not_ports, ctx)})
    if not ctx.tcp:
        rules += _both(PERMISSION, [_header(":method", m) for m in op.methods],
                       [_header(":method", m) for m in op.not_methods])
        rules += _both(PERMISSION, [_path(p) for p in op.paths],
                       [_path(p) for p in op.not_paths])
        rules += _both(PERMISSION, [_host(h) for h in op.hosts],
                       [_host(h) for h in op.not_hosts])
    return rules


def _host(pattern: str) -> Matcher:
    """The request's host, with or without a port (`Host: api.example:8080`)."""
    if "*" in pattern:
        return _header(":authority", pattern)
    return _any(PERMISSION, [_header(":authority", pattern),
                             _header(":authority", f"{pattern}:*")])


def _condition_value(key: ConditionKey, value: str, ctx: RuleContext) -> Matcher:
    if key.kind == "source.principal":
        return principal(value)
    if key.kind == "source.namespace":
        return namespace(value, ctx.trust_domain)
    if key.kind == "destination.port":
        return _port([int(value)], ctx)
    if key.kind == "request.headers":
        return _header(key.path[0], value)
    if key.kind == "request.auth.principal":
        return request_principal(value)
    path = {"request.auth.audiences": ("aud",), "request.auth.presenter": ("azp",)}
    return claim(path.get(key.kind, key.path), value)


def _on_permission_side(key: ConditionKey) -> bool:
    return key.kind in ("request.headers", "destination.port")


def _condition(cond: RuleCondition, ctx: RuleContext) -> tuple[bool, list[Matcher]]:
    key = cond.parsed_key
    side = PERMISSION if _on_permission_side(key) else PRINCIPAL
    return side is PERMISSION, _both(side, [_condition_value(key, v, ctx) for v in cond.values],
                                     [_condition_value(key, v, ctx) for v in cond.not_values])


def _needs_http(rule: Rule) -> bool:
    return (any(f.source.request_principals or f.source.not_request_principals
                for f in rule.from_)
            or any(t.operation.http_only for t in rule.to)
            or any(c.parsed_key.http_only for c in rule.when))


def rule_policy(rule: Rule, ctx: RuleContext) -> dict[str, Any]:
    """One Envoy RBAC policy: any principal (from) AND any permission (to), plus `when`."""
    on_perm: list[Matcher] = []
    on_principal: list[Matcher] = []
    for cond in rule.when:
        if ctx.tcp and cond.parsed_key.http_only:
            continue
        is_perm, matchers = _condition(cond, ctx)
        (on_perm if is_perm else on_principal).extend(matchers)
    principals = [_all(PRINCIPAL, _source(f.source, ctx) + on_principal) for f in rule.from_]
    permissions = [_all(PERMISSION, _operation(t.operation, ctx) + on_perm) for t in rule.to]
    return {"permissions": permissions or [_all(PERMISSION, on_perm)],
            "principals": principals or [_all(PRINCIPAL, on_principal)]}


def rbac_rules(policies: Sequence[AuthorizationPolicy], action: Action,
               ctx: RuleContext) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for policy in policies:
        ns, name = policy.metadata.namespace, policy.metadata.name
        for i, rule in enumerate(policy.spec.rules):
            if ctx.tcp and action is Action.ALLOW and _needs_http(rule):
                continue  # an HTTP-only ALLOW rule allows nothing on TCP
            out[names.rbac_policy(ns, name, i)] = rule_policy(rule, ctx)
    return {"action": action.value, "policies": out}


def http_rbac_filter(policies: Sequence[AuthorizationPolicy], action: Action,
                     ctx: RuleContext) -> dict[str, Any] | None:
    if not policies:
        return None
    # Without a prefix both filters count into the same http.<prefix>.rbac.* stats.
    return {"name": f"envoy.filters.http.rbac.{action.value.lower()}",
            "typedConfig": {"@type": HTTP_RBAC, "rules": rbac_rules(policies, action, ctx),
                            "rulesStatPrefix": action.value.lower()}}


def network_rbac_filter(policies: Sequence[AuthorizationPolicy], action: Action,
                        ctx: RuleContext) -> dict[str, Any] | None:
    if not policies:
        return None
    return {"name": f"envoy.filters.network.rbac.{action.value.lower()}",
            "typedConfig": {"@type": NETWORK_RBAC,
                            "statPrefix": f"inbound_{action.value.lower()}.",
                            "rules": rbac_rules(policies, action, ctx)}}
