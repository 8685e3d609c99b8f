"""FaultPolicy -> Envoy's HTTP fault filter, enforced by callers like Istio's
VirtualService fault.

Every outbound HTTP connection manager carries the fault filter with an empty
configuration (it injects nothing), just before the router. A policy only adds the
filter's per-route configuration (`typedPerFilterConfig`) to the routes of the
target Service's ports, so applying, changing or removing one is a route (RDS)
change: no listener is replaced and no connection drained.

Because the filter runs before the router, an injected abort is answered by the
caller's sidecar itself: it is never retried, and never reaches the Service.
"""

from __future__ import annotations

from typing import Any

from envoy.extensions.filters.http.fault.v3 import fault_pb2  # noqa: F401  (registers @type)

from gossamer.model.duration import parse_duration_ms
from gossamer.model.faultpolicy import FaultPolicy
from gossamer.model.httproute import RouteMatch
from gossamer.translate.protos import seconds
from gossamer.translate.routes import envoy_match

FAULT_FILTER_NAME = "envoy.filters.http.fault"
HTTP_FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
# The filter every outbound HTTP connection manager carries, disabled: Envoy
# leaves it out of the filter chain of every request whose route has no fault
# configuration (`typedPerFilterConfig`, which enables it for that route). So
# a FaultPolicy changes routes only, and requests without faults do not pay
# for the filter (a no-op filter still costs each request; bench/dataplane/RESULTS.md).
FAULT_FILTER: dict[str, Any] = {"name": FAULT_FILTER_NAME,
                                "typedConfig": {"@type": HTTP_FAULT}, "disabled": True}


def fractional_percent(percent: float) -> dict[str, Any]:
    """Percent as parts per million, Envoy's finest FractionalPercent."""
    return {"numerator": round(percent * 10_000), "denominator": "MILLION"}


def http_fault(policy: FaultPolicy) -> dict[str, Any]:
    """The policy as an HTTPFault (the per-route form of the filter's config)."""
    spec = policy.spec
    out: dict[str, Any] = {"@type": HTTP_FAULT}
    if spec.delay is not None:
        out["delay"] = {"fixedDelay": seconds(parse_duration_ms(spec.delay.fixed_delay)),
                        "percentage": fractional_percent(spec.delay.percent)}
    if spec.abort is not None:
        abort: dict[str, Any] = {"percentage": fractional_percent(spec.abort.percent)}
        if spec.abort.grpc_status is not None:
            abort["grpcStatus"] = spec.abort.grpc_status
        else:
            abort["httpStatus"] = spec.abort.http_status
        out["abort"] = abort
    if spec.match is not None:
        # The same header matchers an HTTPRoute match with these headers gets.
        out["headers"] = envoy_match(RouteMatch(headers=spec.match.headers))["headers"]
    return out


def with_fault(routes: list[dict[str, Any]], policy: FaultPolicy | None) -> list[dict[str, Any]]:
    """The routes of a Service port, those that forward carrying the policy's fault.
    Redirects and direct responses send nothing to the Service and are left alone."""
    if policy is None:
        return routes
    fault = http_fault(policy)
    return [{**r, "typedPerFilterConfig": {**r.get("typedPerFilterConfig", {}),
                                           FAULT_FILTER_NAME: fault}}
            if "route" in r else r for r in routes]
