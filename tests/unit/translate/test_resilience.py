"""ResiliencePolicy as Envoy config: golden file of a mesh with full policies, the
per-field mapping, precedence and conflicts, no change without a policy, and the
generated config accepted by Envoy itself.

Regenerate the golden file after an intended change with
`GOSSAMER_UPDATE_GOLDEN=1 pytest tests/unit/translate/test_resilience.py` and review
the diff.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from envoy.config.endpoint.v3 import endpoint_pb2
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings

from gossamer.index import build_index
from gossamer.model import InvalidResource, Resource, ResourceKey, parse_document, parse_documents
from gossamer.translate import MeshConfig, MeshSettings, translate_mesh, translate_proxy
from gossamer.translate.routes import DEFAULT_RETRY
from gossamer.xds.types import CLUSTER, ENDPOINT, ROUTE
from tests.unit.model.test_resilience import mutated
from tests.unit.translate.test_security import _static_bootstrap, assert_envoy_accepts
from tests.unit.translate.test_translate import _as_json, _frontend

HERE = Path(__file__).parents[1]
MESH = (HERE / "testdata" / "mesh.yaml").read_text()
POLICIES = (HERE / "testdata" / "resilience.yaml").read_text()


def docs(extra: str = POLICIES) -> list[Resource]:
    return parse_documents(MESH + ("\n---\n" + extra if extra else ""))


def mesh_of(resources: list[Resource], **settings: Any) -> MeshConfig:
    return translate_mesh(build_index(resources, 7), MeshSettings(**settings))


def snap_json(mesh: MeshConfig) -> dict[str, Any]:
    return _as_json(translate_proxy(mesh, _frontend()).snapshot)


def cluster(mesh: MeshConfig, name: str) -> dict[str, Any]:
    out: dict[str, Any] = snap_json(mesh)["clusters"][name]
    return out


def routes(mesh: MeshConfig, vhost: str) -> dict[str, dict[str, Any]]:
    config = snap_json(mesh)["routes"]["outbound"]
    for vh in config["virtualHosts"]:
        if vh["name"] == vhost:
            return {r["name"]: r for r in vh["routes"]}
    raise AssertionError(f"no virtual host {vhost}")


def test_golden_frontend_snapshot_with_policies() -> None:
    actual = snap_json(mesh_of(docs()))
    golden = HERE / "golden" / "frontend-resilience.json"
    if os.environ.get("GOSSAMER_UPDATE_GOLDEN"):
        golden.write_text(json.dumps(actual, indent=2, sort_keys=True) + "\n")
    assert actual == json.loads(golden.read_text())


@pytest.mark.parametrize("mtls", [True, False])
def test_without_a_policy_in_effect_the_config_is_byte_identical(mtls: bool) -> None:
    """Policies for absent Services, and no policies at all, change nothing."""
    stray = """
apiVersion: mesh.gossamer.dev/v1alpha1
kind: ResiliencePolicy
metadata: {name: nowhere}
spec:
  targetRef: {kind: Service, name: not-a-service}
  retries: {attempts: 5}
  loadBalancer: {policy: Maglev, hashOn: {sourceIP: true}}
