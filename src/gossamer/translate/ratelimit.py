"""RateLimitPolicy -> HTTP filters on the target Service's inbound listener, or on an
ExternalService's routes (`route_limits`).

They run after jwt_authn and RBAC, so a denied request consumes no quota, and
before the router.

- `local`: `envoy.filters.http.local_ratelimit`, one token bucket per sidecar
  shared by all its connections.
- `global`: `envoy.filters.http.ratelimit` asking the control plane, through
  the bootstrap's xDS cluster, for every request. Each rule becomes one Envoy
  rate-limit descriptor: `(RULE_KEY, "<namespace>/<policy>/<rule index>")`, an
  optional gate entry that exists only when the rule's match holds (else the
  rule counts nothing), and an optional key entry (caller, header, path). The
  limit numbers are not in Envoy config: the control plane looks the rule up
  in its current index, so a new limit applies at once.

If the control plane cannot be asked in `RLS_TIMEOUT`, the request passes
(fail open): a control-plane outage must not take the mesh down.
"""

from __future__ import annotations

from typing import Any

from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2  # noqa: F401
from envoy.extensions.filters.http.ratelimit.v3 import rate_limit_pb2  # noqa: F401
from envoy.extensions.rate_limit_descriptors.expr.v3 import expr_pb2  # noqa: F401

from gossamer.contract.names import (
    CALLER_ENTRY,
    CLIENT_IP_ENTRY,
    HEADER_ENTRY,
    MATCH_KEY,
    PATH_ENTRY,
    RATELIMIT_DOMAIN,
    RULE_KEY,
    XDS_CLUSTER,
    rule_id,
)
from gossamer.index import MeshIndex, SvcKey
from gossamer.model.httproute import HeaderMatch, PathMatchType, ValueMatchType
from gossamer.model.ratelimitpolicy import (
    GlobalRule,
    KeyType,
    LocalLimit,
    RateLimitMatch,
    RateLimitPolicy,
    path_regex,
)
from gossamer.translate.protos import seconds

LOCAL_FILTER = "envoy.filters.http.local_ratelimit"
GLOBAL_FILTER = "envoy.filters.http.ratelimit"
EXPR_DESCRIPTOR = "envoy.rate_limit_descriptors.expr"
LOCAL_RATELIMIT = ("type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3."
                   "LocalRateLimit")
RATELIMIT = "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit"
EXPR = "type.googleapis.com/envoy.extensions.rate_limit_descriptors.expr.v3.Descriptor"
# The descriptor entry that separates counters, by key type.
KEY_ENTRY = {KeyType.CALLER: CALLER_ENTRY, KeyType.HEADER: HEADER_ENTRY,
             KeyType.PATH: PATH_ENTRY, KeyType.CLIENT_IP: CLIENT_IP_ENTRY}
# Callers without a client certificate (PERMISSIVE plaintext) share one counter.
ANONYMOUS = "anonymous"
CALLER_EXPR = (f'has(connection.uri_san_peer_certificate) ? '
               f'connection.uri_san_peer_certificate : "{ANONYMOUS}"')
PATH_EXPR = "request.url_path"
# Envoy's default (20ms) is too short for a Python control plane under load;
# past this the request passes.
RLS_TIMEOUT = "1s"
ALWAYS = {"defaultValue": {"numerator": 100, "denominator": "HUNDRED"}}
# An optional query string after the path in `:path`.

def local_filter(limit: LocalLimit) -> dict[str, Any]:
    return {"name": LOCAL_FILTER, "typedConfig": {
        "@type": LOCAL_RATELIMIT,
        "statPrefix": "gossamer_local_ratelimit",
        "tokenBucket": {"maxTokens": limit.requests + limit.burst,
                        "tokensPerFill": limit.requests,
                        "fillInterval": seconds(limit.per_ms)},
        "filterEnabled": {**ALWAYS, "runtimeKey": "gossamer.local_ratelimit.enabled"},
        "filterEnforced": {**ALWAYS, "runtimeKey": "gossamer.local_ratelimit.enforced"},
        "enableXRatelimitHeaders": "DRAFT_VERSION_03",
    }}


def _header(h: HeaderMatch) -> dict[str, Any]:
    if h.type is ValueMatchType.REGULAR_EXPRESSION:
        return {"name": h.name, "stringMatch": {"safeRegex": {"regex": h.value}}}
    return {"name": h.name, "stringMatch": {"exact": h.value}}


def _gate(match: RateLimitMatch) -> dict[str, Any] | None:
    headers = [_header(h) for h in match.headers]
    if match.method:
        headers.append({"name": ":method", "stringMatch": {"exact": match.method}})
    path = match.path
    if path is not None and not (path.type is PathMatchType.PATH_PREFIX
                                 and path.value.rstrip("/") == ""):
        headers.append({"name": ":path", "stringMatch": {
            "safeRegex": {"regex": path_regex(path.type, path.value)}}})
    if not headers:
        return None
    return {"headerValueMatch": {"descriptorKey": MATCH_KEY, "descriptorValue": "1",
                                 "expectMatch": True, "headers": headers}}


