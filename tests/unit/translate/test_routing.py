"""Routing as Envoy config: mirrors, CORS, rule names, GRPCRoute matches and
precedence, TCPRoute weighted splits, WebSocket upgrades, status conditions, route
changes that leave listeners alone, and the generated config accepted by Envoy.

Regenerate the golden file after an intended change with
`GOSSAMER_UPDATE_GOLDEN=1 pytest tests/unit/translate/test_routing.py` and review the
diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from gossamer.contract.node import NodeMetadata
from gossamer.index import build_index
from gossamer.model import Resource, ResourceKey, parse_documents
from gossamer.translate import MeshConfig, MeshSettings, translate_mesh
from gossamer.translate import translate_proxy as proxy_snapshot
from gossamer.translate.names import NO_ROUTE_CLUSTER
from gossamer.translate.routes import route_clusters
from gossamer.xds.types import LISTENER, Snapshot
from tests.unit.translate.test_security import _static_bootstrap, assert_envoy_accepts
from tests.unit.translate.test_translate import _as_json

HERE = Path(__file__).parents[1]
ROUTING = (HERE / "testdata" / "routing.yaml").read_text()
ROUTE_KINDS = ("HTTPRoute", "GRPCRoute", "TCPRoute")
CORS_FILTER = "envoy.filters.http.cors"


def docs(extra: str = "") -> list[Resource]:
    return parse_documents(ROUTING + ("\n---\n" + extra if extra else ""))


def mesh_of(resources: list[Resource], mtls: bool = True) -> MeshConfig:
    return translate_mesh(build_index(resources, 3), MeshSettings(mtls=mtls))


def caller() -> NodeMetadata:
    return NodeMetadata.from_metadata("client-0.default", {
        "service": "client", "namespace": "default", "workload": "client-0",
        "inbound_port": 15006, "app_port": 8080, "outbound_port": 15001,
        "upstreams": [{"service": "echo", "port": 80, "local_port": 15101},
                      {"service": "rpc", "port": 80, "local_port": 15102},
                      {"service": "db", "port": 5432, "local_port": 15103}]})


def snapshot(mesh: MeshConfig) -> Snapshot:
    return proxy_snapshot(mesh, caller()).snapshot


def snap_json(mesh: MeshConfig) -> dict[str, Any]:
    return _as_json(snapshot(mesh))


def vhost_routes(mesh: MeshConfig, vhost: str) -> list[dict[str, Any]]:
    for vh in snap_json(mesh)["routes"]["outbound"]["virtualHosts"]:
        if vh["name"] == vhost:
            return list(vh["routes"])
    raise AssertionError(f"no virtual host {vhost}")


def by_name(routes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in routes}


def hcm(listener: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = listener["filterChains"][0]["filters"][-1]["typedConfig"]
    return config


def test_golden_routing_snapshot() -> None:
    actual = snap_json(mesh_of(docs()))
    wanted = {"routes": actual["routes"], "listeners": actual["listeners"]}
    golden = HERE / "golden" / "routing-client.json"
    if os.environ.get("GOSSAMER_UPDATE_GOLDEN"):
        golden.write_text(json.dumps(wanted, indent=2, sort_keys=True) + "\n")
    assert wanted == json.loads(golden.read_text())


def test_mirrors_become_request_mirror_policies_and_unknown_targets_are_left_out() -> None:
    routes = by_name(vhost_routes(mesh_of(docs()), "echo.default:80"))
    action = routes["default/echo/api/match0"]["route"]
    assert action["cluster"] == "outbound|80||echo.default"
    assert action["requestMirrorPolicies"] == [
        {"cluster": "outbound|80||shadow.default",
         "runtimeFraction": {"defaultValue": {"numerator": 30}}},  # HUNDRED is the default
        {"cluster": "outbound|8080||audit.default",
         "runtimeFraction": {"defaultValue": {"numerator": 333333, "denominator": "MILLION"}}},
    ]
    assert "requestMirrorPolicies" not in routes["default/echo/rule1/match0"]["route"]


def test_mirror_of_zero_percent_and_to_a_missing_port_are_left_out() -> None:
    extra = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: zero}
spec:
  parentRefs: [{name: shadow}]
  rules:
  - filters:
    - {type: RequestMirror, requestMirror: {backendRef: {name: echo, port: 80}, percent: 0}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: echo, port: 81}}}
    backendRefs: [{name: shadow, port: 80}]
"""
    (route,) = vhost_routes(mesh_of(docs(extra)), "shadow.default:80")
    assert "requestMirrorPolicies" not in route["route"]


