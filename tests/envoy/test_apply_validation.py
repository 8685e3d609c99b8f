"""Every traffic and policy kind: an invalid document is refused at apply (HTTP 422)
with the field's path and the reason, and nothing is stored."""

from __future__ import annotations

from typing import Any

import pytest

from tests.envoy.harness import API, MiniMesh

pytestmark = pytest.mark.slow
GW = "gateway.networking.k8s.io/v1"
SVC = {"kind": "Service", "name": "echo"}



def _route(rule: dict[str, Any], kind: str = "HTTPRoute") -> dict[str, Any]:
    return {"apiVersion": GW, "kind": kind, "metadata": {"name": "bad"},
            "spec": {"parentRefs": [SVC], "rules": [{**rule, "backendRefs": [{"name": "echo"}]}]}}


def _regex(where: str, value: str) -> dict[str, Any]:
    if where == "path":
        return _route({"matches": [{"path": {"type": "RegularExpression", "value": value}}]})
    return _route({"matches": [{where: [{"type": "RegularExpression", "name": "x-a",
                                         "value": value}]}]})


# Regexes RE2 (so Envoy, which NACKed the namespace's whole route config) refuses.
REGEXES: list[tuple[dict[str, Any], str, str]] = [
    (_regex("path", "(a{1000}){1000}"), "spec.rules[0].matches[0].path.value",
     "invalid repetition size"),
    (_regex("headers", r"^(?:[a-z0-9]{1,100}\.){1,20}$"),
     "spec.rules[0].matches[0].headers[0].value", "invalid repetition size"),
    (_regex("queryParams", ".{1000}" * 5), "spec.rules[0].matches[0].queryParams[0].value",
     "RE2 program size is 10004, more than 8192"),
    (_route({"matches": [{"method": {"type": "RegularExpression", "service": ".{1000}" * 3,
                                     "method": ".{1000}" * 2}}]}, "GRPCRoute"),
     "spec.rules[0].matches[0].method.service", "as one path regex"),
    ({"apiVersion": API, "kind": "FaultPolicy", "metadata": {"name": "bad"},
      "spec": {"targetRef": SVC, "abort": {"httpStatus": 503, "percent": 10},
               "match": {"headers": [{"type": "RegularExpression", "name": "x-a",
                                      "value": "(?=x)"}]}}},
     "spec.match.headers[0].value", "lookahead"),
]
# What Envoy would write into a header: no NUL, CR or LF.
HEADER_TEXT: list[tuple[dict[str, Any], str, str]] = [
    (_route({"filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {
        "set": [{"name": "x-a", "value": "a\r\nx-injected: 1"}]}}]}),
     "spec.rules[0].filters[0].requestHeaderModifier.set[0].value", "CR or LF"),
    (_route({"filters": [{"type": "URLRewrite", "urlRewrite": {"path": {
        "type": "ReplaceFullPath", "replaceFullPath": "/a\nb"}}}]}),
     "spec.rules[0].filters[0].urlRewrite.path.replaceFullPath", "LF"),
]

BAD: list[tuple[dict[str, Any], str, str]] = [
    *REGEXES,
    *HEADER_TEXT,
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
