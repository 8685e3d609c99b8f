"""ResiliencePolicy -> Envoy: cluster settings (connect timeout, circuit breakers and
retry budget, outlier detection, health checks, load balancer) and route settings
(timeouts, retry policy, hash policy). Pure: dicts in, dicts out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from gossamer.contract.protocol import Protocol
from gossamer.model.resiliencepolicy import (
    HealthCheck,
    Hedging,
    LbPolicy,
    OutlierDetection,
    ResiliencePolicy,
    Retries,
    ms,
)
from gossamer.translate.protos import seconds

_LB = {LbPolicy.ROUND_ROBIN: "ROUND_ROBIN", LbPolicy.LEAST_REQUEST: "LEAST_REQUEST",
       LbPolicy.RANDOM: "RANDOM", LbPolicy.RING_HASH: "RING_HASH", LbPolicy.MAGLEV: "MAGLEV"}
RETRY_PRIORITY: dict[str, Any] = {
    "name": "envoy.retry_priorities.previous_priorities",
    "typedConfig": {"@type": "type.googleapis.com/envoy.extensions.retry.priority."
                             "previous_priorities.v3.PreviousPrioritiesConfig",
                    "updateFrequency": 2},
}
# The policy fields that are route settings (the rest are the clusters').
ROUTE_FIELDS = ("timeouts", "retries", "hedging")
# Envoy's defaults when a policy sets retries but no budget.
DEFAULT_BUDGET_PERCENT = 20.0
DEFAULT_MIN_RETRY_CONCURRENCY = 3


def _dur(value: str) -> str:
    return seconds(ms(value) or 0)


def _thresholds(policy: ResiliencePolicy) -> dict[str, Any] | None:
    spec = policy.spec
    out: dict[str, Any] = {}
    cb = spec.circuit_breaker
    if cb is not None:
        for key, value in (("maxConnections", cb.max_connections),
                           ("maxPendingRequests", cb.max_pending_requests),
                           ("maxRequests", cb.max_requests), ("maxRetries", cb.max_retries)):
            if value is not None:
                out[key] = value
    # A budget bounds retries to a share of active requests, so retries can never
    # become a storm; Envoy then ignores max_retries, which the model forbids with it.
    if (spec.retries is not None or spec.hedging is not None) and "maxRetries" not in out:
        budget = spec.retries.budget if spec.retries is not None else None
        out["retryBudget"] = {
            "budgetPercent": {"value": budget.percent if budget else DEFAULT_BUDGET_PERCENT},
            "minRetryConcurrency": (budget.min_concurrency if budget
                                    else DEFAULT_MIN_RETRY_CONCURRENCY),
        }
    if not out:
        return None
    return {"priority": "DEFAULT", **out}


def _outlier(od: OutlierDetection) -> dict[str, Any]:
    """Only the detectors the policy names are enforced."""
    out: dict[str, Any] = {}
    if od.consecutive_5xx is not None:
        out["consecutive5xx"] = od.consecutive_5xx
        out["enforcingConsecutive5xx"] = 100
    else:
        out["enforcingConsecutive5xx"] = 0
    if od.consecutive_gateway_errors is not None:
        out["consecutiveGatewayFailure"] = od.consecutive_gateway_errors
        out["enforcingConsecutiveGatewayFailure"] = 100
    sr = od.success_rate
    if sr is not None:
        out["enforcingSuccessRate"] = 100
        if sr.minimum_hosts is not None:
            out["successRateMinimumHosts"] = sr.minimum_hosts
        if sr.request_volume is not None:
            out["successRateRequestVolume"] = sr.request_volume
        if sr.stdev_factor is not None:
            out["successRateStdevFactor"] = round(sr.stdev_factor * 1000)
    else:
        out["enforcingSuccessRate"] = 0
    if od.interval is not None:
        out["interval"] = _dur(od.interval)
    if od.base_ejection_time is not None:
        out["baseEjectionTime"] = _dur(od.base_ejection_time)
    if od.max_ejection_percent is not None:
        out["maxEjectionPercent"] = od.max_ejection_percent
    return out


def _health_check(hc: HealthCheck, protocol: Protocol, host: str) -> dict[str, Any]:
    """`host`: the Service's name. Envoy's default Host is the cluster name, whose `|`
    the callee's sidecar rejects as a bad authority. Hosts without traffic (new,
    or failed) are checked every `interval` too, not Envoy's default 60 s, so an
    instance that recovers gets traffic back within the healthy threshold."""
    out: dict[str, Any] = {
        "timeout": _dur(hc.timeout), "interval": _dur(hc.interval),
        "noTrafficInterval": _dur(hc.interval),
        "unhealthyThreshold": hc.unhealthy_threshold,
        "healthyThreshold": hc.healthy_threshold,
    }
    if hc.http is not None:
        http: dict[str, Any] = {"path": hc.http.path, "host": host}
        if hc.http.expected_statuses:
            # Envoy ranges are [start, end).
            http["expectedStatuses"] = [{"start": str(c), "end": str(c + 1)}
                                        for c in sorted(set(hc.http.expected_statuses))]
        if protocol.mesh_h2:  # the check goes to the callee's sidecar, which speaks h2
            http["codecClientType"] = "HTTP2"
        out["httpHealthCheck"] = http
    else:
        out["tcpHealthCheck"] = {}
    return out


def cluster_settings(policy: ResiliencePolicy | None, protocol: Protocol) -> dict[str, Any]:
    """Fields to set on each outbound cluster of the policy's Service."""
    if policy is None:
        return {}
    spec = policy.spec
    out: dict[str, Any] = {}
    if spec.timeouts is not None and spec.timeouts.connect is not None:
        out["connectTimeout"] = _dur(spec.timeouts.connect)
    if (thresholds := _thresholds(policy)) is not None:
        out["circuitBreakers"] = {"thresholds": [thresholds]}
    if spec.outlier_detection is not None:
        out["outlierDetection"] = _outlier(spec.outlier_detection)
    if spec.health_check is not None:
        host = f"{spec.target_ref.name}.{policy.metadata.namespace}"
        out["healthChecks"] = [_health_check(spec.health_check, protocol, host)]
    lb = spec.load_balancer
    if lb is not None:
        out["lbPolicy"] = _LB[lb.policy]
        if lb.policy is LbPolicy.RING_HASH:
            out["ringHashLbConfig"] = {}
        elif lb.policy is LbPolicy.MAGLEV:
            out["maglevLbConfig"] = {}
        if lb.slow_start is not None:
            slow = {"slowStartConfig": {"slowStartWindow": _dur(lb.slow_start.window)}}
            key = ("roundRobinLbConfig" if lb.policy is LbPolicy.ROUND_ROBIN
                   else "leastRequestLbConfig")
            out[key] = slow
    return out


