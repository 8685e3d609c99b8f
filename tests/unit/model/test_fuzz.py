"""Property tests of the model edge: untrusted input either becomes a resource or an
InvalidResource that points at a real place in the document, never anything else."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

from gossamer.model import FieldError, InvalidResource, Resource, parse_document
from gossamer.model.duration import parse_duration_ms
from gossamer.model.httproute import HTTPRoute

MESH = "mesh.gossamer.dev/v1alpha1"
GATEWAY = "gateway.networking.k8s.io/v1"


def service_doc() -> dict[str, Any]:
    return {
        "apiVersion": MESH,
        "kind": "Service",
        "metadata": {
            "name": "catalog",
            "namespace": "shop",
            "labels": {"app": "catalog", "gossamer.dev/tier": "backend"},
            "annotations": {"owner": "team-shop"},
        },
        "spec": {
            "selector": {"app": "catalog"},
            "ports": [
                {"port": 80, "name": "http", "protocol": "http"},
                {"port": 9090, "name": "grpc", "protocol": "grpc"},
                {"port": 5432, "protocol": "tcp"},
            ],
        },
    }


def workload_doc() -> dict[str, Any]:
    return {
        "apiVersion": MESH,
        "kind": "Workload",
        "metadata": {"name": "catalog-1.shop", "namespace": "shop", "labels": {"app": "x"}},
        "spec": {
            "service": "catalog",
            "address": "10.0.0.7",
            "port": 15006,
            "appPort": 8080,
            "health": "Healthy",
            "proxy": "sidecar~10.0.0.7",
            "ttlSeconds": 30,
        },
    }


def route_doc() -> dict[str, Any]:
    rewrite = {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}
    return {
        "apiVersion": GATEWAY,
        "kind": "HTTPRoute",
        "metadata": {"name": "catalog-canary", "namespace": "shop"},
        "spec": {
            "parentRefs": [
                {"group": "", "kind": "Service", "name": "catalog", "port": 80},
                {"name": "catalog-alias", "namespace": "shop", "sectionName": "http"},
            ],
            "hostnames": ["catalog.example.com"],
            "rules": [
                {
                    "matches": [
                        {
                            "path": {"type": "PathPrefix", "value": "/api"},
                            "headers": [
                                {"name": "x-env", "value": "canary"},
                                {"type": "RegularExpression", "name": "x-ua", "value": "^c.*"},
                            ],
                            "queryParams": [{"name": "debug", "value": "1"}],
                            "method": "GET",
                        }
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
                            "responseHeaderModifier": {"remove": ["server"]},
                        },
                        {"type": "URLRewrite", "urlRewrite": {"hostname": "c.internal",
                                                              "path": rewrite}},
                    ],
                    "backendRefs": [
                        {"name": "catalog", "port": 80, "weight": 90},
                        {"group": "core", "kind": "Service", "name": "catalog-v2", "weight": 10},
                    ],
                    "timeouts": {"request": "10s", "backendRequest": "2s"},
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
                {"matches": [{"path": {"type": "RegularExpression", "value": "^/v[0-9]+/"}}],
                 "backendRefs": [{"name": "catalog"}]},
            ],
        },
    }  # fmt: skip


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Words the schema uses, so that random documents reach deep into the validators
# instead of failing on the first unknown key.
FIELD_NAMES = [
    "apiVersion", "kind", "metadata", "spec", "status", "name", "namespace", "labels",
    "annotations", "resourceVersion", "selector", "ports", "port", "protocol", "service",
    "address", "appPort", "health", "proxy", "ttlSeconds", "parentRefs", "group",
    "sectionName", "hostnames", "rules", "matches", "path", "type", "value", "headers",
    "queryParams", "method", "filters", "requestHeaderModifier", "responseHeaderModifier",
    "urlRewrite", "requestRedirect", "set", "add", "remove", "hostname", "replaceFullPath",
    "replacePrefixMatch", "scheme", "statusCode", "backendRefs", "weight", "timeouts",
    "request", "backendRequest",
]  # fmt: skip
WORDS = [
    MESH, GATEWAY, "Service", "Workload", "HTTPRoute", "Exact", "PathPrefix",
    "RegularExpression", "RequestHeaderModifier", "ResponseHeaderModifier", "URLRewrite",
    "RequestRedirect", "ReplaceFullPath", "ReplacePrefixMatch", "http", "http2", "grpc",
    "tcp", "https", "Healthy", "Unknown", "GET", "web", "/", "/api", "api", "10s", "1m30s",
    "0s", "10.0.0.1", "::1", "x-env", "Host", "(?=a)", "(a", r"\1", "a.b", "-", "",
]  # fmt: skip
KEY = st.sampled_from(FIELD_NAMES) | st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,8}", fullmatch=True)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([0, 1, -1, 80, 65535, 65536, 1_000_000, 1_000_001, 86401])
    | st.sampled_from(WORDS)
    | st.text(max_size=12)
    | st.floats(allow_nan=True, allow_infinity=True)
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEY, children, max_size=4),
    max_leaves=16,
)
TOP_LEVEL = {"apiVersion", "kind", "metadata", "spec"}
FREE_FORM = {"labels", "annotations", "selector"}  # maps of arbitrary keys
VALID = {"Service": service_doc, "Workload": workload_doc, "HTTPRoute": route_doc}

Loc = tuple[str | int, ...]


def fmt(loc: Loc) -> str:
    """The model's path syntax: `spec.rules[0].matches`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def locate(doc: Any, path: str) -> Loc | None:
    """Resolve an error path against the document it describes.

    Every segment must exist except possibly the last, which may name a missing key
    of a mapping (a required field, or a defaulted one a validator talks about).
    Keys are matched greedily so label keys with dots (`gossamer.dev/tier`) resolve.
    """
    loc: list[str | int] = []
    node, rest = doc, path
    while rest:
        if isinstance(node, list):
            m = re.match(r"\[(\d+)\]", rest)
            if not m or int(m.group(1)) >= len(node):
                return None
            loc.append(int(m.group(1)))
            node, rest = node[int(m.group(1))], rest[m.end() :]
        elif isinstance(node, dict):
            if loc:
                if not rest.startswith("."):
                    return None
                rest = rest[1:]
            keys = [
                k
                for k in node
                if isinstance(k, str) and (rest == k or rest.startswith((k + ".", k + "[")))
            ]
            if not keys:
                if re.fullmatch(r"[A-Za-z_]\w*", rest):
                    return (*loc, rest)
                return None
            key = max(keys, key=len)
            loc.append(key)
            node, rest = node[key], rest[len(key) :]
        else:
            return None
    return tuple(loc)


