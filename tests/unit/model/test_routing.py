"""HTTPRoute mirroring/CORS/rule names, GRPCRoute and TCPRoute at the model edge: full
documents parse and round-trip, and each invalid one is refused at apply with the
field path and a reason."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossamer.model import (
    GRPCRoute,
    HTTPRoute,
    InvalidResource,
    TCPRoute,
    dump_document,
    kind_for,
    parse_document,
)
from tests.model_helpers import DELETE, parses_or_is_rejected_cleanly, set_path

GATEWAY = "gateway.networking.k8s.io"


def http_doc() -> dict[str, Any]:
    return {"apiVersion": f"{GATEWAY}/v1", "kind": "HTTPRoute",
            "metadata": {"name": "echo", "namespace": "shop"},
            "spec": {"parentRefs": [{"name": "echo"}], "rules": [{
                "name": "main",
                "matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                "filters": [
                    {"type": "RequestMirror", "requestMirror": {
                        "backendRef": {"name": "shadow", "port": 80}, "percent": 30}},
                    {"type": "RequestMirror", "requestMirror": {
                        "backendRef": {"name": "audit", "port": 8080},
                        "fraction": {"numerator": 1, "denominator": 3}}},
                    {"type": "CORS", "cors": {
                        "allowOrigins": ["https://app.example.com", "https://*.example.org"],
                        "allowMethods": ["GET", "POST"], "allowHeaders": ["x-token"],
                        "exposeHeaders": ["x-backend"], "allowCredentials": True,
                        "maxAge": 600}},
                ],
                "backendRefs": [{"name": "echo", "port": 80}],
            }]}}


def grpc_doc() -> dict[str, Any]:
    return {"apiVersion": f"{GATEWAY}/v1", "kind": "GRPCRoute",
            "metadata": {"name": "rpc", "namespace": "shop"},
            "spec": {"parentRefs": [{"name": "rpc"}], "rules": [
                {"name": "shout",
                 "matches": [{"method": {"service": "test.Echo", "method": "Shout"},
                              "headers": [{"name": "x-canary", "value": "1"}]}],
                 "filters": [
                     {"type": "RequestHeaderModifier",
                      "requestHeaderModifier": {"set": [{"name": "x-v", "value": "2"}]}},
                     {"type": "ResponseHeaderModifier",
                      "responseHeaderModifier": {"remove": ["x-internal"]}},
                     {"type": "RequestMirror", "requestMirror": {
                         "backendRef": {"name": "rpc-shadow", "port": 80}, "percent": 5}},
                 ],
                 "backendRefs": [{"name": "rpc-v2", "port": 80}]},
                {"matches": [{"method": {"type": "RegularExpression",
                                         "service": "test\\..*", "method": "S.*"}}],
                 "backendRefs": [{"name": "rpc-v1", "port": 80, "weight": 9},
                                 {"name": "rpc-v2", "port": 80, "weight": 1}]},
            ]}}


def tcp_doc() -> dict[str, Any]:
    return {"apiVersion": f"{GATEWAY}/v1alpha2", "kind": "TCPRoute",
            "metadata": {"name": "db", "namespace": "shop"},
            "spec": {"parentRefs": [{"name": "db", "port": 5432}], "rules": [{
                "name": "split",
                "backendRefs": [{"name": "db-a", "port": 5432, "weight": 80},
                                {"name": "db-b", "port": 5432, "weight": 20}]}]}}


def refused(doc: dict[str, Any], path: str, *fragments: str) -> None:
    with pytest.raises(InvalidResource) as info:
        parse_document(doc)
    errors = {e.path: e.reason for e in info.value.errors}
    assert path in errors, errors
    for fragment in fragments:
        assert fragment.lower() in errors[path].lower(), (fragment, errors[path])


@pytest.mark.parametrize("make", [http_doc, grpc_doc, tcp_doc])
def test_full_documents_parse_and_round_trip(make: Any) -> None:
    resource = parse_document(make())
    assert parse_document(dump_document(resource)) == resource


def test_new_kinds_are_registered_with_aliases() -> None:
    assert kind_for("grpcroutes") is GRPCRoute
    assert kind_for("tcproute") is TCPRoute
    assert kind_for("httproute") is HTTPRoute


def test_mirror_shares() -> None:
    route = parse_document(http_doc())
    assert isinstance(route, HTTPRoute)
    mirrors = route.spec.rules[0].mirrors
    assert [m.per_million for m in mirrors] == [300_000, 333_333]
    doc = set_path(http_doc(), "spec.rules[0].filters[0].requestMirror.percent", DELETE)
    route = parse_document(doc)
    assert isinstance(route, HTTPRoute)
    assert route.spec.rules[0].mirrors[0].per_million == 1_000_000  # all by default


HTTP_REFUSALS = [
    ("spec.rules[0].filters[0].requestMirror.fraction",
     {"numerator": 1, "denominator": 10}, "spec.rules[0].filters[0].requestMirror.percent",
     ("mutually exclusive",)),
    ("spec.rules[0].filters[0].requestMirror.percent", 101,
     "spec.rules[0].filters[0].requestMirror.percent", ("100",)),
    ("spec.rules[0].filters[1].requestMirror.fraction.numerator", 4,
     "spec.rules[0].filters[1].requestMirror.fraction.numerator", ("denominator",)),
    ("spec.rules[0].filters[1].requestMirror.fraction.denominator", 0,
     "spec.rules[0].filters[1].requestMirror.fraction.denominator", ("1",)),
    ("spec.rules[0].filters[0].requestMirror.backendRef.kind", "Pod",
     "spec.rules[0].filters[0].requestMirror.backendRef.kind", ("Service",)),
    ("spec.rules[0].filters[0].requestMirror.backendRef.name", "Not_A_Name",
     "spec.rules[0].filters[0].requestMirror.backendRef.name", ("DNS label",)),
    ("spec.rules[0].filters[2].cors.allowOrigins", ["ftp//nope"],
     "spec.rules[0].filters[2].cors.allowOrigins[0]", ("scheme://host",)),
    ("spec.rules[0].filters[2].cors.allowOrigins", ["*", "https://a.b"],
     "spec.rules[0].filters[2].cors.allowOrigins", ("only entry",)),
    ("spec.rules[0].filters[2].cors.allowMethods", ["GET", "FETCH"],
     "spec.rules[0].filters[2].cors.allowMethods[1]", ("not an HTTP method",)),
    ("spec.rules[0].filters[2].cors.allowHeaders", ["bad header"],
     "spec.rules[0].filters[2].cors.allowHeaders[0]", ("header name",)),
    ("spec.rules[0].filters[2].cors.maxAge", 0,
     "spec.rules[0].filters[2].cors.maxAge", ("1",)),
    ("spec.rules[0].filters[2].cors.allowCredential", True,
     "spec.rules[0].filters[2].cors.allowCredential", ("unknown field",)),
    ("spec.rules[0].name", "Main_Rule", "spec.rules[0].name", ("rule name",)),
    ("spec.rules[0].filters[0]", {"type": "ExtensionRef", "extensionRef": {
        "group": "example.com", "kind": "Thing", "name": "x"}},
     "spec.rules[0].filters[0].type", ("ExtensionRef", "not supported")),
    ("spec.rules[0].filters[0]", {"type": "RequestMirror", "percent": 3},
     "spec.rules[0].filters[0].percent", ("unknown field",)),
]


@pytest.mark.parametrize(("at", "value", "path", "fragments"), HTTP_REFUSALS,
                         ids=[f"{p}={v!r}" for p, v, _, _ in HTTP_REFUSALS])
def test_httproute_refusals(at: str, value: Any, path: str, fragments: tuple[str, ...]) -> None:
    refused(set_path(http_doc(), at, value), path, *fragments)


def test_rule_names_are_unique_within_a_route() -> None:
    doc = http_doc()
    doc["spec"]["rules"].append({"name": "main", "backendRefs": [{"name": "echo"}]})
    refused(doc, "spec.rules", "'main'", "more than once")


def test_filters_at_most_once_except_mirror() -> None:
    doc = http_doc()
    cors = copy.deepcopy(doc["spec"]["rules"][0]["filters"][2])
    doc["spec"]["rules"][0]["filters"].append(cors)
    refused(doc, "spec.rules[0].filters", "CORS", "only once")
    doc = http_doc()
    mirror = copy.deepcopy(doc["spec"]["rules"][0]["filters"][0])
    doc["spec"]["rules"][0]["filters"].append(mirror)
    assert isinstance(parse_document(doc), HTTPRoute)  # several mirrors are fine


def test_mirror_and_redirect_are_exclusive() -> None:
    doc = http_doc()
    rule = doc["spec"]["rules"][0]
    rule["backendRefs"] = []
    rule["filters"] = [rule["filters"][0], {"type": "RequestRedirect",
                                            "requestRedirect": {"hostname": "b.example"}}]
    refused(doc, "spec.rules[0].filters", "RequestMirror", "RequestRedirect")


@pytest.mark.parametrize("make", [http_doc, grpc_doc, tcp_doc])
def test_parent_refs_are_unique(make: Any) -> None:
    doc = make()
    doc["spec"]["parentRefs"].append(copy.deepcopy(doc["spec"]["parentRefs"][0]))
    refused(doc, "spec.parentRefs[1]", "already a parent")
    doc["spec"]["parentRefs"][1]["port"] = 9999
    assert parse_document(doc).kind == doc["kind"]  # another port is another parent


def test_grpcroute_hostnames_are_validated() -> None:
    refused(set_path(grpc_doc(), "spec.hostnames", ["Not A Host"]), "spec.hostnames",
            "not a valid hostname")


def test_at_most_128_matches_over_all_rules() -> None:
    doc = http_doc()
    rule = {"matches": [{"path": {"value": f"/p{i}"}} for i in range(60)],
            "backendRefs": [{"name": "echo"}]}
    doc["spec"]["rules"] = [copy.deepcopy(rule) for _ in range(3)]
    refused(doc, "spec.rules", "128")


GRPC_REFUSALS = [
    ("spec.rules[0].matches[0].method", {}, "spec.rules[0].matches[0].method.service",
     ("one or both",)),
    ("spec.rules[0].matches[0].method.service", "test/Echo",
     "spec.rules[0].matches[0].method.service", ("gRPC service",)),
    ("spec.rules[0].matches[0].method.method", "Say.It",
     "spec.rules[0].matches[0].method.method", ("gRPC method",)),
    ("spec.rules[1].matches[0].method.method", "(unclosed",
     "spec.rules[1].matches[0].method.method", ("regular expression",)),
    ("spec.rules[0].matches[0].method.type", "Prefix",
     "spec.rules[0].matches[0].method.type", ("Exact",)),
    ("spec.rules[0].matches[0].headers[0].name", "bad name",
     "spec.rules[0].matches[0].headers[0].name", ("header name",)),
    ("spec.rules[0].filters[0]", {"type": "URLRewrite", "urlRewrite": {"hostname": "a.b"}},
     "spec.rules[0].filters[0].urlRewrite", ("unknown field",)),
    ("spec.rules[0].filters[0]", {"type": "CORS"}, "spec.rules[0].filters[0].type",
     ("not a GRPCRoute filter",)),
    ("spec.rules[0].filters[0]", {"type": "ExtensionRef", "extensionRef": {
        "group": "x.io", "kind": "K", "name": "n"}}, "spec.rules[0].filters[0].type",
     ("not supported",)),
    ("spec.rules[0].parentRefs", [], "spec.rules[0].parentRefs", ("unknown field",)),
    ("spec.parentRefs[0].kind", "Gateway", "spec.parentRefs[0].kind", ("Service",)),
    ("spec.rules[0].timeouts", {"request": "1s"}, "spec.rules[0].timeouts",
     ("unknown field",)),
]


@pytest.mark.parametrize(("at", "value", "path", "fragments"), GRPC_REFUSALS,
                         ids=[f"{p}={v!r}" for p, v, _, _ in GRPC_REFUSALS])
def test_grpcroute_refusals(at: str, value: Any, path: str, fragments: tuple[str, ...]) -> None:
    refused(set_path(grpc_doc(), at, value), path, *fragments)


def test_grpcroute_filter_repeats_and_rule_names() -> None:
    doc = grpc_doc()
    filters = doc["spec"]["rules"][0]["filters"]
    filters.append(copy.deepcopy(filters[0]))
    refused(doc, "spec.rules[0].filters", "RequestHeaderModifier", "only once")
    doc = grpc_doc()
    doc["spec"]["rules"][1]["name"] = "shout"
    refused(doc, "spec.rules", "more than once")


def test_grpcroute_needs_its_api_version() -> None:
    doc = grpc_doc()
    doc["apiVersion"] = f"{GATEWAY}/v1alpha2"
    refused(doc, "apiVersion", f"{GATEWAY}/v1")


TCP_REFUSALS = [
    ("spec.rules[0].backendRefs[0].port", None, "spec.rules[0].backendRefs[0].port",
     ("required",)),
    ("spec.rules[0].backendRefs", [], "spec.rules[0].backendRefs", ("at least 1",)),
    ("spec.rules[0].backendRefs[1].weight", -1, "spec.rules[0].backendRefs[1].weight",
     ("0",)),
    ("spec.rules[0].matches", [{"path": {"value": "/"}}], "spec.rules[0].matches",
     ("unknown field",)),
    ("spec.rules", [], "spec.rules", ("at least 1",)),
    ("spec.parentRefs[0].port", 0, "spec.parentRefs[0].port", ("1",)),
]


@pytest.mark.parametrize(("at", "value", "path", "fragments"), TCP_REFUSALS,
                         ids=[f"{p}={v!r}" for p, v, _, _ in TCP_REFUSALS])
def test_tcproute_refusals(at: str, value: Any, path: str, fragments: tuple[str, ...]) -> None:
    refused(set_path(tcp_doc(), at, value), path, *fragments)


def test_tcproute_takes_exactly_one_rule() -> None:
    doc = tcp_doc()
    doc["spec"]["rules"].append(copy.deepcopy(doc["spec"]["rules"][0]))
    refused(doc, "spec.rules", "exactly one rule")


def test_tcproute_needs_v1alpha2() -> None:
    doc = tcp_doc()
    doc["apiVersion"] = f"{GATEWAY}/v1"
    refused(doc, "apiVersion", "v1alpha2")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([http_doc, grpc_doc, tcp_doc]), st.data())
def test_mutated_documents_parse_or_are_refused_cleanly(make: Any, data: st.DataObject) -> None:
    doc = make()
    path = data.draw(st.sampled_from([
        "spec.rules[0].name", "spec.rules[0].backendRefs[0].port",
        "spec.rules[0].backendRefs[0].weight", "spec.parentRefs[0].name",
        "spec.rules[0].filters[0].requestMirror.percent",
        "spec.rules[0].matches[0].method.service"]))
    value = data.draw(st.one_of(st.none(), st.integers(-5, 2_000_000), st.text(max_size=8),
                                st.booleans(), st.lists(st.integers(), max_size=2)))
    try:
        mutated = set_path(doc, path, value)
    except (KeyError, IndexError, TypeError):
        return
    parses_or_is_rejected_cleanly(mutated)