def hash_policy(policy: ResiliencePolicy | None) -> list[dict[str, Any]] | None:
    """The route hash policy that feeds RingHash / Maglev."""
    lb = policy.spec.load_balancer if policy else None
    if lb is None or lb.hash_on is None:
        return None
    on = lb.hash_on
    if on.header is not None:
        return [{"header": {"headerName": on.header}}]
    if on.cookie is not None:
        cookie: dict[str, Any] = {"name": on.cookie.name}
        if on.cookie.ttl is not None:
            cookie["ttl"] = _dur(on.cookie.ttl)
        return [{"cookie": cookie}]
    return [{"connectionProperties": {"sourceIp": True}}]


def tcp_settings(policy: ResiliencePolicy | None) -> dict[str, Any]:
    """TcpProxy fields for a TCP port of the policy's Service: the idle timeout, and
    the caller's address as the hash key of RingHash / Maglev."""
    if policy is None:
        return {}
    out: dict[str, Any] = {}
    t = policy.spec.timeouts
    if t is not None and t.idle is not None:
        out["idleTimeout"] = _dur(t.idle)
    lb = policy.spec.load_balancer
    if lb is not None and lb.hash_on is not None and lb.hash_on.source_ip:
        out["hashPolicy"] = [{"sourceIp": {}}]
    return out


