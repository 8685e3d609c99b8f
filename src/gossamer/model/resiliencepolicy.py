"""ResiliencePolicy: how callers treat one Service: timeouts, retries with a budget,
circuit breaking, outlier detection, active health checks and load balancing.

It attaches to exactly one Service (`spec.targetRef` is required) and applies to
every cluster of that Service (all its ports) and to the routes that send traffic
to it. Only one policy may target a Service: the first by (namespace, name) wins,
the others are reported `Accepted=False, reason Conflicted`.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from gossamer.contract.checks import DNS_LABEL, LABEL_KEY
from gossamer.model.adaptiveconcurrency import AdaptiveConcurrency
from gossamer.model.duration import parse_duration_ms
from gossamer.model.meta import HEADER_NAME, MESH_GROUP, Resource, Strict
from gossamer.model.policy import TargetedSpec, TargetRef

UINT32_MAX = 4_294_967_295
# Envoy's router `retry_on` conditions (HTTP and gRPC).
RETRY_ON = ("5xx", "gateway-error", "reset", "reset-before-request", "connect-failure",
            "envoy-ratelimited", "retriable-4xx", "refused-stream", "retriable-status-codes",
            "retriable-headers", "http3-post-connect-failure", "cancelled",
            "deadline-exceeded", "internal", "resource-exhausted", "unavailable")
_COOKIE_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}\Z")
# Printable ASCII only; no fragment, an optional query.
_HC_PATH = re.compile(r"^/[\x21\x22\x24-\x3e\x40-\x7e]*(\?[\x21\x22\x24-\x7e]*)?\Z")


def check_duration(value: str) -> str:
    parse_duration_ms(value)
    return value


def check_positive_duration(value: str) -> str:
    if parse_duration_ms(value) == 0:
        raise ValueError(f"{value!r}: must be longer than 0")
    return value


def check_retry_on(value: str) -> str:
    if value not in RETRY_ON:
        raise ValueError(f"unknown retryOn value {value!r}; use one of: {', '.join(RETRY_ON)}")
    return value


def ms(value: str | None) -> int | None:
    return None if value is None else parse_duration_ms(value)


# "0s" means no timeout where a timeout may be disabled.
Duration = Annotated[str, AfterValidator(check_duration)]
# Intervals and similar: 0 makes no sense and Envoy rejects it.
PositiveDuration = Annotated[str, AfterValidator(check_positive_duration)]
RetryOn = Annotated[str, AfterValidator(check_retry_on)]
Count = Annotated[int, Field(ge=0, le=UINT32_MAX, strict=True)]
PositiveCount = Annotated[int, Field(ge=1, le=UINT32_MAX, strict=True)]
StatusCode = Annotated[int, Field(ge=100, le=599, strict=True)]
Percent = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False, strict=True)]


class Timeouts(Strict):
    # The whole request, retries included; "0s" disables it.
    request: Duration | None = None
    # One attempt (Envoy's per_try_timeout).
    per_try: PositiveDuration | None = Field(default=None, alias="perTry")
    # The stream with no activity (route idle_timeout); "0s" disables it.
    idle: Duration | None = None
    # Establishing a TCP (and TLS) connection to an instance.
    connect: PositiveDuration | None = None

    @model_validator(mode="after")
    def _order(self) -> Timeouts:
        request, per_try = ms(self.request), ms(self.per_try)
        if request and per_try and per_try > request:
            raise ValueError("perTry: must not be longer than request")
        return self


class Backoff(Strict):
    base_interval: PositiveDuration = Field(alias="baseInterval")
    max_interval: PositiveDuration | None = Field(default=None, alias="maxInterval")

    @model_validator(mode="after")
    def _order(self) -> Backoff:
        top = ms(self.max_interval)
        if top is not None and top < parse_duration_ms(self.base_interval):
            raise ValueError("maxInterval: must not be shorter than baseInterval")
        return self


class RetryBudget(Strict):
    # Retries may be at most this share of the requests active to the Service.
    percent: Percent = 20.0
    # ...but this many concurrent retries are always allowed.
    min_concurrency: Count = Field(default=3, alias="minConcurrency")


class Hedging(Strict):
    """Request hedging: when an attempt has no answer after `delay`, send another to a
    different instance without cancelling the first; the first response wins. It
    trims tail latency caused by one slow instance, at the cost of extra requests
    (bounded by `maxAttempts` and by the retry budget, which hedges count against).
    """

    delay: PositiveDuration
    max_attempts: int = Field(default=2, ge=2, le=5, strict=True, alias="maxAttempts")


class Retries(Strict):
    attempts: int = Field(default=2, ge=0, le=10, strict=True)
    retry_on: list[RetryOn] = Field(default_factory=list, alias="retryOn", max_length=16)
    retriable_status_codes: list[StatusCode] = Field(
        default_factory=list, alias="retriableStatusCodes", max_length=32)
    backoff: Backoff | None = None
    budget: RetryBudget | None = None

    @model_validator(mode="after")
    def _codes(self) -> Retries:
        if len(set(self.retry_on)) != len(self.retry_on):
            raise ValueError("retryOn: lists a value twice")
        wants_codes = "retriable-status-codes" in self.retry_on
        if self.retriable_status_codes and not wants_codes:
            raise ValueError("retriableStatusCodes: only used with retryOn "
                             "'retriable-status-codes'; add it to retryOn")
        if wants_codes and not self.retriable_status_codes:
            raise ValueError("retriableStatusCodes: retryOn 'retriable-status-codes' needs "
                             "at least one status code")
        return self


class CircuitBreaker(Strict):
    max_connections: Count | None = Field(default=None, alias="maxConnections")
    max_pending_requests: Count | None = Field(default=None, alias="maxPendingRequests")
    max_requests: Count | None = Field(default=None, alias="maxRequests")
    max_retries: Count | None = Field(default=None, alias="maxRetries")


class SuccessRate(Strict):
    minimum_hosts: Count | None = Field(default=None, alias="minimumHosts")
    request_volume: Count | None = Field(default=None, alias="requestVolume")
    # Eject hosts whose success rate is below mean - stdevFactor * stdev.
    stdev_factor: float | None = Field(default=None, alias="stdevFactor", gt=0, le=100,
                                       allow_inf_nan=False, strict=True)


class OutlierDetection(Strict):
    consecutive_5xx: PositiveCount | None = Field(default=None, alias="consecutive5xx")
    consecutive_gateway_errors: PositiveCount | None = Field(
        default=None, alias="consecutiveGatewayErrors")
    interval: PositiveDuration | None = None
    base_ejection_time: PositiveDuration | None = Field(default=None, alias="baseEjectionTime")
    max_ejection_percent: int | None = Field(default=None, alias="maxEjectionPercent", ge=0,
                                             le=100, strict=True)
    success_rate: SuccessRate | None = Field(default=None, alias="successRate")

    @model_validator(mode="after")
    def _some_detector(self) -> OutlierDetection:
        if (self.consecutive_5xx is None and self.consecutive_gateway_errors is None
                and self.success_rate is None):
            raise ValueError("outlier detection needs at least one of consecutive5xx, "
                             "consecutiveGatewayErrors or successRate")
        return self


def check_hc_path(value: str) -> str:
    if len(value) > 1024 or not _HC_PATH.match(value):
        raise ValueError(f"{value!r} is not a request path: start with '/', printable "
                         "ASCII without spaces or '#'")
    return value


class HttpHealthCheck(Strict):
    path: Annotated[str, AfterValidator(check_hc_path)]
    # Statuses that count as healthy; default 200 only.
    expected_statuses: list[StatusCode] = Field(
        default_factory=list, alias="expectedStatuses", max_length=32)


class TcpHealthCheck(Strict):
    """Healthy when a connection can be opened."""


class HealthCheck(Strict):
    http: HttpHealthCheck | None = None
    tcp: TcpHealthCheck | None = None
    interval: PositiveDuration = "10s"
    timeout: PositiveDuration = "1s"
    unhealthy_threshold: PositiveCount = Field(default=3, alias="unhealthyThreshold")
    healthy_threshold: PositiveCount = Field(default=2, alias="healthyThreshold")

    @model_validator(mode="after")
    def _one_kind(self) -> HealthCheck:
        if (self.http is None) == (self.tcp is None):
            raise ValueError("a health check needs exactly one of http or tcp")
        return self


class LbPolicy(str, Enum):
    ROUND_ROBIN = "RoundRobin"
    LEAST_REQUEST = "LeastRequest"
    RANDOM = "Random"
    RING_HASH = "RingHash"
    MAGLEV = "Maglev"

    @property
    def hashes(self) -> bool:
        return self in (LbPolicy.RING_HASH, LbPolicy.MAGLEV)


def check_header(value: str) -> str:
    if not HEADER_NAME.match(value) or len(value) > 256:
        raise ValueError(f"{value!r} is not a valid HTTP header name")
    return value


def check_cookie(value: str) -> str:
    if not _COOKIE_NAME.match(value):
        raise ValueError(f"{value!r} is not a cookie name (an HTTP token)")
    return value


class HashCookie(Strict):
    name: Annotated[str, AfterValidator(check_cookie)]
    # With a ttl Envoy sets the cookie when the request has none.
    ttl: Duration | None = None


class HashOn(Strict):
    header: Annotated[str, AfterValidator(check_header)] | None = None
    cookie: HashCookie | None = None
    source_ip: Literal[True] | None = Field(default=None, alias="sourceIP")

    @model_validator(mode="after")
    def _one(self) -> HashOn:
        if sum(x is not None for x in (self.header, self.cookie, self.source_ip)) != 1:
            raise ValueError("hashOn needs exactly one of header, cookie or sourceIP")
        return self


class SlowStart(Strict):
    window: PositiveDuration


REGION_LABEL = "topology.kubernetes.io/region"
ZONE_LABEL = "topology.kubernetes.io/zone"


def check_label_keys(keys: list[str]) -> list[str]:
    for key in keys:
        if len(key) > 317 or not LABEL_KEY.match(key):
            raise ValueError(f"{key!r} is not a valid Kubernetes label key")
    if len(set(keys)) != len(keys):
        raise ValueError("lists a label twice")
    return keys


class Locality(Strict):
    """Prefer instances that share the caller's locality; fail over by priority.

    Instances matching the caller on every label of `failoverPriority` come first
    (priority 0), then those matching on all but the last label, and so on; the
    rest last. Envoy moves traffic to the next priority as the healthy share of
    one falls (its overprovisioning factor of 1.4: below ~71 % healthy).
    """

    failover_priority: Annotated[list[str], AfterValidator(check_label_keys)] = Field(
        default_factory=lambda: [REGION_LABEL, ZONE_LABEL], alias="failoverPriority",
        min_length=1, max_length=8)


class LoadBalancer(Strict):
    policy: LbPolicy = LbPolicy.ROUND_ROBIN
    hash_on: HashOn | None = Field(default=None, alias="hashOn")
    slow_start: SlowStart | None = Field(default=None, alias="slowStart")
    locality: Locality | None = None

    @model_validator(mode="after")
    def _consistent(self) -> LoadBalancer:
        if self.policy.hashes and self.hash_on is None:
            raise ValueError(f"hashOn: required with policy {self.policy.value}")
        if not self.policy.hashes and self.hash_on is not None:
            raise ValueError(f"hashOn: only used with policy RingHash or Maglev, not "
                             f"{self.policy.value}")
        if self.slow_start is not None and self.policy not in (LbPolicy.ROUND_ROBIN,
                                                               LbPolicy.LEAST_REQUEST):
            raise ValueError(f"slowStart: only RoundRobin and LeastRequest support it, not "
                             f"{self.policy.value}")
        return self


def check_hedging(timeouts: Timeouts | None, hedging: Hedging | None) -> None:
    if hedging is None:
        return
    if timeouts is not None and timeouts.per_try is not None:
        raise ValueError("hedging.delay: is the per-try timeout when hedging; remove "
                         "timeouts.perTry")
    request = ms(timeouts.request) if timeouts is not None else None
    if request and parse_duration_ms(hedging.delay) >= request:
        raise ValueError("hedging.delay: must be shorter than timeouts.request, or no "
                         "hedge is ever sent")


class RouteSection(Strict):
    """Route-level settings for the rules of one HTTPRoute that send traffic to the
    target Service. Each field given replaces the policy's own field as a whole."""

    # An HTTPRoute in the policy's namespace.
    http_route: Annotated[str, Field(min_length=1, max_length=253)] = Field(alias="httpRoute")
    # The rule's `name`; omitted: every rule of the route.
    rule: Annotated[str, Field(min_length=1, max_length=253)] | None = None
    timeouts: Timeouts | None = None
    retries: Retries | None = None
    hedging: Hedging | None = None

    @model_validator(mode="after")
    def _something(self) -> RouteSection:
        if self.timeouts is None and self.retries is None and self.hedging is None:
            raise ValueError("a route section sets at least one of timeouts, retries or "
                             "hedging")
        if self.timeouts is not None and self.timeouts.connect is not None:
            raise ValueError("timeouts.connect: is a connection setting of the Service, "
                             "not of a route; set it in spec.timeouts")
        return self