"""
    plain = translate_proxy(mesh_of(docs(""), mtls=mtls), _frontend()).snapshot
    with_stray = translate_proxy(mesh_of(docs(stray), mtls=mtls), _frontend()).snapshot
    for type_url in (CLUSTER, ROUTE):
        assert {n: r.payload for n, r in plain.of(type_url).items()} == \
            {n: r.payload for n, r in with_stray.of(type_url).items()}
    golden = HERE / "golden" / ("frontend.json" if mtls else "frontend-plaintext.json")
    assert _as_json(plain) == json.loads(golden.read_text())


def test_cluster_settings_of_a_full_policy_apply_to_every_port() -> None:
    mesh = mesh_of(docs())
    for name in ("outbound|80||catalog.default", "outbound|9090||catalog.default"):
        c = cluster(mesh, name)
        assert c["connectTimeout"] == "0.500s"
        assert c["lbPolicy"] == "RING_HASH"
        assert c["ringHashLbConfig"] == {}
        # priority DEFAULT is the enum's zero value, which JSON leaves out.
        assert c["circuitBreakers"] == {"thresholds": [{
            "maxConnections": 1000, "maxPendingRequests": 100,
            "maxRequests": 2000,
            "retryBudget": {"budgetPercent": {"value": 25.0}, "minRetryConcurrency": 5}}]}
        assert c["outlierDetection"] == {
            "consecutive5xx": 5, "enforcingConsecutive5xx": 100,
            "consecutiveGatewayFailure": 3, "enforcingConsecutiveGatewayFailure": 100,
            "enforcingSuccessRate": 100, "successRateMinimumHosts": 3,
            "successRateRequestVolume": 50, "successRateStdevFactor": 1900,
            "interval": "10s", "baseEjectionTime": "30s", "maxEjectionPercent": 50}
        hc = c["healthChecks"][0]
        assert (hc["interval"], hc["timeout"], hc["unhealthyThreshold"],
                hc["healthyThreshold"]) == ("5s", "1s", 3, 2)
        assert hc["httpHealthCheck"]["path"] == "/healthz"
        assert hc["httpHealthCheck"]["expectedStatuses"] == [
            {"start": "200", "end": "201"}, {"start": "204", "end": "205"}]
    grpc = cluster(mesh, "outbound|9090||catalog.default")["healthChecks"][0]
    assert grpc["httpHealthCheck"]["codecClientType"] == "HTTP2"
    # An HTTP/1.1 app's port too: the check goes to the callee's sidecar, over HTTP/2.
    http = cluster(mesh, "outbound|80||catalog.default")
    assert http["healthChecks"][0]["httpHealthCheck"]["codecClientType"] == "HTTP2"
    options = http["typedExtensionProtocolOptions"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert options["explicitHttpConfig"] == {"http2ProtocolOptions": {"allowConnect": True}}


def test_max_retries_replaces_the_budget_and_slow_start_is_set() -> None:
    c = cluster(mesh_of(docs()), "outbound|80||catalog-v1.default")
    assert c["circuitBreakers"] == {"thresholds": [{"maxRetries": 4}]}
    assert c["lbPolicy"] == "LEAST_REQUEST"
    assert c["leastRequestLbConfig"] == {"slowStartConfig": {"slowStartWindow": "30s"}}
    assert c["healthChecks"][0]["tcpHealthCheck"] == {}


def test_retries_without_budget_get_the_default_budget() -> None:
    extra = """
apiVersion: mesh.gossamer.dev/v1alpha1
kind: ResiliencePolicy
metadata: {name: frontend}
spec: {targetRef: {kind: Service, name: frontend}, retries: {attempts: 1}}
"""
    c = cluster(mesh_of(docs(extra)), "outbound|80||frontend.default")
    assert c["circuitBreakers"]["thresholds"][0]["retryBudget"] == {
        "budgetPercent": {"value": 20.0}, "minRetryConcurrency": 3}
    route = routes(mesh_of(docs(extra)), "frontend.default:80")["default"]["route"]
    assert route["retryPolicy"]["numRetries"] == 1
    assert route["retryPolicy"]["retryOn"] == DEFAULT_RETRY["retryOn"]


def test_only_the_first_policy_per_service_applies_and_the_rest_are_conflicted() -> None:
    resources = docs()
    index = build_index(resources, 1)
    later = index.conditions[ResourceKey("ResiliencePolicy", "default", "catalog-v2-later")]
    assert (later[0].type, later[0].status, later[0].reason) == ("Accepted", "False",
                                                                 "Conflicted")
    assert "catalog-v2" in later[0].message
    first = index.conditions[ResourceKey("ResiliencePolicy", "default", "catalog-v2")]
    assert (first[0].status, first[1].status) == ("True", "True")
    c = cluster(mesh_of(resources), "outbound|80||catalog-v2.default")
    assert c["lbPolicy"] == "MAGLEV"
    assert c["outlierDetection"] == {"consecutive5xx": 2, "enforcingConsecutive5xx": 100,
                                     "enforcingSuccessRate": 0}


def test_missing_target_is_reported_but_accepted() -> None:
    index = build_index(docs("""
