"""Every traffic and policy kind: an invalid document is refused at apply (HTTP 422)
with the field's path and the reason, and nothing is stored."""

from __future__ import annotations

from typing import Any

import pytest

from tests.envoy.harness import API, MiniMesh

pytestmark = pytest.mark.slow
GW = "gateway.networking.k8s.io/v1"
SVC = {"kind": "Service", "name": "echo"}

BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"apiVersion": GW, "kind": "HTTPRoute", "metadata": {"name": "bad"},
      "spec": {"parentRefs": [SVC], "rules": [{"filters": [{"type": "RequestMirror",
               "requestMirror": {"backendRef": {"name": "shadow"}, "percent": 101}}],
               "backendRefs": [{"name": "echo"}]}]}},
     "spec.rules[0].filters[0].requestMirror.percent", "less than or equal to 100"),
    ({"apiVersion": GW, "kind": "GRPCRoute", "metadata": {"name": "bad"},
      "spec": {"parentRefs": [SVC], "rules": [{"matches": [{"method": {
          "type": "Exact", "service": "bad service!"}}], "backendRefs": [{"name": "echo"}]}]}},
     "spec.rules[0].matches[0].method.service", "is not a valid gRPC service name"),
    ({"apiVersion": "gateway.networking.k8s.io/v1alpha2", "kind": "TCPRoute",
      "metadata": {"name": "bad"},
      "spec": {"parentRefs": [{**SVC, "port": 5432}], "rules": [
          {"backendRefs": [{"name": "db"}]}]}},
     "spec.rules[0].backendRefs[0].port", ""),
    ({"apiVersion": API, "kind": "ResiliencePolicy", "metadata": {"name": "bad"},
      "spec": {"targetRef": SVC, "retries": {"retryOn": ["5xy"]}}},
     "spec.retries.retryOn[0]", "unknown retryOn value"),
    ({"apiVersion": API, "kind": "ResiliencePolicy", "metadata": {"name": "bad"},
      "spec": {"targetRef": SVC, "hedging": {"delay": "0s"}}},
     "spec.hedging.delay", "longer than 0"),
    ({"apiVersion": API, "kind": "ResiliencePolicy", "metadata": {"name": "bad"},
      "spec": {"targetRef": SVC, "loadBalancer": {"locality": {"failoverPriority": ["a b"]}}}},
     "spec.loadBalancer.locality.failoverPriority", "not a valid Kubernetes label key"),
    ({"apiVersion": API, "kind": "ResiliencePolicy", "metadata": {"name": "bad"},
      "spec": {"targetRef": SVC, "adaptiveConcurrency": {"minRtt": "40ms",
               "minRttCalcParams": {"interval": "30s"}}}},
     "spec.adaptiveConcurrency.minRttCalcParams.interval", "only used when the minRTT"),
    ({"apiVersion": API, "kind": "RateLimitPolicy", "metadata": {"name": "bad"},
      "spec": {"targetRef": SVC, "local": {"requests": 0, "per": "1s"}}},
     "spec.local.requests", "greater than or equal to 1"),
    ({"apiVersion": API, "kind": "RateLimitPolicy", "metadata": {"name": "bad"},
      "spec": {"targetRef": SVC, "global": {"rules": [
          {"key": {"type": "header"}, "requests": 10, "per": "1m"}]}}},
     "spec.global.rules[0].key.header", "required with type header"),
    ({"apiVersion": API, "kind": "FaultPolicy", "metadata": {"name": "bad"},
      "spec": {"targetRef": SVC, "abort": {"httpStatus": 503, "grpcStatus": 14,
                                           "percent": 10}}},
     "spec.abort", "exactly one of httpStatus"),
    ({"apiVersion": API, "kind": "FaultPolicy", "metadata": {"name": "bad"},
      "spec": {"targetRef": SVC, "delay": {"fixedDelay": "1s", "percent": 150}}},
     "spec.delay.percent", "less than or equal to 100"),
]


@pytest.mark.parametrize(("doc", "path", "reason"), BAD,
                         ids=[f"{d['kind']}:{p}" for d, p, _ in BAD])
async def test_invalid_document_is_refused_with_field_and_reason(
        mini: MiniMesh, doc: dict[str, Any], path: str, reason: str) -> None:
    body = await mini.api("POST", "/api/v1/apply", doc, expect=422)
    fields = {f["path"]: f["reason"] for f in body["fields"]}
    assert path in fields, body
    assert reason in fields[path], body
    listed = await mini.api("GET", f"/api/v1/resources/{doc['kind']}")
    assert not [r for r in listed if r["metadata"]["name"] == "bad"]
