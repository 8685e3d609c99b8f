"""Gateway status as the Gateway API specifies it, and which routes attach where."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gossamer.contract.node import NodeMetadata
from gossamer.index import build_index
from gossamer.index.gateways import intersect
from gossamer.model import InvalidResource, ResourceKey, parse_document
from gossamer.translate import translate_mesh, translate_proxy
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

CERT = self_signed("a.example.com")


def _index(*docs: dict[str, Any]) -> Any:
    return build_index([parse_document(d) for d in docs])


def _listeners(index: Any, name: str = "edge") -> dict[str, dict[str, tuple[str, str]]]:
    status = index.status(ResourceKey("Gateway", "default", name))
    return {lst["name"]: {c["type"]: (c["status"], c["reason"]) for c in lst["conditions"]}
            for lst in status["listeners"]}


def _parents(index: Any, route: str, kind: str = "HTTPRoute") -> list[dict[str, Any]]:
    status = index.status(ResourceKey(kind, "default", route))
    return [{c["type"]: (c["status"], c["reason"]) for c in p["conditions"]}
            for p in status["parents"]]


def test_a_good_gateway_is_accepted_and_every_listener_programmed() -> None:
    index = _index(gateway(), tls_secret("cert-a", *CERT), tls_secret("cert-b", *CERT))
    status = index.status(ResourceKey("Gateway", "default", "edge"))
    conds = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conds == {"Accepted": ("True", "Accepted"), "Programmed": ("False", "Pending")}
    for lst in _listeners(index).values():
        assert lst == {"Accepted": ("True", "Accepted"), "Programmed": ("True", "Programmed"),
                       "ResolvedRefs": ("True", "ResolvedRefs"),
                       "Conflicted": ("False", "NoConflicts")}
    assert [len(v.serving) for v in index.gateways.values()] == [5]


def test_conflicts_and_bad_references_are_reported_per_listener() -> None:
    index = _index(tls_secret("cert", *CERT), tls_secret("other", *CERT, namespace="elsewhere"),
                   gateway(listeners=[
        {"name": "web", "port": 80, "protocol": "HTTP"},
        {"name": "raw", "port": 80, "protocol": "TCP"},
        {"name": "s1", "port": 443, "protocol": "HTTPS", "tls": {"certificateRefs": [
            {"name": "cert"}]}},
        {"name": "s2", "port": 443, "protocol": "TLS", "tls": {"mode": "Passthrough"}},
        {"name": "udp", "port": 53, "protocol": "UDP"},
        {"name": "gone", "port": 444, "protocol": "HTTPS", "tls": {"certificateRefs": [
            {"name": "missing"}]}},
        {"name": "far", "port": 445, "protocol": "HTTPS", "tls": {"certificateRefs": [
            {"name": "other", "namespace": "elsewhere"}]}},
        {"name": "cfg", "port": 446, "protocol": "HTTPS", "tls": {"certificateRefs": [
            {"name": "cert", "kind": "ConfigMap"}]}},
        {"name": "kinds", "port": 81, "protocol": "HTTP", "allowedRoutes": {"kinds": [
            {"kind": "TCPRoute"}]}}]))
    got = _listeners(index)
    assert got["web"]["Conflicted"] == ("False", "NoConflicts")
    assert got["raw"]["Conflicted"] == ("True", "ProtocolConflict")
    assert got["raw"]["Programmed"] == ("False", "Invalid")
    assert got["s2"]["Conflicted"] == ("True", "HostnameConflict")
    assert got["udp"]["Accepted"] == ("False", "UnsupportedProtocol")
    assert got["gone"]["ResolvedRefs"] == ("False", "InvalidCertificateRef")
    assert got["far"]["ResolvedRefs"] == ("False", "RefNotPermitted")
    assert got["cfg"]["ResolvedRefs"] == ("False", "InvalidCertificateRef")
    assert got["kinds"]["ResolvedRefs"] == ("False", "InvalidRouteKinds")
    [view] = index.gateways.values()
    assert [lst.listener.name for lst in view.serving] == ["web", "s1"]


def test_route_parent_status_says_why_a_route_does_not_attach() -> None:
    lone = gateway(listeners=[{"name": "a", "port": 80, "protocol": "HTTP",
                               "hostname": "a.example.com"}])
    other_ns = http_route("far", [parent() | {"namespace": "default"}], [], [("web", 1)])
    other_ns["metadata"]["namespace"] = "shop"
    index = _index(lone, service("web"),
                   http_route("ok", [parent("a")], [], [("web", 1)]),
                   http_route("nogw", [parent(name="nope")], [], [("web", 1)]),
                   http_route("nosection", [parent("b")], [], [("web", 1)]),
                   http_route("nohost", [parent()], ["b.example.com"], [("web", 1)]),
                   http_route("nobackend", [parent()], [], [("gone", 1)]),
                   other_ns)
    assert _parents(index, "ok") == [{"Accepted": ("True", "Accepted"),
                                      "ResolvedRefs": ("True", "ResolvedRefs")}]
    assert _parents(index, "nogw")[0]["Accepted"] == ("False", "NoMatchingParent")
    assert _parents(index, "nosection")[0]["Accepted"] == ("False", "NoMatchingParent")
    assert _parents(index, "nohost")[0]["Accepted"] == ("False", "NoMatchingListenerHostname")
    assert _parents(index, "nobackend")[0]["ResolvedRefs"] == ("False", "BackendNotFound")
    far = index.status(ResourceKey("HTTPRoute", "shop", "far"))["parents"][0]["conditions"]
    assert (far[0]["status"], far[0]["reason"]) == ("False", "NotAllowedByListeners")
    [view] = index.gateways.values()
    assert [r.metadata.name for r, _ in view.serving[0].routes] == ["nobackend", "ok"]
    # A route with a Gateway parent only does not attach to a Service of its name.
    assert index.routes_by_parent == {}


def test_a_gateway_of_another_class_is_not_served() -> None:
    doc = gateway()
    doc["spec"]["gatewayClassName"] = "istio"
    index = _index(doc)
    assert index.gateways == {}
    status = index.status(ResourceKey("Gateway", "default", "edge"))
    assert (status["conditions"][0]["status"], status["conditions"][0]["reason"]) == (
        "Unknown", "Pending")


def test_one_tcproute_per_tcp_listener_and_tlsroutes_by_hostname() -> None:
    tcp = [{"apiVersion": f"{GW}/v1alpha2", "kind": "TCPRoute", "metadata": {"name": n},
            "spec": {"parentRefs": [parent("tcp")],
                     "rules": [{"backendRefs": [{"name": "db", "port": 5432}]}]}}
           for n in ("first", "second")]
    tls = {"apiVersion": f"{GW}/v1alpha2", "kind": "TLSRoute", "metadata": {"name": "p"},
           "spec": {"parentRefs": [parent("pass")], "hostnames": ["other.example.com"],
                    "rules": [{"backendRefs": [{"name": "db", "port": 5432}]}]}}
    index = _index(gateway(), service("db", "tcp", 5432), *tcp, tls)
    [view] = index.gateways.values()
    by_name = {lst.listener.name: lst for lst in view.serving}
    assert [r.metadata.name for r, _ in by_name["tcp"].routes] == ["first"]
    assert _parents(index, "p", "TLSRoute")[0]["Accepted"] == (
        "False", "NoMatchingListenerHostname")


def test_a_grpcroute_attaches_to_http_and_https_listeners_only() -> None:
    backend = [{"backendRefs": [{"name": "rpc", "port": 80}]}]
    index = _index(gateway(), tls_secret("cert-a", *CERT), tls_secret("cert-b", *CERT),
                   service("rpc", "grpc"),
                   grpc_route("web", [parent("http"), parent("a")], [], backend),
                   grpc_route("raw", [parent("tcp")], [], backend))
    assert _parents(index, "web", "GRPCRoute") == [
        {"Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs")}] * 2
    assert _parents(index, "raw", "GRPCRoute")[0]["Accepted"] == (
        "False", "NotAllowedByListeners")
    # Only Gateway parents: no mesh condition says no Service port fits.
    conditions = index.status(ResourceKey("GRPCRoute", "default", "web"))["conditions"]
    assert [c["status"] for c in conditions] == ["True", "True"]
    [view] = index.gateways.values()
    attached = {lst.listener.name: [r.metadata.name for r, _ in lst.routes]
                for lst in view.serving}
    assert attached["http"] == attached["a"] == ["web"]
    assert attached["tcp"] == []
    kinds = index.status(ResourceKey("Gateway", "default", "edge"))["listeners"][0]
    assert [k["kind"] for k in kinds["supportedKinds"]] == ["HTTPRoute", "GRPCRoute"]


@pytest.mark.parametrize(("listener", "route", "served"), [
    (None, [], ("*",)),
    ("a.example.com", [], ("a.example.com",)),
    (None, ["a.example.com"], ("a.example.com",)),
    ("*.example.com", ["a.example.com", "a.b.example.com", "example.com"],
     ("a.example.com", "a.b.example.com")),
    ("a.example.com", ["*.example.com"], ("a.example.com",)),
    ("a.example.com", ["b.example.com"], ()),
    ("*.example.com", ["*.a.example.com"], ("*.a.example.com",)),
])
def test_hostname_intersection(listener: str | None, route: list[str],
                               served: tuple[str, ...]) -> None:
    assert intersect(listener, route) == served


_FAMILY = {"HTTP": "http", "HTTPS": "tls", "TLS": "tls", "TCP": "tcp"}


@st.composite
def listener_sets(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = []
    for i in range(draw(st.integers(1, 6))):
        protocol = draw(st.sampled_from(["HTTP", "HTTPS", "TLS", "TCP", "UDP"]))
        lis: dict[str, Any] = {"name": f"l{i}", "port": draw(st.sampled_from([80, 443])),
                               "protocol": protocol}
        host = draw(st.sampled_from([None, "a.example.com", "*.example.com"]))
        if host is not None and protocol not in ("TCP", "UDP"):
            lis["hostname"] = host
        if protocol == "HTTPS":
            lis["tls"] = {"certificateRefs": [{"name": draw(st.sampled_from(
                ["cert", "missing"]))}]}
        elif protocol == "TLS":
            lis["tls"] = {"mode": "Passthrough"}
        out.append(lis)
    return out


@settings(max_examples=150, deadline=None)
@given(listener_sets())
def test_any_valid_gateway_gets_conditions_and_a_consistent_config(
        listeners: list[dict[str, Any]]) -> None:
    """Valid but conflicting Gateways are taken: every listener gets its four
    conditions, the served ones of a port share a protocol family, and the gateway's
    snapshot passes the consistency check (translate_proxy raises if not)."""
    try:
        gw = parse_document(gateway(listeners=listeners))
    except InvalidResource:
        assume(False)
        raise
    route = http_route("r", [parent()], [], [("web", 1)])
    index = build_index([gw, parse_document(tls_secret("cert", *CERT)),
                         parse_document(service("web")), parse_document(route)])
    got = _listeners(index)
    assert set(got) == {lis["name"] for lis in listeners}
    assert all(set(c) == {"Accepted", "Programmed", "ResolvedRefs", "Conflicted"}
               for c in got.values())
    [view] = index.gateways.values()
    families: dict[int, set[str]] = {}
    for lst in view.serving:
        families.setdefault(lst.listener.port, set()).add(_FAMILY[lst.listener.protocol])
        assert got[lst.listener.name]["Programmed"] == ("True", "Programmed")
    assert all(len(f) == 1 for f in families.values())
    node = NodeMetadata.from_metadata("edge-0.default", {
        "service": "edge", "namespace": "default", "workload": "edge-0", "inbound_port": 0,
        "app_port": 0, "outbound_port": 0, "gateway": "edge"})
    translate_proxy(translate_mesh(index), node)


def _grant(namespace: str, from_kind: str, from_ns: str, to_kind: str,
           name: str | None = None) -> dict[str, Any]:
    return {"apiVersion": f"{GW}/v1beta1", "kind": "ReferenceGrant",
            "metadata": {"name": f"let-{from_ns}", "namespace": namespace},
            "spec": {"from": [{"group": GW, "kind": from_kind, "namespace": from_ns}],
                     "to": [{"group": "", "kind": to_kind, **({"name": name} if name else {})}]}}


def _in(namespace: str, doc: dict[str, Any]) -> dict[str, Any]:
    doc["metadata"]["namespace"] = namespace
    return doc


def _shop_route(backend_ns: str | None = None) -> dict[str, Any]:
    doc = _in("shop", http_route("web", [{**parent("http"), "namespace": "default"}], [],
                                 [("web", 1)]))
    if backend_ns:
        doc["spec"]["rules"][0]["backendRefs"][0]["namespace"] = backend_ns
    return doc


def _shop_parents(index: Any) -> dict[str, tuple[str, str]]:
    status = index.status(ResourceKey("HTTPRoute", "shop", "web"))
    [parent_status] = status["parents"]
    return {c["type"]: (c["status"], c["reason"]) for c in parent_status["conditions"]}


@pytest.mark.parametrize(("allowed", "namespaces", "accepted"), [
    ({}, [], False),  # Same, the default
    ({"from": "All"}, [], True),
    ({"from": "Selector", "selector": {"matchLabels": {"team": "shop"}}}, [], False),
    ({"from": "Selector", "selector": {"matchLabels": {"team": "shop"}}},
     [{"name": "shop", "labels": {"team": "shop"}}], True),
    ({"from": "Selector", "selector": {"matchLabels": {"team": "shop"}}},
     [{"name": "shop", "labels": {"team": "ads"}}], False),
    # Every namespace has its name label, with or without a Namespace resource.
    ({"from": "Selector", "selector": {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["shop"]}]}},
     [], True),
    ({"from": "Selector", "selector": {"matchExpressions": [
        {"key": "team", "operator": "DoesNotExist"}]}}, [], True),
])
def test_allowed_routes_namespaces(allowed: dict[str, Any], namespaces: list[dict[str, Any]],
                                   accepted: bool) -> None:
    gw = gateway(listeners=[{"name": "http", "port": 80, "protocol": "HTTP",
                             "allowedRoutes": {"namespaces": allowed}}])
    docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": meta} for meta in namespaces]
    index = _index(gw, _in("shop", service("web")), _shop_route(), *docs)
    expected = ("True", "Accepted") if accepted else ("False", "NotAllowedByListeners")
    assert _shop_parents(index)["Accepted"] == expected
    [view] = index.gateways.values()
    assert [len(lst.routes) for lst in view.serving] == [1 if accepted else 0]


@pytest.mark.parametrize(("grants", "permitted"), [
    ([], False),
    ([_grant("store", "HTTPRoute", "shop", "Service")], True),
    ([_grant("store", "HTTPRoute", "shop", "Service", "db")], True),
    ([_grant("store", "HTTPRoute", "shop", "Service", "other")], False),
    ([_grant("store", "GRPCRoute", "shop", "Service")], False),
    ([_grant("store", "HTTPRoute", "ads", "Service")], False),
    ([_grant("shop", "HTTPRoute", "shop", "Service")], False),  # the referrer's own
])
def test_a_backend_in_another_namespace_needs_a_reference_grant_there(
        grants: list[dict[str, Any]], permitted: bool) -> None:
    gw = gateway(listeners=[{"name": "http", "port": 80, "protocol": "HTTP",
                             "allowedRoutes": {"namespaces": {"from": "All"}}}])
    route = _shop_route("store")
    route["spec"]["rules"][0]["backendRefs"][0]["name"] = "db"
    index = _index(gw, _in("store", service("db")), route, *grants)
    resolved = _shop_parents(index)["ResolvedRefs"]
    assert resolved == (("True", "ResolvedRefs") if permitted
                        else ("False", "RefNotPermitted"))
    [view] = index.gateways.values()
    refused = view.refused.get(ResourceKey("HTTPRoute", "shop", "web"), frozenset())
    assert refused == (frozenset() if permitted else {("store", "db")})


@pytest.mark.parametrize(("grants", "permitted"), [
    ([], False),
    ([_grant("certs", "Gateway", "default", "Secret", "cert-a")], True),
    ([_grant("certs", "Gateway", "default", "Secret", "cert-b")], False),
    ([_grant("certs", "HTTPRoute", "default", "Secret")], False),
])
def test_a_certificate_in_another_namespace_needs_a_reference_grant_there(
        grants: list[dict[str, Any]], permitted: bool) -> None:
    gw = gateway(listeners=[{"name": "a", "port": 443, "protocol": "HTTPS",
                             "tls": {"certificateRefs": [{"name": "cert-a",
                                                          "namespace": "certs"}]}}])
    index = _index(gw, tls_secret("cert-a", *CERT, namespace="certs"), *grants)
    listener = _listeners(index)["a"]
    assert listener["ResolvedRefs"] == (("True", "ResolvedRefs") if permitted
                                        else ("False", "RefNotPermitted"))
    assert listener["Programmed"][0] == str(permitted)