EXTERNAL_KIND = "ExternalService"


class ResilienceTargetRef(TargetRef):
    """A Service, or an ExternalService: its callers' clusters and routes
    to the external destination take the policy."""

    @model_validator(mode="after")
    def _is_service(self) -> ResilienceTargetRef:
        if (self.kind == EXTERNAL_KIND and self.group in ("", MESH_GROUP)) or \
                (self.kind == "Service" and self.group in ("", "core")):
            if not DNS_LABEL.match(self.name):
                raise ValueError(f"name: must be a {self.kind} name (a DNS label)")
            return self
        raise ValueError(
            "kind: a ResiliencePolicy attaches to a Service (group \"\", kind Service) or "
            f"an ExternalService; got group {self.group!r} kind {self.kind!r}")

    @property
    def external(self) -> bool:
        return self.kind == EXTERNAL_KIND


class ResiliencePolicySpec(TargetedSpec):
    target_ref: ResilienceTargetRef = Field(alias="targetRef")
    timeouts: Timeouts | None = None
    retries: Retries | None = None
    circuit_breaker: CircuitBreaker | None = Field(default=None, alias="circuitBreaker")
    outlier_detection: OutlierDetection | None = Field(default=None, alias="outlierDetection")
    health_check: HealthCheck | None = Field(default=None, alias="healthCheck")
    load_balancer: LoadBalancer | None = Field(default=None, alias="loadBalancer")
    hedging: Hedging | None = None
    adaptive_concurrency: AdaptiveConcurrency | None = Field(default=None,
                                                             alias="adaptiveConcurrency")
    routes: list[RouteSection] = Field(default_factory=list, max_length=64)

    @model_validator(mode="after")
    def _hedging(self) -> ResiliencePolicySpec:
        check_hedging(self.timeouts, self.hedging)
        for i, section in enumerate(self.routes):
            effective = self.for_route(section)
            try:
                check_hedging(effective.timeouts, effective.hedging)
            except ValueError as exc:
                raise ValueError(f"routes[{i}].{exc}") from exc
        seen = set()
        for i, section in enumerate(self.routes):
            key = (section.http_route, section.rule)
            if key in seen:
                raise ValueError(f"routes[{i}]: a second section for HTTPRoute "
                                 f"{section.http_route!r}" + (
                                     f" rule {section.rule!r}" if section.rule else ""))
            seen.add(key)
        return self

    def for_route(self, section: RouteSection) -> ResiliencePolicySpec:
        """This spec with the section's fields in place of its own (no validation)."""
        update = {name: getattr(section, name) for name in ("timeouts", "retries", "hedging")
                  if getattr(section, name) is not None}
        return self.model_copy(update={**update, "routes": []})

    def section_for(self, route: str, rule: str | None) -> RouteSection | None:
        """The most specific section for a rule: route and rule name, else route only."""
        fallback = None
        for section in self.routes:
            if section.http_route != route:
                continue
            if section.rule is not None and section.rule == rule:
                return section
            if section.rule is None:
                fallback = section
        return fallback

    @model_validator(mode="after")
    def _external_target(self) -> ResiliencePolicySpec:
        if not self.target_ref.external:
            return self
        for name, value in (("adaptiveConcurrency", self.adaptive_concurrency),
                            ("routes", self.routes), ("healthCheck", self.health_check),
                            ("hedging", self.hedging)):
            if value:
                raise ValueError(f"{name}: does not apply to an ExternalService (no mesh "
                                 "sidecar serves it, and it has no HTTPRoutes); use "
                                 "timeouts, retries, circuitBreaker, outlierDetection or "
                                 "loadBalancer")
        if self.load_balancer is not None and self.load_balancer.locality is not None:
            raise ValueError("loadBalancer.locality: an ExternalService's endpoints have no "
                             "locality labels")
        return self

    @model_validator(mode="after")
    def _budget_or_max_retries(self) -> ResiliencePolicySpec:
        cb = self.circuit_breaker
        if cb is not None and cb.max_retries is not None and self.retries is not None \
                and self.retries.budget is not None:
            raise ValueError("circuitBreaker.maxRetries: Envoy uses either a fixed maximum of "
                             "concurrent retries or a retry budget (retries.budget), not both; "
                             "remove one")
        return self


class ResiliencePolicy(Resource):
    KIND = "ResiliencePolicy"
    kind: Literal["ResiliencePolicy"] = "ResiliencePolicy"
    spec: ResiliencePolicySpec
