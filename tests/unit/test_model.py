"""Validation of the typed resources: what is accepted, and exactly how the rest is refused.

Every rejection is checked for the dotted field path it reports and for a reason
that names the problem, because that text is what `gossamer apply` shows users.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gossamer.model import (
    FieldError,
    HTTPRoute,
    InvalidResource,
    Service,
    Workload,
    dump_document,
    kind_for,
    parse_document,
    parse_documents,
)
from gossamer.model.duration import parse_duration_ms
from gossamer.model.httproute import FilterType, PathMatchType, ValueMatchType
from gossamer.model.regex import check_re2
from gossamer.model.service import Protocol
from gossamer.model.workload import Health

MESH = "mesh.gossamer.dev/v1alpha1"
GATEWAY = "gateway.networking.k8s.io/v1"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "resources.md"


# ---------------------------------------------------------------- documents


def service_doc() -> dict[str, Any]:
    return {
        "apiVersion": MESH,
        "kind": "Service",
        "metadata": {
            "name": "catalog",
            "namespace": "shop",
            "labels": {"app": "catalog", "gossamer.dev/tier": "backend"},
            "annotations": {"owner": "team-shop", "free text": "anything: goes"},
        },
        "spec": {
            "selector": {"app": "catalog"},
            "ports": [
                {"port": 80, "name": "http", "protocol": "http"},
                {"port": 9090, "name": "grpc", "protocol": "grpc"},
                {"port": 8081, "protocol": "http2"},
                {"port": 5432, "name": "db", "protocol": "tcp"},
            ],
        },
    }


def workload_doc() -> dict[str, Any]:
    return {
        "apiVersion": MESH,
        "kind": "Workload",
        "metadata": {"name": "catalog-1", "namespace": "shop", "labels": {"app": "catalog"}},
        "spec": {
            "service": "catalog",
            "address": "10.0.0.7",
            "port": 15006,
            "appPort": 8080,
            "health": "Healthy",
            "proxy": "sidecar~10.0.0.7~catalog-1.shop",
            "ttlSeconds": 30,
        },
    }


def route_doc() -> dict[str, Any]:
    """An HTTPRoute that uses every field at least once."""
    return {
        "apiVersion": GATEWAY,
        "kind": "HTTPRoute",
        "metadata": {"name": "catalog-canary", "namespace": "shop"},
        "spec": {
            "parentRefs": [
                {"group": "", "kind": "Service", "name": "catalog", "port": 80},
                {"name": "catalog-alias", "namespace": "shop", "sectionName": "http"},
            ],
            "hostnames": ["catalog.shop.example.com", "*.example.com"],
            "rules": [
                {
                    "name": "api",
                    "matches": [
                        {
                            "path": {"type": "PathPrefix", "value": "/api"},
                            "headers": [
                                {"name": "x-env", "value": "canary"},
                                {
                                    "type": "RegularExpression",
                                    "name": "user-agent",
                                    "value": "^curl/.*",
                                },
                            ],
                            "queryParams": [
                                {"name": "debug", "value": "1"},
                                {"type": "RegularExpression", "name": "v", "value": "[0-9]+"},
                            ],
                            "method": "GET",
                        },
                        {"path": {"type": "PathPrefix", "value": "/v2/api/"}},
                    ],
                    "filters": [
                        {
                            "type": "RequestHeaderModifier",
                            "requestHeaderModifier": {
                                "set": [{"name": "x-route", "value": "canary"}],
                                "add": [{"name": "x-trace", "value": "on"}],
                                "remove": ["x-internal"],
                            },
                        },
                        {
                            "type": "ResponseHeaderModifier",
                            "responseHeaderModifier": {
                                "set": [{"name": "cache-control", "value": "no-store"}]
                            },
                        },
                        {
                            "type": "URLRewrite",
                            "urlRewrite": {
                                "hostname": "catalog.internal",
                                "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"},
                            },
                        },
                    ],
                    "backendRefs": [
                        {"name": "catalog", "port": 80, "weight": 90},
                        {
                            "group": "core",
                            "kind": "Service",
                            "name": "catalog-v2",
                            "namespace": "shop",
                            "port": 8080,
                            "weight": 10,
                        },
                        {"name": "catalog-v3", "weight": 0},
                    ],
                    "timeouts": {"request": "10s", "backendRequest": "2s500ms"},
                },
                {
                    "name": "legacy",
                    "matches": [{"path": {"type": "Exact", "value": "/old"}}],
                    "filters": [
                        {
                            "type": "RequestRedirect",
                            "requestRedirect": {
                                "scheme": "https",
                                "hostname": "new.example.com",
                                "port": 8443,
                                "path": {"type": "ReplaceFullPath", "replaceFullPath": "/new"},
                                "statusCode": 301,
                            },
                        }
                    ],
                },
                {
                    "matches": [{"path": {"type": "RegularExpression", "value": "^/v[0-9]+/.*"}}],
                    "filters": [
                        {
                            "type": "URLRewrite",
                            "urlRewrite": {
                                "path": {"type": "ReplaceFullPath", "replaceFullPath": "/latest"}
                            },
                        }
                    ],
                    "backendRefs": [{"name": "catalog"}],
                },
                {"backendRefs": [{"name": "catalog"}]},
                {"name": "broken-on-purpose"},
            ],
        },
    }


def minimal_docs() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": MESH,
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"ports": [{"port": 80}]},
        },
        {
            "apiVersion": MESH,
            "kind": "Workload",
            "metadata": {"name": "web-1"},
            "spec": {"service": "web", "address": "::1", "port": 8080},
        },
        {
            "apiVersion": GATEWAY,
            "kind": "HTTPRoute",
            "metadata": {"name": "r"},
            "spec": {"parentRefs": [{"name": "web"}]},
        },
    ]


FULL = {"service": service_doc, "workload": workload_doc, "route": route_doc}


# ---------------------------------------------------------------- helpers


_SEGMENT = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


def _walk(path: str) -> Iterator[str | int]:
    pos = 0
    while pos < len(path):
        m = _SEGMENT.match(path, pos)
        assert m, f"bad test path {path!r}"
        yield m.group(1) if m.group(1) is not None else int(m.group(2))
        pos = m.end()


def edit(doc: dict[str, Any], path: str, value: Any = ..., *, delete: bool = False) -> None:
    """Set (or delete) the node at a dotted path such as `spec.rules[0].matches`."""
    parts = list(_walk(path))
    node: Any = doc
    for part in parts[:-1]:
        node = node[part]
    if delete:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value


def rejected(doc: object) -> InvalidResource:
    with pytest.raises(InvalidResource) as info:
        parse_document(doc)
    assert info.value.errors, "InvalidResource without errors"
    return info.value


def parse_route(doc: dict[str, Any]) -> HTTPRoute:
    route = parse_document(doc)
    assert isinstance(route, HTTPRoute)
    return route


def parse_service(doc: dict[str, Any]) -> Service:
    svc = parse_document(doc)
    assert isinstance(svc, Service)
    return svc


def parse_workload(doc: dict[str, Any]) -> Workload:
    wl = parse_document(doc)
    assert isinstance(wl, Workload)
    return wl


def assert_error(doc: object, path: str, *fragments: str) -> FieldError:
    """The document is refused with an error at exactly `path` naming every fragment."""
    exc = rejected(doc)
    at = [e for e in exc.errors if e.path == path]
    assert at, f"no error at {path!r}; got {[str(e) for e in exc.errors]}"
    reason = at[0].reason
    for fragment in fragments:
        assert fragment.lower() in reason.lower(), f"{fragment!r} not in {reason!r}"
    return at[0]


def rule_doc(rule: dict[str, Any]) -> dict[str, Any]:
    doc = route_doc()
    doc["spec"]["rules"] = [rule]
    return doc


def match_doc(match: dict[str, Any]) -> dict[str, Any]:
    return rule_doc({"matches": [match], "backendRefs": [{"name": "catalog"}]})


def filter_doc(*filters: dict[str, Any], **rule: Any) -> dict[str, Any]:
    body = {
        "matches": [{"path": {"type": "PathPrefix", "value": "/a"}}],
        "backendRefs": [{"name": "catalog"}],
    }
    body.update(rule)
    body["filters"] = list(filters)
    return rule_doc(body)


def header_filter(kind: str = "RequestHeaderModifier", **mod: Any) -> dict[str, Any]:
    field = kind[0].lower() + kind[1:]
    return {"type": kind, field: mod}


def timeouts_doc(**timeouts: Any) -> dict[str, Any]:
    return rule_doc({"backendRefs": [{"name": "catalog"}], "timeouts": timeouts})


# ---------------------------------------------------------------- acceptance


ALL_VALID = [
    pytest.param(service_doc(), id="service-full"),
    pytest.param(workload_doc(), id="workload-full"),
    pytest.param(route_doc(), id="route-full"),
    *(pytest.param(d, id=f"{d['kind'].lower()}-minimal") for d in minimal_docs()),
]


@pytest.mark.parametrize("doc", ALL_VALID)
def test_valid_documents_round_trip(doc: dict[str, Any]) -> None:
    resource = parse_document(copy.deepcopy(doc))
    assert resource.kind == doc["kind"]
    assert resource.api_version == doc["apiVersion"]
    again = parse_document(resource.to_document())
    assert again == resource
    # to_document is a fixed point after one pass (defaults made explicit).
    assert again.to_document() == resource.to_document()


@pytest.mark.parametrize("doc", ALL_VALID)
def test_valid_documents_round_trip_through_yaml(doc: dict[str, Any]) -> None:
    resource = parse_document(copy.deepcopy(doc))
    (again,) = parse_documents(yaml.safe_dump(resource.to_document()))
    assert again == resource


def test_full_documents_keep_what_was_written() -> None:
    svc = parse_document(service_doc())
    assert isinstance(svc, Service)
    assert svc.key == ("Service", "shop", "catalog")
    assert str(svc.key) == "Service/shop/catalog"
    assert [p.protocol for p in svc.spec.ports] == [
        Protocol.HTTP,
        Protocol.GRPC,
        Protocol.HTTP2,
        Protocol.TCP,
    ]
    grpc = svc.port(9090)
    assert grpc is not None
    assert grpc.name == "grpc"
    assert svc.port(1) is None

    wl = parse_document(workload_doc())
    assert isinstance(wl, Workload)
    assert wl.spec.app_port == 8080
    assert wl.spec.ttl_seconds == 30

    route = parse_document(route_doc())
    assert isinstance(route, HTTPRoute)
    api = route.spec.rules[0]
    assert api.matches[0].headers[1].type is ValueMatchType.REGULAR_EXPRESSION
    assert [f.type for f in api.filters] == [
        FilterType.REQUEST_HEADER_MODIFIER,
        FilterType.RESPONSE_HEADER_MODIFIER,
        FilterType.URL_REWRITE,
    ]
    assert [b.weight for b in api.backend_refs] == [90, 10, 0]
    assert api.timeouts is not None
    assert (api.timeouts.request_ms, api.timeouts.backend_request_ms) == (10_000, 2_500)
    redirect = route.spec.rules[1].filters[0].request_redirect
    assert redirect is not None
    assert redirect.status_code == 301
    assert redirect.port == 8443


def test_defaults() -> None:
    svc, wl, route = (parse_document(d) for d in minimal_docs())
    assert isinstance(svc, Service)
    assert isinstance(wl, Workload)
    assert isinstance(route, HTTPRoute)
    assert svc.metadata.namespace == "default"
    assert svc.metadata.labels == {}
    assert svc.metadata.resource_version is None
    assert svc.spec.selector == {}
    assert svc.spec.ports[0].protocol is Protocol.HTTP
    assert svc.spec.ports[0].name is None
    assert wl.spec.health is Health.HEALTHY
    assert (wl.spec.app_port, wl.spec.proxy, wl.spec.ttl_seconds) == (None, None, 0)
    (parent,) = route.spec.parent_refs
    assert (parent.group, parent.kind, parent.namespace, parent.port) == ("", "Service", None, None)
    assert route.spec.hostnames == []
    # No rules means one rule that matches everything and has no backends.
    (rule,) = route.spec.rules
    assert rule.matches == []
    assert rule.backend_refs == []
    assert rule.timeouts is None

    match = parse_route(match_doc({"path": {}}))
    path = match.spec.rules[0].matches[0].path
    assert path is not None
    assert (path.type, path.value) == (PathMatchType.PATH_PREFIX, "/")
    backend = parse_route(rule_doc({"backendRefs": [{"name": "x"}]}))
    ref = backend.spec.rules[0].backend_refs[0]
    assert (ref.weight, ref.port, ref.kind) == (1, None, "Service")
    redirect = parse_route(
        filter_doc({"type": "RequestRedirect", "requestRedirect": {}}, backendRefs=[])
    )
    red = redirect.spec.rules[0].filters[0].request_redirect
    assert red is not None
    assert red.status_code == 302
    assert red.scheme is None


def test_status_is_ignored_and_v1beta1_is_accepted() -> None:
    doc = route_doc()
    doc["status"] = {"conditions": [{"type": "Accepted", "status": "True"}], "junk": 1}
    doc["apiVersion"] = "gateway.networking.k8s.io/v1beta1"
    route = parse_document(doc)
    assert "status" not in route.to_document()
    assert route.api_version == "gateway.networking.k8s.io/v1beta1"


def test_dump_document_adds_status() -> None:
    svc = parse_document(service_doc())
    assert "status" not in dump_document(svc)
    doc = dump_document(svc, {"conditions": []})
    assert doc["status"] == {"conditions": []}
    assert parse_document(doc) == svc


def test_resource_version_and_with_revision() -> None:
    doc = service_doc()
    doc["metadata"]["resourceVersion"] = "41"
    svc = parse_document(doc)
    assert svc.metadata.resource_version == "41"
    newer = svc.with_revision(42)
    assert newer.metadata.resource_version == "42"
    assert newer.to_document()["metadata"]["resourceVersion"] == "42"
    assert svc.metadata.resource_version == "41"  # frozen: the original is unchanged


@pytest.mark.parametrize("name", ["a", "web", "web-v2", "a" * 63, "0abc", "x9"])
def test_accepted_service_names(name: str) -> None:
    doc = service_doc()
    doc["metadata"]["name"] = name
    assert parse_document(doc).metadata.name == name


@pytest.mark.parametrize("name", ["catalog-1.shop", "a.b.c", "a" * 253])
def test_workload_names_may_be_dns_subdomains(name: str) -> None:
    doc = workload_doc()
    doc["metadata"]["name"] = name
    assert parse_document(doc).metadata.name == name


@pytest.mark.parametrize(
    "labels",
    [
        {"app": "x"},
        {"example.com/app": "x"},
        {"a": ""},
        {"A_b.c-d": "V_1.2-3"},
        {"k" * 63: "v" * 63},
        {"a.b/" + "k" * 63: "v"},
    ],
)
def test_accepted_labels(labels: dict[str, str]) -> None:
    doc = service_doc()
    doc["metadata"]["labels"] = labels
    doc["spec"]["selector"] = labels
    svc = parse_service(doc)
    assert svc.metadata.labels == labels
    assert svc.spec.selector == labels


@pytest.mark.parametrize(
    "address", ["10.0.0.1", "0.0.0.0", "255.255.255.255", "::1", "fd00::7", "fe80::1%eth0"]
)
def test_accepted_addresses(address: str) -> None:
    doc = workload_doc()
    doc["spec"]["address"] = address
    assert parse_workload(doc).spec.address == address


@pytest.mark.parametrize(
    "method", ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]
)
def test_accepted_methods(method: str) -> None:
    route = parse_route(match_doc({"method": method}))
    assert route.spec.rules[0].matches[0].method == method


@pytest.mark.parametrize("weight", [0, 1, 1_000_000])
def test_accepted_weights(weight: int) -> None:
    route = parse_route(rule_doc({"backendRefs": [{"name": "a", "weight": weight}]}))
    assert route.spec.rules[0].backend_refs[0].weight == weight


@pytest.mark.parametrize("port", [1, 65535])
def test_port_bounds_are_inclusive(port: int) -> None:
    doc = service_doc()
    doc["spec"]["ports"] = [{"port": port}]
    assert parse_service(doc).spec.ports[0].port == port


@pytest.mark.parametrize("ttl", [0, 86400])
def test_ttl_bounds(ttl: int) -> None:
    doc = workload_doc()
    doc["spec"]["ttlSeconds"] = ttl
    assert parse_workload(doc).spec.ttl_seconds == ttl


def test_replace_prefix_match_allowed_with_prefix_matches_or_no_matches() -> None:
    rewrite = {
        "type": "URLRewrite",
        "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v2"}},
    }
    parse_document(filter_doc(rewrite))
    parse_document(filter_doc(rewrite, matches=[]))
    # A path match with no type defaults to PathPrefix.
    parse_document(filter_doc(rewrite, matches=[{"path": {"value": "/x"}}]))
    redirect = {
        "type": "RequestRedirect",
        "requestRedirect": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}},
    }
    parse_document(filter_doc(redirect, backendRefs=[]))


def test_timeouts_equal_and_zero_request() -> None:
    parse_document(timeouts_doc(request="2s", backendRequest="2000ms"))
    # request 0s disables the overall timeout, so any per-try timeout fits.
    route = parse_route(timeouts_doc(request="0s", backendRequest="1h"))
    timeouts = route.spec.rules[0].timeouts
    assert timeouts is not None
    assert (timeouts.request_ms, timeouts.backend_request_ms) == (0, 3_600_000)
    only_backend = parse_route(timeouts_doc(backendRequest="5s"))
    only = only_backend.spec.rules[0].timeouts
    assert only is not None
    assert only.request_ms is None
    assert only.backend_request_ms == 5_000


# ---------------------------------------------------------------- document level


@pytest.mark.parametrize("doc", [[], [service_doc()], "Service", 42, None, True, 1.5])
def test_non_mapping_documents(doc: object) -> None:
    err = assert_error(doc, "", "mapping")
    assert str(err) == err.reason  # an empty path prints as the reason alone


@pytest.mark.parametrize(
    ("kind", "fragments"),
    [
        ("Pod", ("unknown kind", "'Pod'", "Service, Workload, HTTPRoute")),
        ("service", ("unknown kind",)),
        ("", ("unknown kind",)),
    ],
)
def test_unknown_kind(kind: str, fragments: tuple[str, ...]) -> None:
    doc = service_doc()
    doc["kind"] = kind
    assert_error(doc, "kind", *fragments)


@pytest.mark.parametrize("kind", [None, 3, ["Service"], {"k": "Service"}])
def test_missing_or_non_string_kind(kind: object) -> None:
    doc = service_doc()
    if kind is None:
        del doc["kind"]
    else:
        doc["kind"] = kind
    assert_error(doc, "kind", "required", "Service")


@pytest.mark.parametrize(
    ("factory", "api_version", "wanted"),
    [
        (service_doc, "v1", MESH),
        (service_doc, GATEWAY, MESH),
        (workload_doc, "mesh.gossamer.dev/v1", MESH),
        (route_doc, MESH, GATEWAY),
        (route_doc, "gateway.networking.k8s.io/v1alpha2", GATEWAY),
        (route_doc, None, GATEWAY),
        (route_doc, ["x"], GATEWAY),
    ],
)
def test_bad_api_version(
    factory: Callable[[], dict[str, Any]], api_version: object, wanted: str
) -> None:
    doc = factory()
    if api_version is None:
        del doc["apiVersion"]
    else:
        doc["apiVersion"] = api_version
    exc = rejected(doc)
    assert exc.errors == [FieldError("apiVersion", f"{doc['kind']} needs apiVersion {wanted}")]
    assert exc.kind == doc["kind"]
    assert exc.name == doc["metadata"]["name"]


@pytest.mark.parametrize("factory", FULL.values(), ids=list(FULL))
def test_missing_sections(factory: Callable[[], dict[str, Any]]) -> None:
    for section in ("metadata", "spec"):
        doc = factory()
        del doc[section]
        assert_error(doc, section, "required")
        doc[section] = ["not", "a", "mapping"]
        assert_error(doc, section, "dictionary")


def _mapping_paths(node: Any, path: str = "") -> Iterator[str]:
    """Every mapping in a document that has a fixed schema (not labels, annotations, selector)."""
    if isinstance(node, dict):
        if path.rsplit(".", 1)[-1] not in ("labels", "annotations", "selector"):
            yield path
            for key, value in node.items():
                yield from _mapping_paths(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _mapping_paths(value, f"{path}[{i}]")


UNKNOWN_FIELD_CASES = [
    pytest.param(factory, path, id=f"{name}:{path or '<root>'}")
    for name, factory in FULL.items()
    for path in _mapping_paths(factory())
]


@pytest.mark.parametrize(("factory", "path"), UNKNOWN_FIELD_CASES)
def test_unknown_field_anywhere(factory: Callable[[], dict[str, Any]], path: str) -> None:
    doc = factory()
    node: Any = doc
    for part in _walk(path):
        node = node[part]
    node["bogusField"] = True
    where = f"{path}.bogusField" if path else "bogusField"
    exc = rejected(doc)
    assert exc.errors == [FieldError(where, "unknown field")]


def test_unknown_field_count_matches_schema() -> None:
    # Guard against the parametrization above silently shrinking.
    assert len(UNKNOWN_FIELD_CASES) >= 50


def test_misspelled_field_is_unknown_not_ignored() -> None:
    doc = route_doc()
    doc["spec"]["rules"][0]["backendRef"] = doc["spec"]["rules"][0].pop("backendRefs")
    assert_error(doc, "spec.rules[0].backendRef", "unknown field")


def test_several_errors_are_all_reported() -> None:
    doc = service_doc()
    doc["metadata"]["namespace"] = "Bad_NS"
    doc["spec"]["ports"][0]["port"] = 0
    doc["spec"]["ports"][1]["protocol"] = "udp"
    exc = rejected(doc)
    assert {e.path for e in exc.errors} == {
        "metadata.namespace",
        "spec.ports[0].port",
        "spec.ports[1].protocol",
    }


def test_error_message_format() -> None:
    doc = route_doc()
    doc["metadata"]["name"] = "x"
    doc["spec"]["rules"][0]["matches"][0]["path"]["value"] = "api"
    exc = rejected(doc)
    assert (exc.kind, exc.name) == ("HTTPRoute", "x")
    assert str(exc) == (
        "invalid HTTPRoute 'x': spec.rules[0].matches[0].path.value: "
        "an Exact or PathPrefix path must start with '/'"
    )
    assert isinstance(exc, ValueError)
    assert str(InvalidResource([FieldError("", "boom")])) == "invalid document: boom"
    assert str(InvalidResource([FieldError("a", "x"), FieldError("b", "y")], kind="Service")) == (
        "invalid Service: a: x; b: y"
    )


# ---------------------------------------------------------------- metadata


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("Web", "lowercase"),
        ("web_1", "lowercase"),
        ("-web", "starting and ending"),
        ("web-", "starting and ending"),
        ("web\n", "lowercase"),
        ("a..b", "lowercase"),
        ("", "at least 1"),
        ("a" * 254, "at most 253"),
    ],
)
def test_bad_names(name: str, fragment: str) -> None:
    doc = workload_doc()
    doc["metadata"]["name"] = name
    assert_error(doc, "metadata.name", fragment)


@pytest.mark.parametrize("name", ["catalog.shop", "a" * 64])
def test_service_name_must_be_dns_label(name: str) -> None:
    doc = service_doc()
    doc["metadata"]["name"] = name
    assert_error(doc, "metadata.name", "Service name must be a DNS label")


@pytest.mark.parametrize(
    ("namespace", "fragment"),
    [
        ("Shop", "DNS label"),
        ("shop.eu", "DNS label"),
        ("-shop", "DNS label"),
        ("shop\n", "DNS label"),
        ("", "at least 1"),
        ("a" * 64, "at most 63"),
        (7, "valid string"),
    ],
)
def test_bad_namespaces(namespace: object, fragment: str) -> None:
    doc = service_doc()
    doc["metadata"]["namespace"] = namespace
    assert_error(doc, "metadata.namespace", fragment)


@pytest.mark.parametrize(
    "key",
    [
        "-app",
        "app-",
        "has space",
        "Example.com/app",
        "a/b/c",
        "/app",
        "app/",
        "",
        "k" * 64,
        "a" * 300 + "/" + "k" * 20,
        "app\n",
    ],
)
@pytest.mark.parametrize("where", ["metadata.labels", "spec.selector"])
def test_bad_label_keys(key: str, where: str) -> None:
    doc = service_doc()
    edit(doc, where, {key: "v"})
    assert_error(doc, where, "label key", repr(key))


@pytest.mark.parametrize("value", ["-v", "v-", "has space", "a/b", "v" * 64, "v\n"])
@pytest.mark.parametrize("where", ["metadata.labels", "spec.selector"])
def test_bad_label_values(value: str, where: str) -> None:
    doc = service_doc()
    edit(doc, where, {"app": value})
    assert_error(doc, where, "label value", repr(value), "'app'")


def test_label_values_must_be_strings() -> None:
    doc = service_doc()
    doc["metadata"]["labels"] = {"replicas": 3}
    assert_error(doc, "metadata.labels.replicas", "valid string")
    doc = service_doc()
    doc["metadata"]["annotations"] = {"note": None}
    assert_error(doc, "metadata.annotations.note", "valid string")


def test_resource_version_must_be_a_string() -> None:
    doc = service_doc()
    doc["metadata"]["resourceVersion"] = 12
    assert_error(doc, "metadata.resourceVersion", "valid string")


@pytest.mark.parametrize("version", ["abc", "-1", " 4", "4 ", "1.0", "", "\uff14\uff12", "1" * 19])
def test_resource_version_must_be_a_revision_number(version: str) -> None:
    # The API turns it into the store's expected revision, an integer.
    doc = service_doc()
    doc["metadata"]["resourceVersion"] = version
    assert_error(doc, "metadata.resourceVersion", repr(version), "not a revision")


@pytest.mark.parametrize("version", ["0", "1", "42", "9" * 18])
def test_resource_version_accepts_revision_numbers(version: str) -> None:
    doc = service_doc()
    doc["metadata"]["resourceVersion"] = version
    assert parse_service(doc).metadata.resource_version == version


# ---------------------------------------------------------------- Service


@pytest.mark.parametrize(
    ("port", "fragment"),
    [
        (0, "greater than or equal to 1"),
        (-80, "greater than or equal to 1"),
        (65536, "less than or equal to 65535"),
        ("http", "valid integer"),
        (80.5, "valid integer"),
        (None, "valid integer"),
    ],
)
def test_service_port_out_of_range(port: object, fragment: str) -> None:
    doc = service_doc()
    doc["spec"]["ports"][2]["port"] = port
    assert_error(doc, "spec.ports[2].port", fragment)


def test_duplicate_service_ports() -> None:
    doc = service_doc()
    doc["spec"]["ports"].append({"port": 9090, "protocol": "tcp"})
    assert_error(doc, "spec.ports", "port 9090", "twice")


@pytest.mark.parametrize("protocol", ["udp", "HTTP", "https", "", 1])
def test_unknown_protocol(protocol: object) -> None:
    doc = service_doc()
    doc["spec"]["ports"][1]["protocol"] = protocol
    assert_error(doc, "spec.ports[1].protocol", "'http', 'http2', 'grpc' or 'tcp'")


def test_service_needs_ports() -> None:
    doc = service_doc()
    doc["spec"]["ports"] = []
    assert_error(doc, "spec.ports", "at least 1")
    del doc["spec"]["ports"]
    assert_error(doc, "spec.ports", "required")
    doc["spec"]["ports"] = [{"port": p} for p in range(1, 34)]
    assert_error(doc, "spec.ports", "at most 32")


@pytest.mark.parametrize("name", ["HTTP", "web_port", "a" * 64, "-x"])
def test_bad_service_port_name(name: str) -> None:
    doc = service_doc()
    doc["spec"]["ports"][0]["name"] = name
    exc = rejected(doc)
    assert [e.path for e in exc.errors] == ["spec.ports[0].name"]


# ---------------------------------------------------------------- Workload


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.300",
        "10.0.0",
        "catalog.shop",
        "",
        " 10.0.0.1",
        "10.0.0.1\n",
        "10.0.0.1/32",
        "10.0.0.1:80",
        "::g",
        "10.0.0.1%eth0",
    ],
)
def test_bad_ip_address(address: str) -> None:
    doc = workload_doc()
    doc["spec"]["address"] = address
    assert_error(doc, "spec.address", repr(address), "not an IPv4 or IPv6 address")


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("port", 0, "greater than or equal to 1"),
        ("port", 70000, "less than or equal to 65535"),
        ("appPort", 0, "greater than or equal to 1"),
        ("appPort", 65536, "less than or equal to 65535"),
        ("ttlSeconds", -1, "greater than or equal to 0"),
        ("ttlSeconds", 86401, "less than or equal to 86400"),
        ("health", "healthy", "'Healthy', 'Unhealthy' or 'Unknown'"),
        ("health", "Dead", "'Healthy', 'Unhealthy' or 'Unknown'"),
        ("service", "Catalog", "Service name"),
        ("service", "catalog.shop", "Service name"),
        ("service", "", "Service name"),
        ("proxy", 5, "valid string"),
    ],
)
def test_bad_workload_fields(field: str, value: object, fragment: str) -> None:
    doc = workload_doc()
    doc["spec"][field] = value
    assert_error(doc, f"spec.{field}", fragment)


@pytest.mark.parametrize("field", ["service", "address", "port"])
def test_workload_required_fields(field: str) -> None:
    doc = workload_doc()
    del doc["spec"][field]
    assert_error(doc, f"spec.{field}", "required")


# ---------------------------------------------------------------- HTTPRoute: parents, hostnames


@pytest.mark.parametrize(
    ("ref", "fragment"),
    [
        ({"name": "gw", "kind": "Gateway"}, "kind Service"),
        ({"name": "gw", "group": "gateway.networking.k8s.io"}, "got group"),
        ({"name": "gw", "group": "gateway.networking.k8s.io", "kind": "Gateway"}, "'Gateway'"),
        ({"name": "gw", "kind": "service"}, "'service'"),
    ],
)
def test_parent_ref_must_be_a_service(ref: dict[str, Any], fragment: str) -> None:
    doc = route_doc()
    doc["spec"]["parentRefs"][1] = ref
    assert_error(doc, "spec.parentRefs[1].kind", "parent is a Service", fragment)


def test_parent_ref_core_group_is_a_service() -> None:
    doc = route_doc()
    doc["spec"]["parentRefs"] = [{"group": "core", "kind": "Service", "name": "catalog"}]
    assert parse_route(doc).spec.parent_refs[0].name == "catalog"


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        ("spec.parentRefs", [], "at least 1"),
        ("spec.parentRefs[0].port", 0, "greater than or equal to 1"),
        ("spec.parentRefs[0].port", 65536, "less than or equal to 65535"),
        ("spec.parentRefs[0].name", "", "at least 1"),
        ("spec.parentRefs[0].name", "a" * 64, "at most 63"),
        ("spec.parentRefs[0]", "catalog", "dictionary"),
        ("spec.parentRefs", {"name": "catalog"}, "valid list"),
    ],
)
def test_bad_parent_refs(path: str, value: object, fragment: str) -> None:
    doc = route_doc()
    edit(doc, path, value)
    assert_error(doc, path, fragment)


def test_parent_refs_required() -> None:
    doc = route_doc()
    del doc["spec"]["parentRefs"]
    assert_error(doc, "spec.parentRefs", "required")


@pytest.mark.parametrize(
    "host",
    ["Catalog.example.com", "-a.com", "a..com", "a.com.", "*", "foo.*.com", "a_b.com", "a.com\n"],
)
def test_bad_hostnames(host: str) -> None:
    doc = route_doc()
    doc["spec"]["hostnames"] = ["ok.example.com", host]
    assert_error(doc, "spec.hostnames", repr(host), "not a valid hostname")


# ---------------------------------------------------------------- HTTPRoute: matches


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ({"type": "PathPrefix", "value": "api"}, "must start with '/'"),
        ({"type": "Exact", "value": "api/v1"}, "must start with '/'"),
        ({"value": ""}, "must start with '/'"),
        ({"type": "Exact", "value": "/a//b"}, "normalized"),
        ({"type": "PathPrefix", "value": "/a/../b"}, "normalized"),
        ({"type": "PathPrefix", "value": "/a/./b"}, "normalized"),
        ({"type": "Exact", "value": "/a?b=1"}, "query"),
        ({"type": "Exact", "value": "/a#top"}, "fragment"),
        ({"type": "Exact", "value": "/" + "a" * 1024}, "at most 1024"),
    ],
)
def test_bad_path_values(path: dict[str, Any], fragment: str) -> None:
    assert_error(match_doc({"path": path}), "spec.rules[0].matches[0].path.value", fragment)


@pytest.mark.parametrize("kind", ["Prefix", "exact", "Regex", ""])
def test_bad_path_match_type(kind: str) -> None:
    assert_error(
        match_doc({"path": {"type": kind, "value": "/"}}),
        "spec.rules[0].matches[0].path.type",
        "'Exact', 'PathPrefix' or 'RegularExpression'",
    )


REGEX_REJECTIONS = [
    pytest.param("/(?=api)", "lookahead", id="lookahead"),
    pytest.param("/api(?!/internal)", "lookahead", id="negative-lookahead"),
    pytest.param("(?<=/)api", "lookbehind", id="lookbehind"),
    pytest.param("(?<!x)api", "lookbehind", id="negative-lookbehind"),
    pytest.param(r"/(a+)/\1", "backreference", id="backreference"),
    pytest.param(r"/(?P<seg>\w+)/(?P=seg)", "named backreference", id="named-backreference"),
    pytest.param("/a*+", "possessive", id="possessive"),
    pytest.param("/(?>a|ab)c", "atomic", id="atomic-group"),
    pytest.param("/(api", "invalid regular expression", id="unbalanced"),
    pytest.param("/[a-", "invalid regular expression", id="open-class"),
    pytest.param("*api", "invalid regular expression", id="nothing-to-repeat"),
    # RE2's repetition limit is 1000, nested counts multiplied (Envoy: a NACK).
    pytest.param("a{1001}", "invalid repetition size", id="repeat-over-1000"),
    pytest.param("(a{1000}){1000}", "invalid repetition size", id="nested-repeats"),
    pytest.param(r"^(?:[a-z0-9]{1,100}\.){1,20}$", "invalid repetition size",
                 id="nested-counted-repeats"),
    # Within RE2's limits but a program larger than the sidecars allow.
    pytest.param(".{1000}" * 5, "RE2 program size is 10004, more than 8192",
                 id="program-too-large"),
    # Envoy's RE2 reads patterns as Latin-1: no code points above U+00FF.
    pytest.param(r"\x{100}", "invalid escape sequence", id="escape-above-latin-1"),
    pytest.param("a" * 1025, "longer than 1024", id="too-long"),
]


@pytest.mark.parametrize(("pattern", "fragment"), REGEX_REJECTIONS)
def test_bad_regular_expressions(pattern: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        check_re2(pattern)
    in_path = match_doc({"path": {"type": "RegularExpression", "value": pattern}})
    if len(pattern) <= 1024:
        assert_error(in_path, "spec.rules[0].matches[0].path.value", fragment)
    else:
        assert_error(in_path, "spec.rules[0].matches[0].path.value", "at most 1024")
    in_header = match_doc(
        {
            "headers": [
                {"name": "x-a", "value": "1"},
                {"type": "RegularExpression", "name": "x-b", "value": pattern},
            ]
        }
    )
    assert_error(in_header, "spec.rules[0].matches[0].headers[1].value", fragment)
    if len(pattern) <= 1024:
        in_query = match_doc(
            {"queryParams": [{"type": "RegularExpression", "name": "q", "value": pattern}]}
        )
        assert_error(in_query, "spec.rules[0].matches[0].queryParams[0].value", fragment)


@pytest.mark.parametrize(
    "pattern",
    [
        "^/api/v[0-9]+/.*$",
        r"/users/\d+",
        r"\\1",
        "(?i)/API",
        "(?:a|b)+",
        r"/(?P<id>[^/]+)",
        "a{2,5}",
        "[a-z]+",
        # What Python's re refused and RE2 (so Envoy) takes: a literal brace, deep groups.
        "a{99999999999}",
        "(" * 510 + ")" * 510,
        # Program size 3011: Envoy's default limit of 100 refused it; the sidecars'
        # runtime allows MAX_PROGRAM_SIZE (tests/envoy/test_apply_validation.py).
        r"^(?:[a-z0-9]{1,100}\.){1,10}$",
    ],
)
def test_re2_compatible_regular_expressions(pattern: str) -> None:
    assert check_re2(pattern) == pattern
    route = parse_route(match_doc({"path": {"type": "RegularExpression", "value": pattern}}))
    path = route.spec.rules[0].matches[0].path
    assert path is not None
    assert path.value == pattern


def test_regular_expression_path_need_not_start_with_slash() -> None:
    parse_document(match_doc({"path": {"type": "RegularExpression", "value": ".*/health"}}))


def test_exact_header_value_is_not_a_regex() -> None:
    parse_document(
        match_doc(
            {
                "headers": [{"name": "x", "value": "(?=not a regex"}],
                "queryParams": [{"name": "q", "value": "(?=nor this"}],
            }
        )
    )


@pytest.mark.parametrize("method", ["get", "FETCH", "", "G ET"])
def test_bad_method(method: str) -> None:
    assert_error(
        match_doc({"method": method}),
        "spec.rules[0].matches[0].method",
        repr(method),
        "not an HTTP method",
        "GET",
    )


def test_duplicate_header_matches_are_case_insensitive() -> None:
    doc = match_doc({"headers": [{"name": "X-Env", "value": "a"}, {"name": "x-env", "value": "b"}]})
    assert_error(doc, "spec.rules[0].matches[0].headers", "header name", "only once")


def test_duplicate_query_param_matches() -> None:
    doc = match_doc(
        {"queryParams": [{"name": "page", "value": "1"}, {"name": "page", "value": "2"}]}
    )
    assert_error(doc, "spec.rules[0].matches[0].queryParams", "parameter", "only once")
    # Query parameter names are case-sensitive, so these are two different parameters.
    parse_document(
        match_doc({"queryParams": [{"name": "Page", "value": "1"}, {"name": "page", "value": "2"}]})
    )


@pytest.mark.parametrize("name", ["x env", "x:env", "", "x-env\n", "é", "a" * 257])
def test_bad_header_match_name(name: str) -> None:
    doc = match_doc({"headers": [{"name": name, "value": "1"}]})
    assert_error(doc, "spec.rules[0].matches[0].headers[0].name", "not a valid HTTP header name")


def test_header_match_needs_name_and_value() -> None:
    doc = match_doc({"headers": [{"name": "x"}]})
    assert_error(doc, "spec.rules[0].matches[0].headers[0].value", "required")
    doc = match_doc({"headers": [{"value": "x"}]})
    assert_error(doc, "spec.rules[0].matches[0].headers[0].name", "required")
    doc = match_doc({"queryParams": [{"name": "", "value": "x"}]})
    assert_error(doc, "spec.rules[0].matches[0].queryParams[0].name", "at least 1")


def test_too_many_header_matches() -> None:
    doc = match_doc({"headers": [{"name": f"x-{i}", "value": "1"} for i in range(17)]})
    assert_error(doc, "spec.rules[0].matches[0].headers", "at most 16")


# ---------------------------------------------------------------- HTTPRoute: filters


@pytest.mark.parametrize(
    ("mod", "fragment"),
    [
        ({"set": [{"name": "X-A", "value": "1"}], "remove": ["x-a"]}, "only once"),
        (
            {"set": [{"name": "x-a", "value": "1"}], "add": [{"name": "X-A", "value": "2"}]},
            "only once",
        ),
        ({"add": [{"name": "x-a", "value": "1"}, {"name": "x-a", "value": "2"}]}, "only once"),
        ({"remove": ["x-a", "X-A"]}, "only once"),
        ({"set": [{"name": "Host", "value": "evil"}]}, "'host' cannot be modified"),
        ({"remove": ["host"]}, "cannot be modified"),
    ],
)
@pytest.mark.parametrize("kind", ["RequestHeaderModifier", "ResponseHeaderModifier"])
def test_header_modifier_conflicts(kind: str, mod: dict[str, Any], fragment: str) -> None:
    field = kind[0].lower() + kind[1:]
    doc = filter_doc(header_filter(kind, **mod))
    assert_error(doc, f"spec.rules[0].filters[0].{field}", fragment)


@pytest.mark.parametrize(
    ("mod", "path"),
    [
        ({"set": [{"name": ":path", "value": "/"}]}, "set[0].name"),
        ({"add": [{"name": "x y", "value": "1"}]}, "add[0].name"),
        ({"remove": ["ok", "not ok"]}, "remove"),
    ],
)
def test_header_modifier_bad_names(mod: dict[str, Any], path: str) -> None:
    doc = filter_doc(header_filter(**mod))
    assert_error(
        doc,
        f"spec.rules[0].filters[0].requestHeaderModifier.{path}",
        "not a valid HTTP header name",
    )


@pytest.mark.parametrize(
    ("kind", "needs"),
    [
        ("RequestHeaderModifier", "requestHeaderModifier"),
        ("ResponseHeaderModifier", "responseHeaderModifier"),
        ("URLRewrite", "urlRewrite"),
        ("RequestRedirect", "requestRedirect"),
    ],
)
def test_filter_type_without_its_config(kind: str, needs: str) -> None:
    doc = filter_doc({"type": kind}, backendRefs=[])
    assert_error(doc, "spec.rules[0].filters[0]", f"type {kind} needs the field {needs}")


def test_filter_with_another_filters_config() -> None:
    doc = filter_doc(
        {
            "type": "RequestHeaderModifier",
            "requestHeaderModifier": {},
            "urlRewrite": {"hostname": "a.b"},
        }
    )
    assert_error(
        doc, "spec.rules[0].filters[0]", "type RequestHeaderModifier does not take urlRewrite"
    )
    doc = filter_doc({"type": "URLRewrite", "requestHeaderModifier": {}})
    assert_error(doc, "spec.rules[0].filters[0]", "type URLRewrite needs the field urlRewrite")


@pytest.mark.parametrize("kind", ["urlRewrite", "Mirror", "cors"])
def test_unknown_filter_type(kind: str) -> None:
    doc = filter_doc({"type": kind})
    assert_error(
        doc, "spec.rules[0].filters[0].type", "'RequestHeaderModifier'", "'RequestMirror'"
    )


def test_extension_ref_filter_is_refused_with_a_reason() -> None:
    doc = filter_doc({"type": "ExtensionRef",
                      "extensionRef": {"group": "example.com", "kind": "Auth", "name": "a"}})
    assert_error(doc, "spec.rules[0].filters[0].type", "ExtensionRef", "not supported")


@pytest.mark.parametrize("kind", ["RequestMirror", "CORS"])
def test_filter_type_needs_its_config(kind: str) -> None:
    field = "requestMirror" if kind == "RequestMirror" else "cors"
    assert_error(filter_doc({"type": kind}), "spec.rules[0].filters[0]",
                 f"needs the field {field}")


def test_filter_needs_type() -> None:
    doc = filter_doc({"urlRewrite": {"hostname": "a.b"}})
    assert_error(doc, "spec.rules[0].filters[0].type", "required")


def test_duplicate_filter_type() -> None:
    doc = filter_doc(
        header_filter(set=[{"name": "a", "value": "1"}]),
        header_filter(set=[{"name": "b", "value": "1"}]),
    )
    assert_error(doc, "spec.rules[0].filters", "RequestHeaderModifier", "only once")


def test_request_redirect_with_url_rewrite() -> None:
    doc = filter_doc(
        {"type": "RequestRedirect", "requestRedirect": {"scheme": "https"}},
        {"type": "URLRewrite", "urlRewrite": {"hostname": "a.b"}},
        backendRefs=[],
    )
    assert_error(doc, "spec.rules[0].filters", "RequestRedirect and URLRewrite")


def test_request_redirect_with_backend_refs() -> None:
    doc = filter_doc({"type": "RequestRedirect", "requestRedirect": {"scheme": "https"}})
    assert_error(doc, "spec.rules[0].backendRefs", "RequestRedirect", "no backends")


@pytest.mark.parametrize(
    "matches",
    [
        [{"path": {"type": "Exact", "value": "/a"}}],
        [{"path": {"type": "RegularExpression", "value": "/a.*"}}],
        [
            {"path": {"type": "PathPrefix", "value": "/a"}},
            {"headers": [{"name": "x", "value": "1"}]},
        ],
        [{"method": "GET"}],
    ],
)
@pytest.mark.parametrize("filter_kind", ["URLRewrite", "RequestRedirect"])
def test_replace_prefix_match_needs_path_prefix_matches(
    matches: list[dict[str, Any]], filter_kind: str
) -> None:
    field = "urlRewrite" if filter_kind == "URLRewrite" else "requestRedirect"
    f = {
        "type": filter_kind,
        field: {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/b"}},
    }
    backends = [{"name": "catalog"}] if filter_kind == "URLRewrite" else []
    doc = filter_doc(f, matches=matches, backendRefs=backends)
    assert_error(doc, "spec.rules[0].filters", "ReplacePrefixMatch", "PathPrefix")


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ({"type": "ReplaceFullPath"}, "needs replaceFullPath"),
        ({"type": "ReplaceFullPath", "replacePrefixMatch": "/x"}, "needs replaceFullPath"),
        (
            {"type": "ReplaceFullPath", "replaceFullPath": "/a", "replacePrefixMatch": "/b"},
            "nothing else",
        ),
        ({"type": "ReplacePrefixMatch", "replaceFullPath": "/x"}, "needs replacePrefixMatch"),
        ({"type": "ReplaceFullPath", "replaceFullPath": "relative"}, "must start with '/'"),
        ({"type": "ReplacePrefixMatch", "replacePrefixMatch": ""}, "must start with '/'"),
    ],
)
def test_bad_path_modifier(path: dict[str, Any], fragment: str) -> None:
    doc = filter_doc({"type": "URLRewrite", "urlRewrite": {"path": path}})
    assert_error(doc, "spec.rules[0].filters[0].urlRewrite.path", fragment)


def test_path_modifier_needs_type() -> None:
    doc = filter_doc({"type": "URLRewrite", "urlRewrite": {"path": {"replaceFullPath": "/"}}})
    assert_error(doc, "spec.rules[0].filters[0].urlRewrite.path.type", "required")


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("scheme", "ftp", "'http' or 'https'"),
        ("statusCode", 404, "301, 302, 303, 307 or 308"),
        ("statusCode", 300, "301, 302, 303, 307 or 308"),
        ("port", 0, "greater than or equal to 1"),
        ("port", 65536, "less than or equal to 65535"),
        ("hostname", "*.example.com", "not a valid hostname"),
        ("hostname", "Example.com", "not a valid hostname"),
    ],
)
def test_bad_request_redirect(field: str, value: object, fragment: str) -> None:
    doc = filter_doc({"type": "RequestRedirect", "requestRedirect": {field: value}}, backendRefs=[])
    assert_error(doc, f"spec.rules[0].filters[0].requestRedirect.{field}", fragment)


@pytest.mark.parametrize("host", ["*.example.com", "UPPER.example.com", "a b"])
def test_bad_url_rewrite_hostname(host: str) -> None:
    doc = filter_doc({"type": "URLRewrite", "urlRewrite": {"hostname": host}})
    assert_error(doc, "spec.rules[0].filters[0].urlRewrite.hostname", "not a valid hostname")


# ---------------------------------------------------------------- HTTPRoute: backends, timeouts


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("weight", -1, "greater than or equal to 0"),
        ("weight", 1_000_001, "less than or equal to 1000000"),
        ("weight", "heavy", "valid integer"),
        ("port", 0, "greater than or equal to 1"),
        ("port", 65536, "less than or equal to 65535"),
        ("name", "", "at least 1"),
        ("name", "catalog.shop", "Service name"),
        ("name", "Catalog", "Service name"),
        ("kind", "Pod", "backend is a Service"),
        ("group", "apps", "backend is a Service"),
    ],
)
def test_bad_backend_refs(field: str, value: object, fragment: str) -> None:
    doc = route_doc()
    doc["spec"]["rules"][0]["backendRefs"][1][field] = value
    where = "kind" if field == "group" else field
    assert_error(doc, f"spec.rules[0].backendRefs[1].{where}", fragment)


def test_backend_ref_needs_name() -> None:
    doc = rule_doc({"backendRefs": [{"port": 80}]})
    assert_error(doc, "spec.rules[0].backendRefs[0].name", "required")


@pytest.mark.parametrize(
    "duration",
    [
        "10",
        "1.5s",
        "1d",
        "-1s",
        "1S",
        "s",
        "",
        " 1s",
        "1s ",
        "1s\n",
        "100000s",
        "1h1m1s1ms1ms",
        "1 s",
        "1sec",
        "PT1S",
        "\uff11s",  # a fullwidth digit
    ],
)
@pytest.mark.parametrize("field", ["request", "backendRequest"])
def test_bad_durations(field: str, duration: str) -> None:
    doc = timeouts_doc(**{field: duration})
    assert_error(doc, f"spec.rules[0].timeouts.{field}", repr(duration), "not a duration", "'10s'")
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration_ms(duration)


@pytest.mark.parametrize("value", [10, 1.5, None, ["1s"]])
def test_durations_must_be_strings(value: object) -> None:
    doc = timeouts_doc(request=value)
    if value is None:
        parse_document(doc)  # explicit null is the same as absent
        return
    assert_error(doc, "spec.rules[0].timeouts.request", "valid string")


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("0s", 0),
        ("1ms", 1),
        ("250ms", 250),
        ("10s", 10_000),
        ("1m", 60_000),
        ("1h", 3_600_000),
        ("1m30s", 90_000),
        ("1h30m", 5_400_000),
        ("2s500ms", 2_500),
        ("1h1m1s1ms", 3_661_001),
        ("99999ms", 99_999),
        ("00010s", 10_000),
        ("1s1h", 3_601_000),
    ],
)
def test_durations(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms
    route = parse_route(timeouts_doc(request=text))
    timeouts = route.spec.rules[0].timeouts
    assert timeouts is not None
    assert timeouts.request == text  # kept as written
    assert timeouts.request_ms == ms


@pytest.mark.parametrize(("whole", "backend"), [("1s", "1001ms"), ("1m", "1h"), ("1ms", "2ms")])
def test_backend_request_longer_than_request(whole: str, backend: str) -> None:
    doc = timeouts_doc(request=whole, backendRequest=backend)
    assert_error(doc, "spec.rules[0].timeouts", "backendRequest", "longer than request")


def test_too_many_rules_and_backends() -> None:
    doc = route_doc()
    doc["spec"]["rules"] = [{}] * 17
    assert_error(doc, "spec.rules", "at most 16")
    doc = rule_doc({"backendRefs": [{"name": f"b{i}"} for i in range(17)]})
    assert_error(doc, "spec.rules[0].backendRefs", "at most 16")


# ---------------------------------------------------------------- YAML streams


def test_parse_documents_multi() -> None:
    text = yaml.safe_dump_all([service_doc(), None, workload_doc(), route_doc()])
    resources = parse_documents(text + "---\n")
    assert [r.kind for r in resources] == ["Service", "Workload", "HTTPRoute"]
    assert parse_documents("") == []
    assert parse_documents("---\n---\n") == []


def test_parse_documents_accepts_json() -> None:
    import json

    (svc,) = parse_documents(json.dumps(service_doc()))
    assert svc == parse_document(service_doc())


def test_multi_document_errors_are_prefixed_with_document_number() -> None:
    bad = route_doc()
    bad["metadata"]["name"] = "x"
    bad["spec"]["rules"][0]["matches"][0]["path"]["value"] = "api"
    bad["spec"]["rules"][0]["backendRefs"][0]["weight"] = -1
    text = yaml.safe_dump_all([service_doc(), workload_doc(), bad])
    with pytest.raises(InvalidResource) as info:
        parse_documents(text)
    exc = info.value
    assert (exc.kind, exc.name) == ("HTTPRoute", "x")
    assert {str(e) for e in exc.errors} == {
        "document 3: spec.rules[0].matches[0].path.value: "
        "an Exact or PathPrefix path must start with '/'",
        "document 3: spec.rules[0].backendRefs[0].weight: Input should be greater than or "
        "equal to 0",
    }
    assert str(exc).startswith("invalid HTTPRoute 'x': document 3: spec.rules[0]")


def test_multi_document_stream_fails_on_first_bad_document() -> None:
    text = yaml.safe_dump_all([service_doc(), ["not a mapping"], {"kind": "Pod"}])
    with pytest.raises(InvalidResource) as info:
        parse_documents(text)
    assert [str(e) for e in info.value.errors] == [
        "document 2: a resource must be a mapping (YAML object)"
    ]


def test_single_document_errors_are_not_prefixed() -> None:
    doc = service_doc()
    doc["spec"]["ports"][0]["port"] = 0
    with pytest.raises(InvalidResource) as info:
        parse_documents(yaml.safe_dump(doc))
    assert [e.path for e in info.value.errors] == ["spec.ports[0].port"]


@pytest.mark.parametrize(
    "text",
    [
        "kind: Service\n  metadata: {",
        "a: [1, 2",
        "key: 'unterminated",
        "\tkind: Service",
        "!!python/object:os.system {}",
        "? [a, b]\n: c\n",
        "[" * 5000,
    ],
)
def test_invalid_yaml(text: str) -> None:
    with pytest.raises(InvalidResource) as info:
        parse_documents(text)
    (err,) = info.value.errors
    assert err.path == ""
    assert err.reason.startswith("not valid YAML: ")
    assert len(err.reason) > len("not valid YAML: ")
    assert "\n" not in err.reason  # the CLI prints errors on one line
    assert str(info.value).startswith("invalid document: not valid YAML")


def test_invalid_yaml_names_the_line() -> None:
    text = "apiVersion: mesh.gossamer.dev/v1alpha1\nkind: Service\nmetadata: {\n  name: : x\n"
    with pytest.raises(InvalidResource) as info:
        parse_documents(text)
    assert info.value.errors[0].reason.endswith("at line 4, column 9")
    with pytest.raises(InvalidResource) as info:
        parse_documents("kind: Service\n metadata: {")
    assert str(info.value) == (
        "invalid document: not valid YAML: mapping values are not allowed here at line 2, column 10"
    )


def test_yaml_scalars_that_are_not_strings() -> None:
    text = yaml.safe_dump(service_doc()).replace("name: catalog\n", "name: 2024-01-01\n", 1)
    with pytest.raises(InvalidResource) as info:
        parse_documents(text)
    assert [e.path for e in info.value.errors] == ["metadata.name"]
    # `on`/`yes` are strings in YAML 1.2 but booleans to PyYAML: still a clear error.
    text = yaml.safe_dump(workload_doc()).replace("health: Healthy", "health: yes")
    with pytest.raises(InvalidResource) as info:
        parse_documents(text)
    assert [e.path for e in info.value.errors] == ["spec.health"]


# ---------------------------------------------------------------- kind names


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("Service", Service),
        ("service", Service),
        ("svc", Service),
        ("services", Service),
        ("Workload", Workload),
        ("workloads", Workload),
        ("HTTPRoute", HTTPRoute),
        ("httproute", HTTPRoute),
        ("httproutes", HTTPRoute),
        ("route", HTTPRoute),
        ("Routes", HTTPRoute),
    ],
)
def test_kind_for(name: str, cls: type) -> None:
    assert kind_for(name) is cls


def test_kind_for_unknown() -> None:
    with pytest.raises(InvalidResource) as info:
        kind_for("pods")
    assert info.value.errors[0].path == "kind"
    assert "unknown kind 'pods'" in info.value.errors[0].reason


# ---------------------------------------------------------------- the reference doc


def _doc_yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), re.S)


def test_reference_examples_are_valid() -> None:
    """Every YAML example in docs/resources.md parses, except those marked invalid,
    whose error output must be shown in the doc exactly as `gossamer apply` prints it."""
    blocks = _doc_yaml_blocks()
    assert len(blocks) >= 3
    text = DOCS.read_text()
    kinds: set[str] = set()
    for block in blocks:
        if block.startswith("# invalid"):
            with pytest.raises(InvalidResource) as info:
                parse_documents(block)
            assert f"error: {info.value}" in text
        else:
            kinds.update(r.kind for r in parse_documents(block))
    assert kinds == {"Service", "Workload", "HTTPRoute", "PeerAuthentication",
                     "AuthorizationPolicy", "RequestAuthentication", "ResiliencePolicy",
                     "FaultPolicy", "Mesh"}


def test_demo_examples_are_valid() -> None:
    """Every file the README's tour applies parses."""
    examples = Path(__file__).parents[2] / "examples" / "demo"
    files = sorted(p for p in examples.glob("*.yaml") if p.name != "app.yaml")
    assert len(files) >= 6  # app.yaml (with Process kinds) is checked by the e2e demo test
    for path in files:
        assert parse_documents(path.read_text()), path


def test_demo_load_counts_catalog_versions_and_failures() -> None:
    from gossamer.demo.load import _versions
    body = {"service": "frontend", "upstreams": {
        "http://catalog/items": {"status": 200, "body": {"service": "catalog", "version": "v2"}},
    }}
    assert _versions(body) == ["v2"]
    limited = {"service": "frontend", "upstreams": {
        "http://catalog/items": {"status": 429, "body": "local_rate_limited"}}}
    assert _versions(limited) == ["HTTP 429"]  # the load line says "catalog HTTP 429"