def test_mirror_to_a_missing_service_is_reported() -> None:
    index = build_index(docs(), 1)
    conds = {c.type: c for c in index.conditions[ResourceKey("HTTPRoute", "default", "echo")]}
    assert conds["Accepted"].status == "True"
    assert (conds["ResolvedRefs"].status, conds["ResolvedRefs"].reason) == \
        ("False", "BackendNotFound")
    assert "ghost" in (conds["ResolvedRefs"].message or "")


def test_cors_per_route_policy_and_the_filter_on_caller_listeners_only() -> None:
    mesh = mesh_of(docs())
    routes = by_name(vhost_routes(mesh, "echo.default:80"))
    policy = routes["default/echo/api/match0"]["typedPerFilterConfig"][CORS_FILTER]
    assert policy["allowOriginStringMatch"] == [
        {"exact": "https://app.example.com"},
        {"safeRegex": {"regex":
                       "https://[A-Za-z0-9-]+(?:\\.[A-Za-z0-9-]+)*\\.example\\.org"}}]
    assert (policy["allowMethods"], policy["allowHeaders"], policy["exposeHeaders"],
            policy["maxAge"], policy["allowCredentials"]) == \
        ("GET,POST", "x-token", "x-backend", "600", True)
    assert "typedPerFilterConfig" not in routes["default/echo/rule1/match0"]
    listeners = snap_json(mesh)["listeners"]
    for name in ("outbound", "upstream|80||echo.default", "upstream|80||rpc.default"):
        filters = [f["name"] for f in hcm(listeners[name])["httpFilters"]]
        assert filters == [CORS_FILTER, "envoy.filters.http.fault",
                           "envoy.filters.http.router"], name
    inbound = [f["name"] for f in hcm(listeners["inbound"])["httpFilters"]]
    assert CORS_FILTER not in inbound


def test_every_http_connection_manager_upgrades_websockets() -> None:
    listeners = snap_json(mesh_of(docs()))["listeners"]
    http = [n for n, lis in listeners.items() if "routeConfig" in hcm(lis) or "rds" in hcm(lis)]
    assert set(http) == {"inbound", "outbound", "upstream|80||echo.default",
                         "upstream|80||rpc.default"}
    for name in http:
        assert hcm(listeners[name])["upgradeConfigs"] == [{"upgradeType": "websocket"}], name


def test_named_rules_name_their_envoy_routes() -> None:
    names = [r["name"] for r in vhost_routes(mesh_of(docs()), "echo.default:80")]
    assert names == ["default/echo/api/match0", "default/echo/rule1/match0"]


def test_grpcroute_matches_and_precedence() -> None:
    routes = vhost_routes(mesh_of(docs()), "rpc.default:80")
    assert [(r["name"], r["match"]) for r in routes] == [
        ("grpc:default/rpc/shout/match0",
         {"path": "/test.Echo/Shout",
          "headers": [{"name": "x-canary", "stringMatch": {"exact": "1"}}]}),
        ("grpc:default/rpc/rule1/match0", {"pathSeparatedPrefix": "/test.Echo"}),
        ("grpc:default/rpc/rule1/match1", {"safeRegex": {"regex": "/[^/]+/Ping"}}),
        ("grpc:default/rpc/rule1/match2",
         {"safeRegex": {"regex": "/(?:test\\.(Echo|Mirror))/(?:S.*)"}}),
        ("grpc:default/rpc/rule2/match0", {"prefix": "/"}),
    ]
    shout = routes[0]
    assert shout["route"]["cluster"] == "outbound|80||rpc-v2.default"
    assert shout["route"]["requestMirrorPolicies"] == [
        {"cluster": "outbound|80||rpc-v1.default",
         "runtimeFraction": {"defaultValue": {"numerator": 5}}}]
    assert shout["requestHeadersToAdd"] == [{"header": {"key": "x-v", "value": "2"},
                                             "appendAction": "OVERWRITE_IF_EXISTS_OR_ADD"}]
    assert routes[1]["route"]["weightedClusters"]["clusters"] == [
        {"name": "outbound|80||rpc-v1.default", "weight": 9},
        {"name": "outbound|80||rpc-v2.default", "weight": 1}]


