"""HTTPRoute: what a rule does with what it matches: filters, backends, timeouts.

Every rejection is checked for the dotted field path it reports and for a reason
that names the problem, because that text is what `gossamer apply` shows users.
"""

from __future__ import annotations

from typing import Any

import pytest

from gossamer.model import parse_document
from gossamer.model.duration import parse_duration_ms
from tests.unit.model.documents import (
    assert_error,
    filter_doc,
    header_filter,
    parse_route,
    route_doc,
    rule_doc,
    timeouts_doc,
)


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
