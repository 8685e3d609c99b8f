"""Documents as a whole: valid ones round-trip, how a document, a YAML stream and a
kind name are refused, and the examples of docs/resources.md.

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

from gossamer.contract.protocol import Protocol
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
from gossamer.model.httproute import FilterType, PathMatchType, ValueMatchType
from gossamer.model.workload import Health
from tests.unit.model.documents import (
    FULL,
    GATEWAY,
    MESH,
    assert_error,
    filter_doc,
    match_doc,
    minimal_docs,
    parse_route,
    rejected,
    route_doc,
    rule_doc,
    service_doc,
    walk,
    workload_doc,
)

DOCS = Path(__file__).resolve().parents[3] / "docs" / "resources.md"


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
    for part in walk(path):
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
                     "FaultPolicy", "Mesh", "ExternalService"}


def test_demo_examples_are_valid() -> None:
    """Every file the README's tour applies parses."""
    examples = Path(__file__).parents[3] / "examples" / "demo"
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