def test_grpcroute_leaves_http_ports_alone() -> None:
    (route,) = vhost_routes(mesh_of(docs()), "rpc.default:8080")
    assert route["name"] == "default"
    assert route["route"]["cluster"] == "outbound|8080||rpc.default"


def test_grpcroute_and_httproute_on_one_port_grpc_first() -> None:
    extra = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: rpc-http}
spec:
  parentRefs: [{name: rpc, port: 80}]
  rules: [{backendRefs: [{name: rpc-v2, port: 80}]}]
"""
    names = [r["name"] for r in vhost_routes(mesh_of(docs(extra)), "rpc.default:80")]
    assert names[:5] == [n for n in names if n.startswith("grpc:")]
    assert names[5:] == ["default/rpc-http/rule0/match0"]


def test_grpcroute_on_a_service_without_grpc_ports_is_not_accepted() -> None:
    extra = """
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: wrong}
spec:
  parentRefs: [{name: echo}]
  rules: [{backendRefs: [{name: rpc-v1, port: 80}]}]
"""
    mesh = mesh_of(docs(extra))
    conds = {c.type: c for c in mesh.index.conditions[ResourceKey("GRPCRoute", "default",
                                                                  "wrong")]}
    assert (conds["Accepted"].status, conds["Accepted"].reason) == ("False", "UnsupportedValue")
    assert [r["name"] for r in vhost_routes(mesh, "echo.default:80")] == \
        ["default/echo/api/match0", "default/echo/rule1/match0"]


def test_tcproute_splits_the_upstream_listener_by_weight() -> None:
    listeners = snap_json(mesh_of(docs()))["listeners"]
    proxy = listeners["upstream|5432||db.default"]["filterChains"][0]["filters"][0]
    config = proxy["typedConfig"]
    assert "cluster" not in config
    assert config["weightedClusters"] == {"clusters": [
        {"name": "outbound|5432||db-a.default", "weight": 80},
        {"name": "outbound|5432||db-b.default", "weight": 20}]}


@pytest.mark.parametrize(("refs", "expected"), [
    ("[{name: db-a, port: 5432}]", {"cluster": "outbound|5432||db-a.default"}),
    ("[{name: db-a, port: 5432, weight: 3}, {name: nope, port: 5432, weight: 1}]",
     {"weightedClusters": {"clusters": [{"name": "outbound|5432||db-a.default", "weight": 3},
                                        {"name": NO_ROUTE_CLUSTER, "weight": 1}]}}),
    ("[{name: db-a, port: 5432, weight: 0}]", {"cluster": NO_ROUTE_CLUSTER}),
])
def test_tcproute_backends(refs: str, expected: dict[str, Any]) -> None:
    route = f"""
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{name: db}}
spec:
  parentRefs: [{{name: db}}]
  rules: [{{backendRefs: {refs}}}]
"""
    resources = [d for d in docs() if d.kind != "TCPRoute"] + parse_documents(route)
    listener = snap_json(mesh_of(resources))["listeners"]["upstream|5432||db.default"]
    config = listener["filterChains"][0]["filters"][0]["typedConfig"]
    assert {k: config[k] for k in ("cluster", "weightedClusters") if k in config} == expected


def test_second_tcproute_on_a_port_is_conflicted() -> None:
    extra = """
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: db-later}
spec:
  parentRefs: [{name: db}]
  rules: [{backendRefs: [{name: db-b, port: 5432}]}]
