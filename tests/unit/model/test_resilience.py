"""ResiliencePolicy at the model edge: a full document parses and round-trips, every
bad field is refused with its path and a reason, and nothing else escapes."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from gossamer.model import (
    InvalidResource,
    ResiliencePolicy,
    kind_for,
    parse_document,
    parse_documents,
)
from gossamer.model.policy import Scope, policy_scope
from gossamer.model.resiliencepolicy import RETRY_ON, LbPolicy
from tests.model_helpers import (
    DELETE,
    jsonish,
    mutate,
    parses_or_is_rejected_cleanly,
    set_path,
)

MESH = "mesh.gossamer.dev/v1alpha1"


def full_doc() -> dict[str, Any]:
    return {"apiVersion": MESH, "kind": "ResiliencePolicy",
            "metadata": {"name": "catalog", "namespace": "shop"},
            "spec": {
                "targetRef": {"group": "", "kind": "Service", "name": "catalog"},
                "timeouts": {"request": "15s", "perTry": "3s", "idle": "5m",
                             "connect": "500ms"},
                "retries": {"attempts": 3,
                            "retryOn": ["5xx", "gateway-error", "retriable-status-codes"],
                            "retriableStatusCodes": [409, 503],
                            "backoff": {"baseInterval": "25ms", "maxInterval": "250ms"},
                            "budget": {"percent": 25, "minConcurrency": 5}},
                "circuitBreaker": {"maxConnections": 100, "maxPendingRequests": 10,
                                   "maxRequests": 200},
                "outlierDetection": {"consecutive5xx": 5, "consecutiveGatewayErrors": 3,
                                     "interval": "10s", "baseEjectionTime": "30s",
                                     "maxEjectionPercent": 50,
                                     "successRate": {"minimumHosts": 3, "requestVolume": 50,
                                                     "stdevFactor": 1.9}},
                "healthCheck": {"http": {"path": "/healthz", "expectedStatuses": [200, 204]},
                                "interval": "5s", "timeout": "1s", "unhealthyThreshold": 3,
                                "healthyThreshold": 2},
                "loadBalancer": {"policy": "RingHash", "hashOn": {"header": "x-user"}},
            }}


_set = set_path


def test_full_document_parses_and_round_trips() -> None:
    policy = parse_document(full_doc())
    assert isinstance(policy, ResiliencePolicy)
    assert policy.spec.load_balancer is not None
    assert policy.spec.load_balancer.policy is LbPolicy.RING_HASH
    assert policy_scope(policy) is Scope.SERVICE
    assert parse_document(policy.to_document()) == policy


def test_defaults() -> None:
    doc = {"apiVersion": MESH, "kind": "ResiliencePolicy", "metadata": {"name": "p"},
           "spec": {"targetRef": {"kind": "Service", "name": "catalog"},
                    "retries": {"budget": {}}, "healthCheck": {"tcp": {}},
                    "loadBalancer": {"slowStart": {"window": "30s"}}}}
    policy = parse_document(doc)
    assert isinstance(policy, ResiliencePolicy)
    retries = policy.spec.retries
    assert retries is not None
    assert retries.attempts == 2
    assert retries.budget is not None
    assert (retries.budget.percent, retries.budget.min_concurrency) == (20.0, 3)
    hc = policy.spec.health_check
    assert hc is not None
    assert (hc.interval, hc.timeout, hc.unhealthy_threshold, hc.healthy_threshold) == (
        "10s", "1s", 3, 2)
    assert policy.spec.load_balancer is not None
    assert policy.spec.load_balancer.policy is LbPolicy.ROUND_ROBIN


def test_kind_aliases() -> None:
    for alias in ("ResiliencePolicy", "resiliencepolicy", "resiliencepolicies", "rp"):
        assert kind_for(alias) is ResiliencePolicy


@pytest.mark.parametrize("value", RETRY_ON)
def test_every_envoy_retry_condition_is_accepted(value: str) -> None:
    doc = _set(full_doc(), "spec.retries.retryOn", [value])
    doc["spec"]["retries"].pop("retriableStatusCodes")
    if value == "retriable-status-codes":
        doc["spec"]["retries"]["retriableStatusCodes"] = [503]
    parse_document(doc)


S = "spec"
REJECTIONS: list[tuple[str, Any, str, str]] = [
    (f"{S}.targetRef", DELETE, f"{S}.targetRef", "required"),
    (f"{S}.targetRef.kind", "HTTPRoute", f"{S}.targetRef.kind", "attaches to a Service"),
    (f"{S}.targetRef.name", "Bad_Name", f"{S}.targetRef.name", "DNS label"),
    (f"{S}.bogus", 1, f"{S}.bogus", "unknown field"),
    (f"{S}.timeouts.request", "10", f"{S}.timeouts.request", "is not a duration"),
    (f"{S}.timeouts.perTry", "1.5s", f"{S}.timeouts.perTry", "is not a duration"),
    (f"{S}.timeouts.perTry", "0s", f"{S}.timeouts.perTry", "longer than 0"),
    (f"{S}.timeouts.perTry", "20s", f"{S}.timeouts.perTry", "not be longer than request"),
    (f"{S}.timeouts.idle", "1d", f"{S}.timeouts.idle", "is not a duration"),
    (f"{S}.timeouts.connect", "0s", f"{S}.timeouts.connect", "longer than 0"),
    (f"{S}.retries.attempts", 11, f"{S}.retries.attempts", "less than or equal to 10"),
    (f"{S}.retries.attempts", -1, f"{S}.retries.attempts", "greater than or equal to 0"),
    (f"{S}.retries.attempts", "3", f"{S}.retries.attempts", "valid integer"),
    (f"{S}.retries.retryOn[0]", "5xy", f"{S}.retries.retryOn[0]", "unknown retryOn value"),
    (f"{S}.retries.retryOn[1]", "5xx", f"{S}.retries.retryOn", "twice"),
    (f"{S}.retries.retriableStatusCodes[0]", 99, f"{S}.retries.retriableStatusCodes[0]",
     "greater than or equal to 100"),
    (f"{S}.retries.retryOn", ["5xx"], f"{S}.retries.retriableStatusCodes",
     "only used with retryOn 'retriable-status-codes'"),
    (f"{S}.retries.retriableStatusCodes", [], f"{S}.retries.retriableStatusCodes",
     "needs at least one status code"),
    (f"{S}.retries.backoff.baseInterval", DELETE, f"{S}.retries.backoff.baseInterval",
     "required"),
    (f"{S}.retries.backoff.baseInterval", "0ms", f"{S}.retries.backoff.baseInterval",
     "longer than 0"),
    (f"{S}.retries.backoff.maxInterval", "10ms", f"{S}.retries.backoff.maxInterval",
     "not be shorter than baseInterval"),
    (f"{S}.retries.budget.percent", 101, f"{S}.retries.budget.percent",
     "less than or equal to 100"),
    (f"{S}.retries.budget.percent", -1, f"{S}.retries.budget.percent",
     "greater than or equal to 0"),
    (f"{S}.retries.budget.minConcurrency", -3, f"{S}.retries.budget.minConcurrency",
     "greater than or equal to 0"),
    (f"{S}.circuitBreaker.maxConnections", -1, f"{S}.circuitBreaker.maxConnections",
     "greater than or equal to 0"),
    (f"{S}.circuitBreaker.maxRequests", 2**32, f"{S}.circuitBreaker.maxRequests",
     "less than or equal to"),
    (f"{S}.circuitBreaker.maxRetries", 3, f"{S}.circuitBreaker.maxRetries",
     "either a fixed maximum of concurrent retries or a retry budget"),
    (f"{S}.outlierDetection.consecutive5xx", 0, f"{S}.outlierDetection.consecutive5xx",
     "greater than or equal to 1"),
    (f"{S}.outlierDetection.interval", "0s", f"{S}.outlierDetection.interval",
     "longer than 0"),
    (f"{S}.outlierDetection.baseEjectionTime", "soon",
     f"{S}.outlierDetection.baseEjectionTime", "is not a duration"),
    (f"{S}.outlierDetection.maxEjectionPercent", 101,
     f"{S}.outlierDetection.maxEjectionPercent", "less than or equal to 100"),
    (f"{S}.outlierDetection.successRate.stdevFactor", 0,
     f"{S}.outlierDetection.successRate.stdevFactor", "greater than 0"),
    (f"{S}.outlierDetection", {"interval": "10s"}, f"{S}.outlierDetection",
     "needs at least one of consecutive5xx"),
    (f"{S}.healthCheck.tcp", {}, f"{S}.healthCheck", "exactly one of http or tcp"),
    (f"{S}.healthCheck.http", DELETE, f"{S}.healthCheck", "exactly one of http or tcp"),
    (f"{S}.healthCheck.http.path", "healthz", f"{S}.healthCheck.http.path",
     "is not a request path"),
    (f"{S}.healthCheck.http.path", "/a\x00b", f"{S}.healthCheck.http.path",
     "is not a request path"),
    (f"{S}.healthCheck.http.path", "/a b", f"{S}.healthCheck.http.path",
     "is not a request path"),
    (f"{S}.healthCheck.http.expectedStatuses[0]", 600,
     f"{S}.healthCheck.http.expectedStatuses[0]", "less than or equal to 599"),
    (f"{S}.healthCheck.interval", "0s", f"{S}.healthCheck.interval", "longer than 0"),
    (f"{S}.healthCheck.timeout", "1", f"{S}.healthCheck.timeout", "is not a duration"),
    (f"{S}.healthCheck.unhealthyThreshold", 0, f"{S}.healthCheck.unhealthyThreshold",
     "greater than or equal to 1"),
    (f"{S}.healthCheck.tcp", {"send": "x"}, f"{S}.healthCheck.tcp.send", "unknown field"),
    (f"{S}.loadBalancer.policy", "Fastest", f"{S}.loadBalancer.policy", "RoundRobin"),
    (f"{S}.loadBalancer.hashOn", DELETE, f"{S}.loadBalancer.hashOn",
     "required with policy RingHash"),
    (f"{S}.loadBalancer.policy", "RoundRobin", f"{S}.loadBalancer.hashOn",
     "only used with policy RingHash or Maglev"),
    (f"{S}.loadBalancer.hashOn.sourceIP", True, f"{S}.loadBalancer.hashOn",
     "exactly one of header, cookie or sourceIP"),
    (f"{S}.loadBalancer.hashOn", {}, f"{S}.loadBalancer.hashOn",
     "exactly one of header, cookie or sourceIP"),
    (f"{S}.loadBalancer.hashOn", {"sourceIP": False}, f"{S}.loadBalancer.hashOn.sourceIP",
     "True"),
    (f"{S}.loadBalancer.hashOn.header", "bad header", f"{S}.loadBalancer.hashOn.header",
     "not a valid HTTP header name"),
    (f"{S}.loadBalancer.hashOn", {"cookie": {"name": "a;b"}},
     f"{S}.loadBalancer.hashOn.cookie.name", "not a cookie name"),
    (f"{S}.loadBalancer.hashOn", {"cookie": {"name": "s", "ttl": "1y"}},
     f"{S}.loadBalancer.hashOn.cookie.ttl", "is not a duration"),
    (f"{S}.loadBalancer.slowStart", {"window": "30s"}, f"{S}.loadBalancer.slowStart",
     "only RoundRobin and LeastRequest"),
    (f"{S}.loadBalancer.locality", {"failoverPriority": ["zone", "zone"]},
     f"{S}.loadBalancer.locality.failoverPriority", "lists a label twice"),
    (f"{S}.loadBalancer.locality", {"failoverPriority": ["bad key!"]},
     f"{S}.loadBalancer.locality.failoverPriority", "not a valid Kubernetes label key"),
    (f"{S}.loadBalancer.locality", {"failoverPriority": []},
     f"{S}.loadBalancer.locality.failoverPriority", "at least 1"),
    (f"{S}.loadBalancer.locality", {"prefer": "zone"},
     f"{S}.loadBalancer.locality.prefer", "unknown field"),
    (f"{S}.hedging", {"delay": "100ms"}, f"{S}.hedging.delay",
     "is the per-try timeout when hedging; remove timeouts.perTry"),
    (f"{S}.hedging", {"delay": "0s"}, f"{S}.hedging.delay", "longer than 0"),
    (f"{S}.hedging", {"delay": "1s", "maxAttempts": 1}, f"{S}.hedging.maxAttempts",
     "greater than or equal to 2"),
    (f"{S}.hedging", {"delay": "1s", "maxAttempts": 6}, f"{S}.hedging.maxAttempts",
     "less than or equal to 5"),
    (f"{S}.hedging", {}, f"{S}.hedging.delay", "required"),
    (f"{S}.routes", [{"httpRoute": "r"}], f"{S}.routes[0]", "at least one of timeouts"),
    (f"{S}.routes", [{"httpRoute": "r", "timeouts": {"connect": "1s"}}],
     f"{S}.routes[0].timeouts.connect", "connection setting of the Service"),
    (f"{S}.routes", [{"httpRoute": "r", "circuitBreaker": {}}],
     f"{S}.routes[0].circuitBreaker", "unknown field"),
    (f"{S}.routes", [{"rule": "x", "retries": {}}], f"{S}.routes[0].httpRoute", "required"),
    (f"{S}.routes", [{"httpRoute": "r", "hedging": {"delay": "1s"}}],
     f"{S}.routes[0].hedging.delay", "remove timeouts.perTry"),
    (f"{S}.routes", [{"httpRoute": "r", "retries": {}}, {"httpRoute": "r", "retries": {}}],
     f"{S}.routes[1]", "a second section for HTTPRoute 'r'"),
]


@pytest.mark.parametrize(("path", "value", "reported", "reason"), REJECTIONS,
                         ids=[f"{p}={v!r}"[:80] for p, v, _, _ in REJECTIONS])
def test_bad_field_is_rejected_with_its_path_and_reason(
        path: str, value: Any, reported: str, reason: str) -> None:
    doc = _set(full_doc(), path, value)
    with pytest.raises(InvalidResource) as err:
        parse_document(doc)
    found = {e.path: e.reason for e in err.value.errors}
    assert reported in found, found
    assert reason in found[reported], found


def test_hedging_delay_must_be_shorter_than_the_request_timeout() -> None:
    doc = full_doc()
    doc["spec"]["timeouts"] = {"request": "1s"}
    doc["spec"]["hedging"] = {"delay": "1s"}
    with pytest.raises(InvalidResource) as err:
        parse_document(doc)
    assert any(e.path == "spec.hedging.delay" and "shorter than timeouts.request" in e.reason
               for e in err.value.errors)
    doc["spec"]["hedging"] = {"delay": "200ms", "maxAttempts": 3}
    assert parse_document(doc).spec.hedging is not None


def test_locality_defaults_to_region_then_zone() -> None:
    doc = full_doc()
    doc["spec"]["loadBalancer"] = {"locality": {}}
    lb = parse_document(doc).spec.load_balancer
    assert lb is not None
    assert lb.locality is not None
    assert lb.locality.failover_priority == ["topology.kubernetes.io/region",
                                             "topology.kubernetes.io/zone"]


def test_max_retries_without_a_budget_is_fine() -> None:
    doc = full_doc()
    del doc["spec"]["retries"]["budget"]
    doc["spec"]["circuitBreaker"]["maxRetries"] = 3
    parse_document(doc)


# ---------------------------------------------------------------- property: never crash

WORDS = ["5xx", "reset", "retriable-status-codes", "RingHash", "Maglev", "RoundRobin",
         "LeastRequest", "Random", "x-user", "/healthz", "healthz", "", "5s", "0s", "1.5s",
         "10ms", "1h", "Service", "Pod", "catalog"]
JSONISH = jsonish(WORDS, 2**33)


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(full_doc())
    mutate(draw, doc, JSONISH)
    return doc


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_policies_parse_or_raise_invalid_resource(doc: dict[str, Any]) -> None:
    note(json.dumps(doc, default=str)[:2000])
    parses_or_is_rejected_cleanly(doc)


# ---------------------------------------------------------------- the docs

DOCS = Path(__file__).parents[3] / "docs"


def test_resilience_examples_in_the_docs_are_valid() -> None:
    """Every example parses; the invalid one fails with the error the page shows."""
    text = (DOCS / "resilience.md").read_text()
    # Later top-level sections (FaultPolicy...) have their own tests.
    blocks = re.findall(r"```yaml\n(.*?)```", re.split(r"\n# (?=[A-Z])", text)[0], re.S)
    assert len(blocks) >= 6
    for block in blocks:
        if block.startswith("# invalid"):
            with pytest.raises(InvalidResource) as info:
                parse_documents(block)
            assert f"error: {info.value}" in text
        else:
            # Other policies' sections follow ResiliencePolicy's; their tests check them.
            assert parse_documents(block)
    for field in ("timeouts", "retries", "circuitBreaker", "outlierDetection", "healthCheck",
                  "loadBalancer"):
        assert f"## {field}" in text