def retry_policy(default: dict[str, Any], retries: Retries) -> dict[str, Any]:
    """The default retry policy with the policy's retries merged in: the user's
    conditions are added to the always-safe ones (the request never reached an app),
    and the previous-hosts predicate keeps retries on other instances."""
    out = dict(default)
    conditions = list(retries.retry_on)
    for cond in str(default["retryOn"]).split(","):
        if cond not in conditions:
            conditions.append(cond)
    out["retryOn"] = ",".join(conditions)
    out["numRetries"] = retries.attempts
    if retries.retriable_status_codes:
        out["retriableStatusCodes"] = sorted(set(retries.retriable_status_codes))
    if retries.backoff is not None:
        backoff = {"baseInterval": _dur(retries.backoff.base_interval)}
        if retries.backoff.max_interval is not None:
            backoff["maxInterval"] = _dur(retries.backoff.max_interval)
        out["retryBackOff"] = backoff
    return out


def route_settings(action: dict[str, Any], policy: ResiliencePolicy | None, default_retry:
                   dict[str, Any], *, rule_request: bool = False,
                   rule_per_try: bool = False) -> None:
    """Apply the policy's route-level settings to a route action, in place. A
    rule's own HTTPRoute timeouts (`rule_request`, `rule_per_try`) win."""
    if policy is None:
        return
    spec = policy.spec
    if spec.retries is not None:
        per_try = action.get("retryPolicy", {}).get("perTryTimeout")
        action["retryPolicy"] = retry_policy(default_retry, spec.retries)
        if per_try is not None:
            action["retryPolicy"]["perTryTimeout"] = per_try
    t = spec.timeouts
    if t is not None:
        if t.request is not None and not rule_request:
            action["timeout"] = _dur(t.request)
        if t.per_try is not None and not rule_per_try:
            action["retryPolicy"] = dict(action["retryPolicy"])
            action["retryPolicy"]["perTryTimeout"] = _dur(t.per_try)
        if t.idle is not None:
            action["idleTimeout"] = _dur(t.idle)
    if spec.hedging is not None:
        _hedge(action, spec.hedging, rule_per_try)
    if spec.load_balancer is not None and spec.load_balancer.locality is not None:
        # A retry goes to the next priority (locality) once one has failed it, rather
        # than back into a zone that is failing but not yet ejected.
        action["retryPolicy"] = {**action["retryPolicy"], "retryPriority": RETRY_PRIORITY}
    if (hashing := hash_policy(policy)) is not None:
        action["hashPolicy"] = hashing


def _hedge(action: dict[str, Any], hedging: Hedging, rule_per_try: bool) -> None:
    """A per-try timeout that starts another attempt without cancelling the first.
    Envoy always hedges on it while retries remain (whatever `retryOn` says), and
    the retry budget bounds hedges like retries. A rule's own backendRequest
    timeout, when set, stays the hedge delay."""
    retry = dict(action["retryPolicy"])
    if not rule_per_try:
        retry["perTryTimeout"] = _dur(hedging.delay)
    retry["numRetries"] = max(int(retry.get("numRetries", 0)), hedging.max_attempts - 1)
    action["retryPolicy"] = retry
    action["hedgePolicy"] = {"hedgeOnPerTryTimeout": True}


K = TypeVar("K")


def rule_policies(policies: Mapping[K, ResiliencePolicy], route_ns: str, route: str,
                  rule: str | None) -> Mapping[K, ResiliencePolicy]:
    """The policies in effect for one HTTPRoute rule: a policy with a `routes` section
    for it (same namespace) is replaced by its route-level variant."""
    out: dict[K, ResiliencePolicy] | None = None
    for key, policy in policies.items():
        if not policy.spec.routes or policy.metadata.namespace != route_ns:
            continue
        section = policy.spec.section_for(route, rule)
        if section is None:
            continue
        if out is None:
            out = dict(policies)
        out[key] = policy.model_copy(update={"spec": policy.spec.for_route(section)})
    return policies if out is None else out