"""
    index = build_index(docs(extra), 1)
    assert index.tcp_routes[("default", "db", 5432)].metadata.name == "db"
    later = {c.type: c for c in index.conditions[ResourceKey("TCPRoute", "default",
                                                             "db-later")]}
    assert (later["Accepted"].status, later["Accepted"].reason) == ("False", "Conflicted")
    first = {c.type: c for c in index.conditions[ResourceKey("TCPRoute", "default", "db")]}
    assert first["Accepted"].status == "True"


def test_tcproute_on_an_http_port_is_not_accepted() -> None:
    extra = """
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: on-http}
spec:
  parentRefs: [{name: echo, port: 80}]
  rules: [{backendRefs: [{name: db-b, port: 5432}]}]
"""
    index = build_index(docs(extra), 1)
    conds = {c.type: c for c in index.conditions[ResourceKey("TCPRoute", "default",
                                                             "on-http")]}
    assert (conds["Accepted"].status, conds["Accepted"].reason) == ("False", "UnsupportedValue")
    assert ("default", "echo", 80) not in index.tcp_routes


def test_http_and_grpc_route_changes_touch_routes_only() -> None:
    """Hitless: adding, changing or removing HTTPRoutes and GRPCRoutes is an RDS
    update; every listener stays byte-identical."""
    without = [d for d in docs() if d.kind not in ("HTTPRoute", "GRPCRoute")]
    changed = [d for d in docs() if d.kind != "GRPCRoute"]
    snaps = [snapshot(mesh_of(rs)) for rs in (docs(), without, changed)]
    listeners = [{n: r.payload for n, r in s.of(LISTENER).items()} for s in snaps]
    assert listeners[0] == listeners[1] == listeners[2]
    assert snaps[0].version(LISTENER) == snaps[1].version(LISTENER)


@pytest.mark.slow
@pytest.mark.parametrize("mtls", [True, False])
def test_envoy_accepts_the_generated_config(mtls: bool, tmp_path: Path) -> None:
    assert_envoy_accepts(_static_bootstrap(snapshot(mesh_of(docs(), mtls))), tmp_path)


def test_tcproute_missing_backend_is_reported_as_closed_connections() -> None:
    route = """
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: db}
spec:
  parentRefs: [{name: db}]
  rules: [{backendRefs: [{name: db-a, port: 5432}, {name: db-b, port: 1}]}]
"""
    resources = [d for d in docs() if d.kind != "TCPRoute"] + parse_documents(route)
    index = build_index(resources, 1)
    conds = {c.type: c for c in index.conditions[ResourceKey("TCPRoute", "default", "db")]}
    assert conds["Accepted"].status == "True"
    assert conds["ResolvedRefs"].status == "False"
    assert "db-b:1" in (conds["ResolvedRefs"].message or "")
    assert "connections is closed" in (conds["ResolvedRefs"].message or "")


def test_a_port_whose_routes_send_elsewhere_counts_what_its_callers_sent_it() -> None:
    """`vhost.<vhost>.route.called.*` stats (gossamer edges SVC) on every forwarding
    route of a port whose routes send to other Services; none on the others."""
    seen = set()
    for vh in snap_json(mesh_of(docs()))["routes"]["outbound"]["virtualHosts"]:
        name, _, port = vh["name"].rpartition(":")
        forwarding = [r for r in vh["routes"] if "route" in r]
        if not forwarding:
            continue
        sent = {c for r in forwarding for c in route_clusters(r)}
        split = bool(sent - {f"outbound|{port}||{name}"})
        assert {r.get("statPrefix") for r in forwarding} == ({"called"} if split else {None})
        assert all("statPrefix" not in r for r in vh["routes"] if "route" not in r)
        seen.add(split)
    assert seen == {True, False}