def _expr(key: str, text: str) -> dict[str, Any]:
    return {"extension": {"name": EXPR_DESCRIPTOR, "typedConfig": {
        "@type": EXPR, "descriptorKey": key, "text": text}}}


def _key_action(rule: GlobalRule) -> dict[str, Any] | None:
    if rule.key is None:
        return None
    entry = KEY_ENTRY[rule.key.type]
    if rule.key.type is KeyType.CALLER:
        return _expr(entry, CALLER_EXPR)
    if rule.key.type is KeyType.PATH:
        return _expr(entry, PATH_EXPR)
    if rule.key.type is KeyType.CLIENT_IP:
        # The downstream address the HCM settled on: the gateway's XFF hops honoured.
        return {"remoteAddress": {}}
    # Without the header there is no descriptor: the rule does not count the request.
    return {"requestHeaders": {"headerName": rule.key.header, "descriptorKey": entry}}


def _descriptor(policy: RateLimitPolicy, index: int, rule: GlobalRule) -> dict[str, Any]:
    actions = [{"genericKey": {"descriptorKey": RULE_KEY,
                               "descriptorValue": rule_id(policy.metadata.namespace,
                                                                 policy.metadata.name, index)}}]
    gate = _gate(rule.match) if rule.match is not None else None
    key = _key_action(rule)
    actions.extend(a for a in (gate, key) if a is not None)
    return {"actions": actions}


def global_filter(policy: RateLimitPolicy) -> dict[str, Any] | None:
    if policy.spec.global_ is None:
        return None
    return {"name": GLOBAL_FILTER, "typedConfig": {
        "@type": RATELIMIT,
        "domain": RATELIMIT_DOMAIN,
        "failureModeDeny": False,
        "timeout": RLS_TIMEOUT,
        "enableXRatelimitHeaders": "DRAFT_VERSION_03",
        "rateLimitService": {"grpcService": {"envoyGrpc": {"clusterName": XDS_CLUSTER}},
                             "transportApiVersion": "V3"},
        "rateLimits": [_descriptor(policy, i, rule)
                       for i, rule in enumerate(policy.spec.global_.rules)],
    }}


def policy_filters(policy: RateLimitPolicy) -> list[dict[str, Any]]:
    """Local first: it is cheap and spares the control plane what it rejects anyway."""
    local = local_filter(policy.spec.local) if policy.spec.local is not None else None
    return [f for f in (local, global_filter(policy)) if f is not None]


# On a caller's outbound listeners (and an egress gateway's), disabled: an
# ExternalService's route with a RateLimitPolicy enables them with its limits
# (`route_limits`), so other routes never run them.
# Names of their own: an egress gateway also runs its Service's filters, whose
# per-route configs are looked up by name too.
RATELIMIT_PER_ROUTE = ("type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3."
                       "RateLimitPerRoute")
ROUTE_LOCAL = "gossamer.external.local_ratelimit"
ROUTE_GLOBAL = "gossamer.external.ratelimit"
ROUTE_LOCAL_FILTER: dict[str, Any] = {
    "name": ROUTE_LOCAL, "disabled": True,
    "typedConfig": {"@type": LOCAL_RATELIMIT, "statPrefix": "gossamer_external_ratelimit"}}
ROUTE_GLOBAL_FILTER: dict[str, Any] = {
    "name": ROUTE_GLOBAL, "disabled": True, "typedConfig": {
        "@type": RATELIMIT, "domain": RATELIMIT_DOMAIN, "failureModeDeny": False,
        "timeout": RLS_TIMEOUT, "enableXRatelimitHeaders": "DRAFT_VERSION_03",
        "rateLimitService": {"grpcService": {"envoyGrpc": {"clusterName": XDS_CLUSTER}},
                             "transportApiVersion": "V3"}}}
ROUTE_LIMIT_FILTERS = (ROUTE_LOCAL_FILTER, ROUTE_GLOBAL_FILTER)


def route_limits(policy: RateLimitPolicy | None) -> dict[str, Any]:
    """A route's `typedPerFilterConfig` turning on `ROUTE_LIMIT_FILTERS` with the
    policy's local bucket (one per Envoy) and global rules; {} without a policy."""
    if policy is None:
        return {}
    config: dict[str, Any] = {}
    if policy.spec.local is not None:
        local = local_filter(policy.spec.local)["typedConfig"]
        config[ROUTE_LOCAL] = {**local, "statPrefix": "gossamer_external_ratelimit"}
    if policy.spec.global_ is not None:
        config[ROUTE_GLOBAL] = {"@type": RATELIMIT_PER_ROUTE, "rateLimits": [
            _descriptor(policy, i, rule) for i, rule in enumerate(policy.spec.global_.rules)]}
    return {"typedPerFilterConfig": config}


def ratelimit_filters(index: MeshIndex,
                      services: frozenset[SvcKey]) -> tuple[dict[str, Any], ...]:
    """The filters of every Service a proxy serves that a policy targets, in key order."""
    out: list[dict[str, Any]] = []
    for key in sorted(services):
        policy = index.rate_limits.get(key)
        if policy is not None:
            out.extend(policy_filters(policy))
    return tuple(out)
