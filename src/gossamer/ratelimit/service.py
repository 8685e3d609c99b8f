"""Envoy's rate-limit service (`envoy.service.ratelimit.v3.RateLimitService`), served
on the control plane's gRPC port next to ADS.

Sidecars ask it once per request that a global rule covers (see
translate/ratelimit.py for the descriptors). It finds the rule in the current
MeshIndex by the descriptor's rule id, so limits take effect without new Envoy
config, and counts in fixed windows aligned to multiples of the rule's `per`
since the epoch: every replica and every sidecar agrees on where a window
starts. Descriptors naming no current rule are allowed. When the counter
backend fails the request is allowed too (fail open) and
`gossamer_ratelimit_backend_errors` counts it.

The endpoint takes no credentials: anyone who can reach the port can spend a
Service's quota and read its limits (see docs/security.md).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import grpc
import grpc.aio
from envoy.service.ratelimit.v3 import rls_pb2
from prometheus_client import CollectorRegistry, Counter

from gossamer.contract.names import KEY_ENTRIES, RATELIMIT_DOMAIN, RULE_KEY, rule_id
from gossamer.index import MeshIndex
from gossamer.model.ratelimitpolicy import GlobalRule
from gossamer.ratelimit.counters import CounterError, Counters, MemoryCounters, now_ms

log = logging.getLogger(__name__)

SERVICE: Final = "envoy.service.ratelimit.v3.RateLimitService"
METHOD: Final = "ShouldRateLimit"
Response = rls_pb2.RateLimitResponse
_UNITS: Final = {1_000: Response.RateLimit.SECOND, 60_000: Response.RateLimit.MINUTE,
                 3_600_000: Response.RateLimit.HOUR, 86_400_000: Response.RateLimit.DAY}
# Key values longer than this (a client-chosen header) are counted by their hash.
MAX_KEY_VALUE = 256


@dataclass(frozen=True)
class Window:
    start_ms: int
    end_ms: int


def window(per_ms: int, now: int) -> Window:
    start = now - now % per_ms
    return Window(start, start + per_ms)


def _rules(index: MeshIndex) -> dict[str, GlobalRule]:
    out: dict[str, GlobalRule] = {}
    for policy in (*index.rate_limits.values(), *index.gateway_rate_limits.values(),
                   *index.external_rate_limits.values()):
        if policy.spec.global_ is not None:
            for i, rule in enumerate(policy.spec.global_.rules):
                out[rule_id(policy.metadata.namespace, policy.metadata.name, i)] = rule
    return out


def _key_value(entries: Mapping[str, str]) -> str:
    for name in KEY_ENTRIES:
        if name in entries:
            value = entries[name]
            if len(value) > MAX_KEY_VALUE:
                return "sha256:" + hashlib.sha256(value.encode()).hexdigest()
            return f"{name}={value}"
    return ""


class RateLimitMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter("gossamer_ratelimit_decisions",
                                 "global rate-limit descriptors decided, by result",
                                 ["result"], registry=registry)
        self.backend_errors = Counter("gossamer_ratelimit_backend_errors",
                                      "rate-limit counts that failed (the request was allowed)",
                                      registry=registry)


class RateLimitService:
    def __init__(self, index: Callable[[], MeshIndex], counters: Counters,
                 registry: CollectorRegistry | None = None,
                 clock: Callable[[], int] = now_ms) -> None:
        self._index = index
        self.counters = counters
        self.metrics = RateLimitMetrics(registry if registry is not None
                                        else CollectorRegistry())
        self._clock = clock
        self._cached: tuple[MeshIndex, dict[str, GlobalRule]] | None = None

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(SERVICE, {
            METHOD: grpc.unary_unary_rpc_method_handler(
                self._should_rate_limit,
                request_deserializer=rls_pb2.RateLimitRequest.FromString,
                response_serializer=Response.SerializeToString),
        })

    def _rules(self) -> dict[str, GlobalRule]:
        index = self._index()
        if self._cached is None or self._cached[0] is not index:
            self._cached = index, _rules(index)
        return self._cached[1]

    async def _should_rate_limit(self, request: rls_pb2.RateLimitRequest,
                                 context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return await self.decide(request)

    async def decide(self, request: rls_pb2.RateLimitRequest) -> Any:
        response = Response(overall_code=Response.OK)
        rules = self._rules() if request.domain == RATELIMIT_DOMAIN else {}
        for descriptor in request.descriptors:
            status = await self._status(rules, descriptor, request.hits_addend or 1)
            response.statuses.append(status)
            if status.code == Response.OVER_LIMIT:
                response.overall_code = Response.OVER_LIMIT
        return response

    async def _status(self, rules: Mapping[str, GlobalRule], descriptor: Any,
                      request_hits: int) -> Any:
        entries = {e.key: e.value for e in descriptor.entries}
        rid = entries.get(RULE_KEY, "")
        rule = rules.get(rid)
        if rule is None:
            self.metrics.decisions.labels("unknown").inc()
            return Response.DescriptorStatus(code=Response.OK)
        hits = descriptor.hits_addend.value if descriptor.HasField("hits_addend") \
            else request_hits
        now = self._clock()
        win = window(rule.per_ms, now)
        key = f"{rid}|{rule.per_ms}|{win.start_ms}|{_key_value(entries)}"
        try:
            count = await self.counters.hit(key, hits, win.end_ms + 1_000)
        except CounterError as exc:
            self.metrics.backend_errors.inc()
            log.warning("rate limit %s allowed without counting: %s", rid, exc)
            return Response.DescriptorStatus(code=Response.OK)
        over = count > rule.requests
        self.metrics.decisions.labels("over_limit" if over else "ok").inc()
        status = Response.DescriptorStatus(
            code=Response.OVER_LIMIT if over else Response.OK,
            current_limit=Response.RateLimit(
                requests_per_unit=rule.requests,
                unit=_UNITS.get(rule.per_ms, Response.RateLimit.UNKNOWN)),
            limit_remaining=max(rule.requests - count, 0))
        status.duration_until_reset.FromMilliseconds(max(win.end_ms - now, 0))
        return status


def open_counters(redis_url: str | None) -> Counters:
    if not redis_url:
        return MemoryCounters()
    # Imported only when configured: the client library is 4 MiB of every
    # control plane's memory otherwise.
    from gossamer.ratelimit.redis_counters import RedisCounters
    return RedisCounters(redis_url)
