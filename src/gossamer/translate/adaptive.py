"""ResiliencePolicy `adaptiveConcurrency` -> Envoy's adaptive concurrency filter on the
target Service's own inbound sidecars.

Unlike the rest of a ResiliencePolicy (enforced by callers), load shedding needs one
place that sees all the requests an instance serves and its app's latency: the
instance's inbound connection manager. Each sidecar runs its own controller.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from envoy.extensions.filters.http.adaptive_concurrency.v3 import (  # noqa: F401  (@type)
    adaptive_concurrency_pb2,
)

from gossamer.index import MeshIndex, SvcKey
from gossamer.model.adaptiveconcurrency import DEFAULT_MIN_RTT_INTERVAL, AdaptiveConcurrency
from gossamer.model.duration import parse_duration_ms
from gossamer.translate.protos import seconds

ADAPTIVE_CONCURRENCY = ("type.googleapis.com/envoy.extensions.filters.http."
                        "adaptive_concurrency.v3.AdaptiveConcurrency")


def _duration(value: str) -> str:
    return seconds(parse_duration_ms(value))


def _min_rtt_params(config: AdaptiveConcurrency) -> dict[str, Any]:
    """A fixed minRTT is Envoy's `fixed_value` without an `interval`; a measured one
    needs the interval."""
    calc = config.min_rtt_calc_params
    out: dict[str, Any] = {}
    if config.min_rtt is not None:
        out["fixedValue"] = _duration(config.min_rtt)
    else:
        interval = calc.interval if calc and calc.interval else DEFAULT_MIN_RTT_INTERVAL
        out["interval"] = _duration(interval)
    if calc is not None:
        if calc.request_count is not None:
            out["requestCount"] = calc.request_count
        if calc.jitter is not None:
            out["jitter"] = {"value": calc.jitter}
        if calc.min_concurrency is not None:
            out["minConcurrency"] = calc.min_concurrency
        if calc.buffer is not None:
            out["buffer"] = {"value": calc.buffer}
    return out


def adaptive_concurrency_filter(config: AdaptiveConcurrency) -> dict[str, Any]:
    limits = config.concurrency_limit_params
    limit_params: dict[str, Any] = {
        "concurrencyUpdateInterval": _duration(limits.concurrency_update_interval)}
    if limits.max_concurrency_limit is not None:
        limit_params["maxConcurrencyLimit"] = limits.max_concurrency_limit
    gradient: dict[str, Any] = {"concurrencyLimitParams": limit_params,
                                "minRttCalcParams": _min_rtt_params(config)}
    if config.sample_aggregate_percentile is not None:
        gradient["sampleAggregatePercentile"] = {"value": config.sample_aggregate_percentile}
    return {"name": "envoy.filters.http.adaptive_concurrency",
            "typedConfig": {"@type": ADAPTIVE_CONCURRENCY,
                            "gradientControllerConfig": gradient}}


def inbound_traffic_filters(index: MeshIndex,
                            services: Iterable[SvcKey]) -> tuple[dict[str, Any], ...]:
    """HTTP filters the proxy's own Services' ResiliencePolicies put on its inbound side.
    A proxy serving several Services with adaptive concurrency takes the first
    (by namespace, name): one controller per sidecar."""
    for key in sorted(services):
        policy = index.resilience.get(key)
        if policy is not None and policy.spec.adaptive_concurrency is not None:
            return (adaptive_concurrency_filter(policy.spec.adaptive_concurrency),)
    return ()
