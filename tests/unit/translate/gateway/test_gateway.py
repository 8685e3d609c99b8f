"""A gateway replica's snapshot: golden listeners, routes and clusters, and what the
edge adds (required JWT, trusted XFF hops, the 404 for unknown hosts, certificates
only where named, rate limits, faults and the body limit)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_pb2 import RouteConfiguration
from envoy.extensions.transport_sockets.tls.v3.secret_pb2 import Secret

from gossamer.contract.node import NodeMetadata
from gossamer.index import build_index
from gossamer.model import parse_document
from gossamer.model.gateway import MAX_BODY_KB, XFF_HOPS
from gossamer.translate import translate_mesh, translate_proxy
from gossamer.translate.protos import to_dict
from gossamer.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET
from tests.gateway_docs import (
    GW,
    gateway,
    grpc_route,
    http_route,
    parent,
    self_signed,
    service,
    tls_secret,
)
from tests.otlp import tracing_telemetry

GOLDEN = Path(__file__).parents[2] / "golden" / "gateway-edge.json"
CERTS = {h: self_signed(h) for h in ("a.example.com", "b.example.com")}


def _docs(**gateway_meta: Any) -> list[dict[str, Any]]:
    backend = [{"name": "db", "port": 5432}]
    return [
        service("v1"), service("v2"), service("db", "tcp", 5432),
        tls_secret("cert-a", *CERTS["a.example.com"]),
        tls_secret("cert-b", *CERTS["b.example.com"]),
        gateway(**gateway_meta),
        http_route("site", [parent("a"), parent("b")], [], [("v1", 50), ("v2", 50)]),
        http_route("redirect", [parent("http")], [], [], filters=[{
            "type": "RequestRedirect",
            "requestRedirect": {"scheme": "https", "port": 8443, "statusCode": 301}}]),
        {"apiVersion": f"{GW}/v1alpha2", "kind": "TCPRoute", "metadata": {"name": "db"},
         "spec": {"parentRefs": [parent("tcp")], "rules": [{"backendRefs": backend}]}},
        {"apiVersion": f"{GW}/v1alpha2", "kind": "TLSRoute", "metadata": {"name": "pass"},
         "spec": {"parentRefs": [parent("pass")], "hostnames": ["pass.example.com"],
                  "rules": [{"backendRefs": backend}]}},
    ]


def _edge(replica: str = "edge-0", gateway_name: str = "edge") -> NodeMetadata:
    return NodeMetadata.from_metadata(f"{replica}.default", {
        "service": gateway_name, "namespace": "default", "workload": replica,
        "inbound_port": 0, "app_port": 0, "outbound_port": 0,
        "inbound_address": "198.18.0.10", "gateway": gateway_name})


def _snapshot(docs: list[dict[str, Any]], replica: str = "edge-0") -> Any:
    mesh = translate_mesh(build_index([parse_document(d) for d in docs], 3))
    return translate_proxy(mesh, _edge(replica)).snapshot


def _listener(snapshot: Any, port: int) -> dict[str, Any]:
    return to_dict(Listener.FromString(snapshot.of(LISTENER)[f"gateway|{port}"].payload))


def _routes(snapshot: Any, port: int) -> dict[str, Any]:
    return to_dict(RouteConfiguration.FromString(
        snapshot.of(ROUTE)[f"gateway|{port}"].payload))


def test_golden_gateway_snapshot() -> None:
    snap = _snapshot(_docs())
    actual = {
        "listeners": {n: to_dict(Listener.FromString(r.payload))
                      for n, r in sorted(snap.of(LISTENER).items())},
        "routes": {n: to_dict(RouteConfiguration.FromString(r.payload))
                   for n, r in sorted(snap.of(ROUTE).items())},
        "clusters": sorted(snap.of(CLUSTER)), "endpoints": sorted(snap.of(ENDPOINT)),
        "secrets": sorted(snap.of(SECRET)),
    }
    if os.environ.get("GOSSAMER_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(actual, indent=2, sort_keys=True) + "\n")
    assert actual == json.loads(GOLDEN.read_text())


def test_each_https_listener_is_a_chain_by_sni_with_its_certificate() -> None:
    snap = _snapshot(_docs())
    chains = _listener(snap, 8443)["filterChains"]
    by_name = {c["name"]: c for c in chains}
    assert by_name["a"]["filterChainMatch"] == {"serverNames": ["a.example.com"]}
    tls = by_name["a"]["transportSocket"]["typedConfig"]["commonTlsContext"]
    assert [s["name"] for s in tls["tlsCertificateSdsSecretConfigs"]] == [
        "gateway-cert|default/cert-a"]
    passthrough = by_name["pass/default/pass"]
    assert passthrough["filterChainMatch"] == {"serverNames": ["pass.example.com"]}
    assert passthrough["filters"][0]["typedConfig"]["cluster"] == "outbound|5432||db.default"
    secret = Secret.FromString(snap.of(SECRET)["gateway-cert|default/cert-b"].payload)
    assert secret.tls_certificate.certificate_chain.inline_bytes == CERTS["b.example.com"][0]


def test_the_split_and_the_redirect_reuse_the_mesh_route_builder() -> None:
    snap = _snapshot(_docs())
    vhost = _routes(snap, 8443)["virtualHosts"][0]
    action = vhost["routes"][0]["route"]
    assert action["weightedClusters"]["clusters"] == [
        {"name": "outbound|80||v1.default", "weight": 50},
        {"name": "outbound|80||v2.default", "weight": 50}]
    assert action["retryPolicy"]["numRetries"] == 2
    redirect = _routes(snap, 8080)["virtualHosts"][0]["routes"][0]
    # MOVED_PERMANENTLY (301) is the enum's default: JSON leaves it out.
    assert redirect["redirect"] == {"schemeRedirect": "https", "portRedirect": 8443}


def test_hostnames_without_a_route_get_a_clear_404() -> None:
    snap = _snapshot(_docs())
    assert _routes(snap, 8443)["responseHeadersToRemove"] == ["x-gossamer-unreachable"]
    vhosts = _routes(snap, 8443)["virtualHosts"]
    assert [v["domains"] for v in vhosts] == [["a.example.com"], ["b.example.com"], ["*"]]
    body = vhosts[-1]["routes"][0]["directResponse"]
    assert body == {"status": 404, "body": {
        "inlineString": "gossamer: gateway default/edge has no route for this host\n"}}


def test_edge_settings_and_a_required_token() -> None:
    jwt = {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "RequestAuthentication",
           "metadata": {"name": "edge-jwt"},
           "spec": {"targetRef": {"group": GW, "kind": "Gateway", "name": "edge"},
                    "jwtRules": [{"issuer": "https://idp.example", "jwks": json.dumps(
                        {"keys": [{"kty": "oct", "k": "c2VjcmV0", "alg": "HS256"}]})}]}}
    plain = _listener(_snapshot(_docs()), 8080)
    hcm = plain["filterChains"][0]["filters"][0]["typedConfig"]
    assert "xffNumTrustedHops" not in hcm
    assert hcm["useRemoteAddress"] is True
    assert [f["name"] for f in hcm["httpFilters"]] == [
        "envoy.filters.http.tap", "envoy.filters.http.buffer", "envoy.filters.http.cors",
        "envoy.filters.http.fault", "envoy.filters.http.router"]
    # The default body limit, 1 MiB; WebSocket upgrades run the chain without it.
    assert hcm["httpFilters"][1]["typedConfig"]["maxRequestBytes"] == 1024 * 1024
    assert hcm["upgradeConfigs"][0]["filters"] == [
        f for f in hcm["httpFilters"] if f["name"] != "envoy.filters.http.buffer"]
    edge = _listener(_snapshot([*_docs(annotations={XFF_HOPS: "2"}), jwt]), 8080)
    hcm = edge["filterChains"][0]["filters"][0]["typedConfig"]
    assert hcm["xffNumTrustedHops"] == 2
    jwt_filter = hcm["httpFilters"][1]["typedConfig"]  # after the tap filter
    # Required: no allowMissing alternative.
    assert jwt_filter["rules"][0]["requires"] == {
        "providerName": "default/edge-jwt[jwt-0]"}


def test_a_gateway_node_without_its_gateway_has_no_listeners() -> None:
    snap = _snapshot(_docs()[:3])
    assert dict(snap.of(LISTENER)) == {}


@pytest.mark.parametrize("replica", ["edge-1", "edge-2"])
def test_replicas_share_one_config(replica: str) -> None:
    assert _snapshot(_docs(), replica).versions == _snapshot(_docs()).versions


def test_the_gateway_starts_traces_for_a_mesh_wide_telemetry() -> None:
    telemetry = tracing_telemetry("mesh", percent=100.0, address="127.0.0.1:4317")
    snap = _snapshot([*_docs(), telemetry])
    hcm = _listener(snap, 8080)["filterChains"][0]["filters"][0]["typedConfig"]
    assert hcm["tracing"]["randomSampling"] == {"value": 100.0}
    assert "tracing|127.0.0.1:4317" in snap.of(CLUSTER)
    assert "tracing" not in _listener(_snapshot(_docs()), 8080)["filterChains"][0][
        "filters"][0]["typedConfig"]


def _edge_policy(kind: str, spec: dict[str, Any], name: str = "edge-policy") -> dict[str, Any]:
    return {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": kind,
            "metadata": {"name": name},
            "spec": {"targetRef": {"group": GW, "kind": "Gateway", "name": "edge"}, **spec}}


def test_a_rate_limit_policy_on_the_gateway_limits_every_http_listener() -> None:
    limits = _edge_policy("RateLimitPolicy", {
        "local": {"requests": 100, "per": "1s"},
        "global": {"rules": [{"key": {"type": "clientIP"}, "requests": 5, "per": "1m"}]}})
    snap = _snapshot([*_docs(annotations={MAX_BODY_KB: "64"}), limits])
    for port, chain in ((8080, 0), (8443, 0), (8443, 1)):
        hcm = _listener(snap, port)["filterChains"][chain]["filters"][0]["typedConfig"]
        names = [f["name"] for f in hcm["httpFilters"]][1:]  # after the tap filter
        assert names[:3] == ["envoy.filters.http.local_ratelimit",
                             "envoy.filters.http.ratelimit", "envoy.filters.http.buffer"], (
            port, names)
        assert hcm["httpFilters"][3]["typedConfig"]["maxRequestBytes"] == 64 * 1024
        actions = hcm["httpFilters"][2]["typedConfig"]["rateLimits"][0]["actions"]
        assert actions[1] == {"remoteAddress": {}}
    # A Service of the Gateway's name is not limited by it.
    mesh = translate_mesh(build_index([parse_document(d) for d in [*_docs(), limits]], 3))
    assert dict(mesh.index.rate_limits) == {}


def test_a_fault_policy_on_the_gateway_covers_the_routes_that_forward() -> None:
    fault = _edge_policy("FaultPolicy", {"abort": {"httpStatus": 503, "percent": 10}})
    routes = _routes(_snapshot([*_docs(), fault]), 8080)
    by_name = {r["name"]: r for vh in routes["virtualHosts"] for r in vh["routes"]}
    # The HTTP listener has the redirect (no forwarding) and the 404: nothing to fault.
    assert all("typedPerFilterConfig" not in r for r in by_name.values())
    routes = _routes(_snapshot([*_docs(), fault]), 8443)
    forwarding = [r for vh in routes["virtualHosts"] for r in vh["routes"] if "route" in r]
    assert forwarding
    for r in forwarding:
        abort = r["typedPerFilterConfig"]["envoy.filters.http.fault"]["abort"]
        assert abort == {"httpStatus": 503,
                         "percentage": {"numerator": 100000, "denominator": "MILLION"}}


def test_grpcroutes_come_first_on_their_host_and_match_grpc_only() -> None:
    """A GRPCRoute sharing a host with an HTTPRoute takes only gRPC requests, and a
    streaming call is not held by the body limit's buffer."""
    rpc = grpc_route("rpc", [parent("http")], ["shop.example.com"], [
        {"matches": [{"method": {"service": "test.Echo", "method": "Say"}}],
         "backendRefs": [{"name": "v2", "port": 80}]},
        {"backendRefs": [{"name": "v1", "port": 80}]}])
    web = http_route("web", [parent("http")], ["shop.example.com"], [("v1", 1)])
    snap = _snapshot([*_docs(), rpc, web])
    [host] = [h for h in _routes(snap, 8080)["virtualHosts"]
              if h["name"] == "shop.example.com"]
    matches = [r["match"] for r in host["routes"]]
    assert matches == [{"path": "/test.Echo/Say", "grpc": {}}, {"prefix": "/", "grpc": {}},
                       {"prefix": "/"}]
    for route in host["routes"][:2]:
        assert route["typedPerFilterConfig"]["envoy.filters.http.buffer"]["disabled"]
    assert "typedPerFilterConfig" not in host["routes"][2]


def test_a_tapped_gateway_keeps_the_tap_filter_on_and_names_each_route() -> None:
    """Untapped, the tap filter is off on every virtual host and no header is added."""
    mesh = translate_mesh(build_index([parse_document(d) for d in _docs()], 3))
    for tapped in (False, True):
        snap = translate_proxy(mesh, _edge(), tapped=tapped).snapshot
        for host in _routes(snap, 8443)["virtualHosts"]:
            assert ("typedPerFilterConfig" in host) is not tapped, host
            for route in host["routes"]:
                added = [h["header"]["key"] for h in route.get("requestHeadersToAdd", [])]
                named = tapped and "route" in route
                assert added == (["x-gossamer-gateway-route"] if named else []), route