apiVersion: mesh.gossamer.dev/v1alpha1
kind: ResiliencePolicy
metadata: {name: ghost}
spec: {targetRef: {kind: Service, name: ghost}, timeouts: {request: 1s}}
"""), 1)
    accepted, resolved = index.conditions[ResourceKey("ResiliencePolicy", "default", "ghost")]
    assert accepted.status == "True"
    assert (resolved.status, resolved.reason) == ("False", "TargetNotFound")


def test_route_settings_are_the_called_services_and_the_hash_the_backends() -> None:
    """Istio's split: the called Service's policy (catalog's) sets its routes' timeouts
    and retries wherever they send; the backend's policy keeps the load-balancer hash
    that feeds its own clusters."""
    catalog = routes(mesh_of(docs()), "catalog.default:80")
    # rule 0 sends everything to catalog-v2: catalog's timeouts and retries, catalog-v2's
    # cookie hash (its clusters are Maglev).
    canary = catalog["default/catalog/rule0/match0"]["route"]
    assert canary["hashPolicy"] == [{"cookie": {"name": "session", "ttl": "3600s"}}]
    assert (canary["timeout"], canary["idleTimeout"]) == ("15s", "300s")
    assert canary["retryPolicy"]["numRetries"] == 3
    assert canary["retryPolicy"]["perTryTimeout"] == "3s"
    assert canary["retryPolicy"]["retriableStatusCodes"] == [409, 429]
    # rule 1 goes to catalog-v1 and has its own HTTPRoute timeouts: those win; the
    # retries are catalog's, over catalog-v1's own (attempts 1, on reset).
    api = catalog["default/catalog/rule1/match0"]["route"]
    assert api["timeout"] == "10s"
    assert api["retryPolicy"]["perTryTimeout"] == "2s"
    assert api["retryPolicy"]["numRetries"] == 3
    assert api["retryPolicy"]["retryOn"] == ("5xx,gateway-error,retriable-status-codes,"
                                             "connect-failure,refused-stream,"
                                             "reset-before-request,retriable-headers")
    assert "hashPolicy" not in api  # catalog-v1 hashes on nothing (LeastRequest)
    # rule 3 splits between catalog-v1 and catalog-v2: the parent's (catalog) policy.
    split = catalog["default/catalog/rule3/match0"]["route"]
    assert split["timeout"] == "15s"
    assert split["idleTimeout"] == "300s"
    assert split["hashPolicy"] == [{"header": {"headerName": "x-user-id"}}]
    retry = split["retryPolicy"]
    assert retry["numRetries"] == 3
    assert retry["perTryTimeout"] == "3s"
    assert retry["retryOn"] == ("5xx,gateway-error,retriable-status-codes,connect-failure,"
                                "refused-stream,reset-before-request,retriable-headers")
    assert retry["retriableStatusCodes"] == [409, 429]
    assert retry["retryBackOff"] == {"baseInterval": "0.025s", "maxInterval": "0.250s"}
    # the default safety net is kept: other hosts, and the unreachable-app header.
    assert retry["retryHostPredicate"] == DEFAULT_RETRY["retryHostPredicate"]
    assert retry["retriableHeaders"] == DEFAULT_RETRY["retriableHeaders"]
    # the grpc port has no HTTPRoute: its default route gets catalog's policy.
    grpc = routes(mesh_of(docs()), "catalog.default:9090")["default"]["route"]
    assert grpc["timeout"] == "15s"
    assert grpc["hashPolicy"] == [{"header": {"headerName": "x-user-id"}}]


def test_tcp_service_gets_cluster_settings_only() -> None:
    c = cluster(mesh_of(docs()), "outbound|5432||db.data")
    assert c["lbPolicy"] == "RING_HASH"
    assert c["connectTimeout"] == "1s"
    assert c["healthChecks"][0]["interval"] == "3s"
    assert "circuitBreakers" not in c
    listener = snap_json(mesh_of(docs()))["listeners"]["upstream|5432||db.data"]
    proxy = listener["filterChains"][0]["filters"][0]["typedConfig"]
    assert proxy["hashPolicy"] == [{"sourceIp": {}}]
    assert proxy["idleTimeout"] == "1800s"


def _policy(spec: str) -> str:
    return ("apiVersion: mesh.gossamer.dev/v1alpha1\nkind: ResiliencePolicy\n"
            "metadata: {name: cat}\nspec:\n  targetRef: {kind: Service, name: catalog}\n"
            + spec)


def test_hedging_sets_the_per_try_timeout_retries_and_hedge_policy() -> None:
    mesh = mesh_of(docs(_policy("  hedging: {delay: 150ms, maxAttempts: 3}\n")))
    action = routes(mesh, "catalog.default:9090")["default"]["route"]
    assert action["hedgePolicy"] == {"hedgeOnPerTryTimeout": True}
    assert action["retryPolicy"]["perTryTimeout"] == "0.150s"
    assert action["retryPolicy"]["numRetries"] == 2
    # Hedges count against the retry budget, which is set even without `retries`.
    thresholds = cluster(mesh, "outbound|80||catalog.default")["circuitBreakers"]
    assert thresholds["thresholds"][0]["retryBudget"]["budgetPercent"]["value"] == 20.0


def _with_zones(extra: str) -> list[Resource]:
    """catalog's workloads spread over zones a and b of region eu."""
    out = []
    for res in docs(extra):
        if res.KIND == "Workload" and res.spec.service == "catalog":  # type: ignore[attr-defined]
            n = res.metadata.name
            zone = "a" if n.endswith("-a") else "b"
            labels = {**res.metadata.labels, "topology.kubernetes.io/region": "eu",
                      "topology.kubernetes.io/zone": zone}
            res = res.model_copy(update={"metadata": res.metadata.model_copy(
                update={"labels": labels})})
        out.append(res)
    return out


def test_locality_orders_endpoints_by_the_callers_zone() -> None:
    mesh = mesh_of(_with_zones(_policy("  loadBalancer: {locality: {}}\n")))
    name = "outbound|80||catalog.default"
    assert name in mesh.locality
    retry = routes(mesh, "catalog.default:9090")["default"]["route"]["retryPolicy"]
    assert retry["retryPriority"]["name"] == "envoy.retry_priorities.previous_priorities"

    def priorities(zone: str) -> dict[int, set[str]]:
        proxy = replace(_frontend(), labels=(("topology.kubernetes.io/region", "eu"),
                                             ("topology.kubernetes.io/zone", zone)))
        snap = translate_proxy(mesh, proxy).snapshot
        cla = json_format.MessageToDict(endpoint_pb2.ClusterLoadAssignment.FromString(
            snap.of(ENDPOINT)[name].payload))
        out: dict[int, set[str]] = {}
        for group in cla["endpoints"]:
            zones = {group["locality"]["zone"]}
            out.setdefault(group.get("priority", 0), set()).update(zones)
        return out

    assert priorities("a") == {0: {"a"}, 1: {"b"}}
    assert priorities("b") == {0: {"b"}, 1: {"a"}}
    # A caller outside region eu sees one priority: nothing is closer than the rest.
    assert priorities("z") == {0: {"a", "b"}}
    # Callers in one zone share one endpoints resource.
    a1 = translate_proxy(mesh, replace(_frontend(), labels=(
        ("topology.kubernetes.io/region", "eu"), ("topology.kubernetes.io/zone", "a"))))
    a2 = translate_proxy(mesh, replace(_frontend(), node_id="other", labels=(
        ("topology.kubernetes.io/region", "eu"), ("topology.kubernetes.io/zone", "a"))))
    assert a1.snapshot.of(ENDPOINT)[name] is a2.snapshot.of(ENDPOINT)[name]


def test_without_locality_endpoints_are_shared_by_every_caller() -> None:
    mesh = mesh_of(_with_zones(""))
    assert not mesh.locality
    snap = translate_proxy(mesh, replace(_frontend(), labels=(
        ("topology.kubernetes.io/zone", "a"),))).snapshot
    name = "outbound|80||catalog.default"
    assert snap.of(ENDPOINT)[name] is mesh.endpoints[name]


SECTIONS = """
apiVersion: mesh.gossamer.dev/v1alpha1
kind: Service
metadata: {name: shop}
spec: {ports: [{port: 80}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: checkout}
spec:
  parentRefs: [{kind: Service, name: shop, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /checkout}}]
    backendRefs: [{name: shop, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: browse}
spec:
  parentRefs: [{kind: Service, name: shop, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /browse}}]
    backendRefs: [{name: shop, port: 80}]
---
apiVersion: mesh.gossamer.dev/v1alpha1
kind: ResiliencePolicy
metadata: {name: shop}
spec:
  targetRef: {kind: Service, name: shop}
  timeouts: {request: 10s, connect: 1s}
  retries: {attempts: 1, retryOn: [5xx]}
  routes:
  - httpRoute: checkout
    timeouts: {request: 2s}
    hedging: {delay: 300ms}
  - httpRoute: gone
    retries: {attempts: 4}
"""


def test_a_route_section_overrides_only_its_routes() -> None:
    resources = parse_documents(SECTIONS)
    index = build_index(resources, 1)
    mesh = translate_mesh(index)
    by_name = routes(mesh, "shop.default:80")
    checkout = by_name["default/checkout/rule0/match0"]["route"]
    browse = by_name["default/browse/rule0/match0"]["route"]
    assert checkout["timeout"] == "2s"
    assert checkout["hedgePolicy"] == {"hedgeOnPerTryTimeout": True}
    assert checkout["retryPolicy"]["perTryTimeout"] == "0.300s"
    assert "5xx" in checkout["retryPolicy"]["retryOn"]  # retries kept from the policy
    assert browse["timeout"] == "10s"
    assert "hedgePolicy" not in browse
    # Cluster settings stay the Service's.
    assert cluster(mesh, "outbound|80||shop.default")["connectTimeout"] == "1s"
    key = ResourceKey("ResiliencePolicy", "default", "shop")
    resolved = {c.type: c for c in index.conditions[key]}["ResolvedRefs"]
    assert (resolved.status, resolved.reason) == ("False", "RouteNotFound")
    assert "routes[1]: HTTPRoute 'gone' not found" in resolved.message


# ---------------------------------------------------------------- Envoy itself


@pytest.mark.slow
@pytest.mark.parametrize("mtls", [True, False])
def test_envoy_accepts_the_generated_config(mtls: bool, tmp_path: Path) -> None:
    snap = translate_proxy(mesh_of(docs(), mtls=mtls), _frontend()).snapshot
    assert_envoy_accepts(_static_bootstrap(snap), tmp_path)


# ---------------------------------------------------------------- property: valid -> Envoy


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_every_valid_policy_translates(doc: dict[str, Any]) -> None:
    """Whatever the model accepts becomes Envoy protos without an error."""
    try:
        policy = parse_document(doc)
    except InvalidResource:
        return
    doc = policy.to_document()
    doc["metadata"] = {"name": "p", "namespace": "default"}
    doc["spec"]["targetRef"] = {"kind": "Service", "name": "catalog"}
    mesh = translate_mesh(build_index([*docs(""), parse_document(doc)], 1))
    translate_proxy(mesh, _frontend())


CALLED = """
apiVersion: mesh.gossamer.dev/v1alpha1
kind: Service
metadata: {name: ratings}
spec: {ports: [{port: 9080}]}
---
apiVersion: mesh.gossamer.dev/v1alpha1
kind: Service
metadata: {name: ratings-v1}
spec: {ports: [{port: 9080}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ratings}
spec:
  parentRefs: [{name: ratings, port: 9080}]
  rules: [{backendRefs: [{name: ratings-v1, port: 9080}]}]
---
apiVersion: mesh.gossamer.dev/v1alpha1
kind: ResiliencePolicy
metadata: {name: ratings}
spec:
  targetRef: {kind: Service, name: ratings}
  retries: {attempts: 4, retryOn: [5xx]}
"""


def _ratings_route(extra: str = "") -> dict[str, Any]:
    resources = parse_documents(CALLED + extra)
    mesh = translate_mesh(build_index(resources, 7), MeshSettings())
    [route] = mesh.port_routes[("default", "ratings", 9080)]
    return route["route"]  # type: ignore[no-any-return]


def test_retries_on_the_called_service_apply_when_its_route_sends_elsewhere() -> None:
    """Users coming from Istio put retries on the host they call: an HTTPRoute that sends
    ratings to ratings-v1 used to drop them silently."""
    route = _ratings_route()
    assert route["cluster"] == "outbound|9080||ratings-v1.default"
    assert route["retryPolicy"]["numRetries"] == 4
    assert route["retryPolicy"]["retryOn"].startswith("5xx,")


def test_the_backends_policy_gives_what_the_called_ones_does_not_set() -> None:
    route = _ratings_route("""
---
apiVersion: mesh.gossamer.dev/v1alpha1
kind: ResiliencePolicy
metadata: {name: ratings-v1}
spec:
  targetRef: {kind: Service, name: ratings-v1}
  timeouts: {request: 3s, connect: 1s}
  retries: {attempts: 1}
""")
    assert route["timeout"] == "3.000s"  # only ratings-v1 sets a request timeout
    assert route["retryPolicy"]["numRetries"] == 4  # both set retries: the called one's


def _effect(index: Any, name: str) -> Any:
    conds = index.conditions[ResourceKey("ResiliencePolicy", "default", name)]
    found = [c for c in conds if c.type == "ClusterSettingsApplied"]
    return found[0] if found else None


def test_status_says_which_settings_do_nothing_on_a_service_routed_elsewhere() -> None:
    index = build_index(docs(), 1)
    # catalog's port 80 routes send to catalog-v1 and -v2 only; port 9090 has no route.
    effect = _effect(index, "catalog")
    assert (effect.status, effect.reason) == ("False", "TrafficRoutedElsewhere")
    assert effect.message == (
        "the routes of 'catalog' on port(s) 80 send all its traffic to other Services "
        "(catalog-v1, catalog-v2), so its cluster settings (timeouts.connect, "
        "retries.budget, circuitBreaker, outlierDetection, healthCheck, loadBalancer) have "
        "no effect there: set them in a ResiliencePolicy of each backend Service; its "
        "route settings (timeouts, retries) apply to those routes")
    accepted, resolved, _ = index.conditions[ResourceKey("ResiliencePolicy", "default",
                                                         "catalog")]
    assert (accepted.status, resolved.status) == ("True", "True")  # still in effect
    # A backend's own policy takes effect whole: its cluster gets the traffic.
    assert _effect(index, "catalog-v1") is None
    # Only route settings: nothing to report.
    route_only = build_index(parse_documents(CALLED), 1)
    assert _effect(route_only, "ratings") is None
    with_breaker = build_index(parse_documents(CALLED.replace(
        "retries: {attempts: 4, retryOn: [5xx]}",
        "retries: {attempts: 4}\n  circuitBreaker: {maxRequests: 10}")), 1)
    assert _effect(with_breaker, "ratings").message.startswith(
        "the routes of 'ratings' send all its traffic to other Services (ratings-v1), so "
        "its cluster settings (circuitBreaker) have no effect there")
    # A route that keeps some traffic on the Service itself: its cluster is used.
    half = build_index(parse_documents(CALLED.replace(
        "rules: [{backendRefs: [{name: ratings-v1, port: 9080}]}]",
        "rules: [{backendRefs: [{name: ratings-v1, port: 9080}, {name: ratings}]}]").replace(
        "retries: {attempts: 4, retryOn: [5xx]}", "outlierDetection: {consecutive5xx: 2}")), 1)
    assert _effect(half, "ratings") is None