def nodes(doc: Any, loc: Loc = ()) -> list[tuple[Loc, Any]]:
    """Every node of a document with its location, the root first."""
    out = [(loc, doc)]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += nodes(v, (*loc, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += nodes(v, (*loc, i))
    return out


def get(doc: Any, loc: Loc) -> Any:
    for part in loc:
        doc = doc[part]
    return doc


def check_outcome(doc: Any) -> Resource | InvalidResource:
    """Parse; anything but a Resource or an InvalidResource fails the test."""
    try:
        resource = parse_document(doc)
    except InvalidResource as caught:
        exc = caught
    else:
        assert isinstance(resource, Resource)
        assert isinstance(doc, dict)
        assert resource.kind == doc["kind"]
        # Whatever is accepted is stable: dumping and parsing again gives the same object.
        assert parse_document(resource.to_document()) == resource
        return resource
    assert exc.errors, "InvalidResource with no errors"
    for err in exc.errors:
        assert isinstance(err, FieldError)
        assert isinstance(err.reason, str)
        assert err.reason.strip(), f"empty reason at {err.path!r}"
        assert isinstance(err.path, str)
    assert str(exc).startswith("invalid ")
    return exc


# ---------------------------------------------------------------- (a) arbitrary values


@FUZZ
@given(JSON)
def test_arbitrary_values_parse_or_raise_invalid_resource(value: Any) -> None:
    outcome = check_outcome(value)
    if not isinstance(value, dict):
        assert isinstance(outcome, InvalidResource)
        assert outcome.errors == [FieldError("", "a resource must be a mapping (YAML object)")]


@FUZZ
@given(
    st.fixed_dictionaries(
        {"kind": st.sampled_from([*VALID, "Pod"]) | JSON},
        optional={
            "apiVersion": st.sampled_from([MESH, GATEWAY]) | JSON,
            "metadata": st.fixed_dictionaries({"name": st.sampled_from(["web", "Web"]) | JSON})
            | JSON,
            "spec": st.dictionaries(KEY, JSON, max_size=5),
            "status": JSON,
        },
    )
)
def test_resource_shaped_values_parse_or_raise_invalid_resource(doc: dict[str, Any]) -> None:
    outcome = check_outcome(doc)
    if isinstance(outcome, InvalidResource):
        for err in outcome.errors:
            assert err.path.split(".")[0].split("[")[0] in TOP_LEVEL, str(err)
            assert locate(doc, err.path) is not None, f"{err.path!r} is not in {doc!r}"


# ---------------------------------------------------------------- (b) mutations of valid documents


def related(error: Loc, mutated: Loc) -> bool:
    """An error belongs to a mutation when one location contains the other, or they are
    siblings under one object (a validator across fields, such as a ParentRef's group
    reported at its kind), or they are in one route rule (filters vs. matches)."""
    n = min(len(error), len(mutated))
    common = next((i for i in range(n) if error[i] != mutated[i]), n)
    if common == n or common >= len(mutated) - 1:
        return True
    return len(error) >= 3 and error[:3] == mutated[:3] and error[:2] == ("spec", "rules")


@st.composite
def mutations(draw: st.DrawFn) -> tuple[str, dict[str, Any], str, Loc]:
    kind = draw(st.sampled_from(sorted(VALID)))
    base = VALID[kind]()
    doc = copy.deepcopy(base)
    everything = nodes(doc)
    lists = [n for n in everything if isinstance(n[1], list) and n[1]]
    op = draw(
        st.sampled_from(
            ["replace"] * 4
            + ["delete"] * 2
            + ["add-unknown"]
            + ["duplicate-item"] * 2 * bool(lists)
        )
    )
    if op == "replace":
        # A leaf or a whole subtree: by a near-miss scalar, another value of the same
        # document (which makes duplicates and cross-field conflicts), or anything.
        loc, _ = draw(st.sampled_from(everything[1:]))
        leaves = [v for _, v in everything if not isinstance(v, (dict, list))]
        value = st.sampled_from(leaves).map(copy.deepcopy)
        get(doc, loc[:-1])[loc[-1]] = draw(st.one_of(SCALARS, value, JSON))
    elif op == "delete":
        loc, _ = draw(st.sampled_from([n for n in everything[1:] if isinstance(n[0][-1], str)]))
        del get(doc, loc[:-1])[loc[-1]]
    elif op == "add-unknown":
        loc, parent = draw(st.sampled_from([n for n in everything if isinstance(n[1], dict)]))
        key = "zz" + draw(st.from_regex(r"[A-Za-z0-9]{0,6}", fullmatch=True))
        parent[key] = draw(JSON)
        loc = (*loc, key)
    else:
        loc, items = draw(st.sampled_from(lists))
        items.append(copy.deepcopy(draw(st.sampled_from(items))))
    return kind, doc, op, loc


@settings(FUZZ, max_examples=800)  # cheap per example, and the best at finding bugs
@given(mutations())
def test_mutated_documents_parse_or_point_at_the_problem(
    case: tuple[str, dict[str, Any], str, Loc],
) -> None:
    kind, doc, op, loc = case
    note(f"{op} at {fmt(loc)!r}")
    outcome = check_outcome(doc)
    if op == "add-unknown" and not FREE_FORM.intersection(p for p in loc if isinstance(p, str)):
        assert isinstance(outcome, InvalidResource), "an unknown field was accepted"
        assert FieldError(fmt(loc), "unknown field") in outcome.errors
    if isinstance(outcome, Resource):
        return
    located = []
    for err in outcome.errors:
        assert err.path, f"an error without a location: {err}"
        head = err.path.split(".")[0].split("[")[0]
        assert head in TOP_LEVEL or head.startswith("zz"), str(err)
        where = locate(doc, err.path)
        assert where is not None, f"{err.path!r} is not a location in the document"
        located.append(where)
    if outcome.kind == kind and doc.get("kind") == kind:
        assert any(related(w, loc) for w in located), (
            f"no error near {fmt(loc)!r}: {[str(e) for e in outcome.errors]}"
        )


REQUIRED = [
    ("Service", ("apiVersion",)),
    ("Service", ("kind",)),
    ("Service", ("metadata",)),
    ("Service", ("metadata", "name")),
    ("Service", ("spec",)),
    ("Service", ("spec", "ports")),
    ("Service", ("spec", "ports", 1, "port")),
    ("Workload", ("spec", "service")),
    ("Workload", ("spec", "address")),
    ("Workload", ("spec", "port")),
    ("HTTPRoute", ("spec", "parentRefs")),
    ("HTTPRoute", ("spec", "parentRefs", 1, "name")),
    ("HTTPRoute", ("spec", "rules", 0, "matches", 0, "headers", 0, "name")),
    ("HTTPRoute", ("spec", "rules", 0, "matches", 0, "headers", 1, "value")),
    ("HTTPRoute", ("spec", "rules", 0, "filters", 2, "type")),
    ("HTTPRoute", ("spec", "rules", 1, "filters", 0, "requestRedirect", "path", "type")),
    ("HTTPRoute", ("spec", "rules", 0, "backendRefs", 0, "name")),
]


@pytest.mark.parametrize(("kind", "loc"), REQUIRED, ids=[f"{k}:{fmt(loc)}" for k, loc in REQUIRED])
def test_deleting_a_required_field_names_it(kind: str, loc: Loc) -> None:
    doc = VALID[kind]()
    del get(doc, loc[:-1])[loc[-1]]
    outcome = check_outcome(doc)
    assert isinstance(outcome, InvalidResource)
    assert any(e.path == fmt(loc) for e in outcome.errors), [str(e) for e in outcome.errors]


# ---------------------------------------------------------------- (c) durations

UNIT_MS = {"h": 3_600_000, "m": 60_000, "s": 1_000, "ms": 1}
PARTS = st.lists(
    st.tuples(st.integers(0, 99_999), st.sampled_from(sorted(UNIT_MS))), min_size=1, max_size=4
)


def route_with(**timeouts: str) -> dict[str, Any]:
    doc = route_doc()
    doc["spec"]["rules"] = [{"backendRefs": [{"name": "web"}], "timeouts": timeouts}]
    return doc


@FUZZ
@given(PARTS, st.data())
def test_valid_durations_parse_to_milliseconds(
    parts: list[tuple[int, str]], data: st.DataObject
) -> None:
    # Leading zeros are allowed as long as a part keeps to five digits.
    zeros = [data.draw(st.integers(0, 5 - len(str(n)))) for n, _ in parts]
    text = "".join("0" * z + f"{n}{u}" for (n, u), z in zip(parts, zeros, strict=True))
    expected = sum(n * UNIT_MS[u] for n, u in parts)
    assert parse_duration_ms(text) == expected
    route = parse_document(route_with(request=text))
    assert isinstance(route, HTTPRoute)
    timeouts = route.spec.rules[0].timeouts
    assert timeouts is not None
    assert timeouts.request == text
    assert timeouts.request_ms == expected


@FUZZ
@given(
    PARTS.map(lambda ps: "".join(f"{n}{u}" for n, u in ps)),
    PARTS.map(lambda ps: "".join(f"{n}{u}" for n, u in ps)),
)
def test_backend_request_fits_in_request(request_text: str, backend_text: str) -> None:
    request_ms, backend_ms = parse_duration_ms(request_text), parse_duration_ms(backend_text)
    doc = route_with(request=request_text, backendRequest=backend_text)
    if request_ms == 0 or backend_ms <= request_ms:
        route = parse_document(doc)
        assert isinstance(route, HTTPRoute)
        timeouts = route.spec.rules[0].timeouts
        assert timeouts is not None
        assert (timeouts.request_ms, timeouts.backend_request_ms) == (request_ms, backend_ms)
    else:
        with pytest.raises(InvalidResource) as info:
            parse_document(doc)
        assert info.value.errors == [
            FieldError("spec.rules[0].timeouts", "backendRequest must not be longer than request")
        ]


@FUZZ
@given(st.text(max_size=16))
def test_arbitrary_text_is_a_duration_only_in_gep_2257_form(text: str) -> None:
    assume(not re.fullmatch(r"(\d{1,5}(h|m|s|ms)){1,4}", text, re.ASCII))
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration_ms(text)
    with pytest.raises(InvalidResource) as info:
        parse_document(route_with(request=text))
    assert [e.path for e in info.value.errors] == ["spec.rules[0].timeouts.request"]
