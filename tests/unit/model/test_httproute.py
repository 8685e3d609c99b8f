"""HTTPRoute: parents and hostnames, and matches.

Every rejection is checked for the dotted field path it reports and for a reason
that names the problem, because that text is what `gossamer apply` shows users.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from gossamer.model import parse_document
from gossamer.model.regex import check_re2
from tests.unit.model.documents import (
    assert_error,
    edit,
    filter_doc,
    match_doc,
    parse_route,
    route_doc,
    rule_doc,
    timeouts_doc,
)


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


@pytest.mark.parametrize(
    ("ref", "fragment"),
    [
        ({"name": "gw", "kind": "Gateway"}, "kind Service"),
        ({"name": "gw", "group": "gateway.networking.k8s.io"}, "got group"),
        ({"name": "gw", "group": "gateway.networking.k8s.io", "kind": "GRPCRoute"},
         "'GRPCRoute'"),
        ({"name": "gw", "kind": "service"}, "'service'"),
    ],
)
def test_parent_ref_must_be_a_service_or_a_gateway(ref: dict[str, Any], fragment: str) -> None:
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


def test_backend_filters_are_header_modifiers_only() -> None:
    modifier = {"type": "RequestHeaderModifier",
                "requestHeaderModifier": {"set": [{"name": "x-a", "value": "1"}]}}
    route = parse_route(rule_doc({"backendRefs": [{"name": "a", "filters": [modifier]}]}))
    assert route.spec.rules[0].backend_refs[0].filters is not None
    # Stored as written: no `filters: []` on backends without any.
    plain = parse_route(rule_doc({"backendRefs": [{"name": "a"}]})).to_document()
    assert "filters" not in plain["spec"]["rules"][0]["backendRefs"][0]
    rewrite = {"type": "URLRewrite", "urlRewrite": {"hostname": "x.example"}}
    assert_error(rule_doc({"backendRefs": [{"name": "a", "filters": [rewrite]}]}),
                 "spec.rules[0].backendRefs[0].filters", "only RequestHeaderModifier",
                 "URLRewrite")


def test_tcproute_backends_take_no_filters() -> None:
    doc = {"apiVersion": "gateway.networking.k8s.io/v1alpha2", "kind": "TCPRoute",
           "metadata": {"name": "db"},
           "spec": {"parentRefs": [{"name": "db"}], "rules": [{"backendRefs": [
               {"name": "db-a", "port": 5432, "filters": []}]}]}}
    assert_error(doc, "spec.rules[0].backendRefs[0].filters", "take no filters")
