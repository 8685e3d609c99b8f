"""A CRD and the API accept and refuse the same documents: the model tests' valid
documents and hypothesis mutations of them (tests/model_helpers.py's `mutate` with
values near the schema's), each checked by the API (`parse_document`, on the document
as the API server would store it: nulls dropped) and by the CRD under strict field
validation (kube_schema.py).

Two lists name where they may differ, each with a check that the difference is that
one and nothing else:
- CONTROL_PLANE: what the API refuses and no CRD schema can express
  (`validations.CONTROL_PLANE_ONLY`, plus the API's own limits);
- KUBERNETES_ONLY: metadata the API server refuses and the API does not check.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gossamer.k8s import validations
from gossamer.k8s.crds import crds
from gossamer.model import InvalidResource, parse_document
from gossamer.model.limits import MAX_LABELS, limit_errors
from gossamer.model.mesh import MESH_NAME, check_dns_domain
from gossamer.model.policy import MESH_ROOT_NAMESPACE
from gossamer.model.ratelimitpolicy import path_regex
from gossamer.model.regex import check_re2
from gossamer.model.requestauthentication import check_jwks, parse_jwks_uri
from gossamer.model.service import check_virtual_ip
from tests.model_helpers import jsonish, mutate, nodes, set_path
from tests.unit.k8s.kube_schema import OBJECT_META, decode, kube_errors

HERE = Path(__file__).parent
VALID = list(yaml.safe_load_all((HERE / "testdata" / "valid.yaml").read_text()))
CRDS = {c["spec"]["names"]["kind"]: c for c in crds()}
# Values near what the schema takes, so that mutations reach the patterns and rules.
WORDS = [
    "*", "spiffe://td/ns/a/sa/b", "td/ns/a/sa/b", "td\n/ns/a/sa/b", "Td/ns/a/sa/b",
    "iss/sub", "*/*", "*/sub", "iss/*", "a*b/c", "GET", "get", "G3T", "/api/*", "*.json",
    "/a b", "/a?b", "**", "10s", "0s", "1h30m", "50ms", "49ms", "1s", "999ms", "0h0ms",
    "x-env", "Host", "host", "content-length", ":path", "8080", "080", "65536", "0", "00000080",
    "RingHash", "Maglev", "RoundRobin", "LeastRequest", "Random", "header", "caller", "path",
    "5xx", "reset", "retriable-status-codes", "UNAVAILABLE", "DATA_LOSS", "bogus",
    "request.headers[x-a]", "request.headers[]", "request.auth.claims[groups]",
    "request.auth.claims[ ]", "request.auth.claims[a][b]", "source.principal",
    "source.namespace", "destination.port", "request.auth.principal", "a.b:4317",
    "[::1]:4317", "[x]:1", "host:0", "host:65535", "h_st:80", "./*", "*/*", "ns/svc",
    "a/b/c", "./Bad", "Exact", "RegularExpression", "PathPrefix", "/a//b", "/a/./b", "(a",
    "^a.*", "a\nb", "", "STRICT", "PERMISSIVE", "ALLOW", "DENY", "http", "tcp", "grpc",
    "Healthy", "10.0.0.1", "::1", "fe80::1%eth0", "app", "gossamer.dev/x", "-x", "x-",
    "a" * 64, "https://issuer.example/keys", "http://u@h/", "x\u00a0y", "x\x85", "prefix ",
]
VALUES = jsonish(WORDS, 70_000) | st.sampled_from([2**63, -1, 1, 3, 16, 17, 100, 101, 4096,
                                                    4294967295, 1.5, True, False])


def _at(doc: Any, path: str) -> Any:
    """The value at an API error path (`spec.rules[0].when[1].values`), or None."""
    node = doc
    for key, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path):
        try:
            node = node[int(index)] if index else node[key]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _fails(check: Callable[[Any], object], value: Any) -> bool:
    try:
        check(value)
    except (ValueError, TypeError):
        return True
    return False


def _ip(value: Any) -> object:
    return ipaddress.ip_address(value)


def _bracketed_v6(value: Any) -> object:
    host = str(value).rpartition(":")[0]
    return ipaddress.IPv6Address(host[1:-1]) if host.startswith("[") else None


def _regex_match(node: Any) -> object:
    """A header or path match whose RegularExpression RE2 refuses."""
    if isinstance(node, dict) and node.get("type") == "RegularExpression":
        check_re2(node["value"])
    return None


def _rate_limit_path(node: Any) -> object:
    _regex_match(node)
    if isinstance(node, dict) and node.get("type") == "RegularExpression":
        check_re2(path_regex(type_of(node), node["value"]), max_length=None)
    return None


def type_of(node: dict[str, Any]) -> Any:
    from gossamer.model.httproute import PathMatchType
    return PathMatchType(node["type"])


def _host_pattern(value: Any) -> object:
    from gossamer.model.authorizationpolicy import _check_host_pattern
    return _check_host_pattern(value)


def _external(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("kind") == "ExternalService"


def _external_service_checks() -> list[tuple[str, str, Callable[[Any, str], bool]]]:
    """ExternalService's checks: the model's own validators run again on the spec
    (any of its errors is the control plane's)."""
    from gossamer.model.externalservice import ExternalServiceSpec
    mod = "gossamer.model.externalservice."

    def refuses(path: str) -> Callable[[Any, str], bool]:
        return lambda doc, p: _external(doc) and _fails(
            ExternalServiceSpec.model_validate, _at(doc, "spec"))
    return [(mod + name, path, refuses(path)) for name, path in [
        ("ExternalServiceSpec._coherent", r"spec\.(hosts|ports).*"),
        ("ExternalServiceSpec._virtual_ip", r"spec\.virtualIP"),
        ("ExternalPort._name", r"spec\.ports\[\d+\]\.name"),
        ("Egress._via", r"spec\.egress\.via"),
        ("CaBundle._one", r"spec\.tls\.caBundle"),
        ("ExternalTls._sni", r"spec\.tls\.sni"),
        ("_check_pem", r"spec\.tls\.caBundle\.pem"),
        ("_check_path", r"spec\.tls\..*"),
        ("_check_duration", r"spec\.timeouts\..*"),
        ("_check_endpoint", r"spec\.endpoints\[\d+\]"),
        ("check_host_name", r"spec\.(hosts|tls\.subjectAltNames)\[\d+\]"),
    ]] + [(mod + "ExternalService._name_is_dns_label", r"metadata\.name",
           lambda doc, p: _external(doc) and not re.fullmatch(
               r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", str(_at(doc, p))))]


# An API error path (regex) -> the control-plane-only check that refused it, run again
# on the value there (or on its parent, for `.value` of a match): it must fail.
CONTROL_PLANE: list[tuple[str, str, Callable[[Any, str], bool]]] = [
    ("gossamer.model.workload.WorkloadSpec._address", r"spec\.address",
     lambda doc, p: _fails(_ip, _at(doc, p))),
    ("gossamer.model.requestauthentication.JwtRule._jwks", r"spec\.jwtRules\[\d+\]\.jwks",
     lambda doc, p: _fails(check_jwks, _at(doc, p))),
    ("gossamer.model.requestauthentication.JwtRule._jwks_uri",
     r"spec\.jwtRules\[\d+\]\.jwksUri", lambda doc, p: _fails(parse_jwks_uri, _at(doc, p))),
    ("gossamer.model.httproute._ValueMatch._regex", r"spec\..*\.headers\[\d+\]\.value",
     lambda doc, p: _fails(_regex_match, _at(doc, p.removesuffix(".value")))),
    ("gossamer.model.httproute.PathMatch._value", r"spec\..*\.match\.path\.value",
     lambda doc, p: _fails(_rate_limit_path, _at(doc, p.removesuffix(".value")))),
    ("gossamer.model.telemetry.Collector._address", r"spec\.tracing\.collector\.address",
     lambda doc, p: _fails(_bracketed_v6, _at(doc, p))),
    ("gossamer.model.meta.ObjectMeta._resource_version", r"metadata\.resourceVersion",
     lambda doc, p: not re.fullmatch(r"[0-9]{1,18}", str(_at(doc, p)))),
    ("gossamer.model.service.ServiceSpec._virtual_ip", r"spec\.virtualIP",
     lambda doc, p: _fails(check_virtual_ip, _at(doc, p))),
    ("gossamer.model.mesh.MeshSpec._domain", r"spec\.dnsDomain",
     lambda doc, p: _fails(check_dns_domain, _at(doc, p))),
    ("gossamer.model.sidecar.SidecarSpec._says_something", r"spec\.egress",
     lambda doc, p: _at(doc, "spec.egress") is None
     and _at(doc, "spec.outboundTrafficPolicy") is None),
    ("gossamer.model.mesh.Mesh._singleton", r"metadata\.name",
     lambda doc, p: doc["kind"] == "Mesh" and _at(doc, p) != MESH_NAME),
    ("gossamer.model.meta.Resource._cluster_wide", r"metadata\.namespace",
     lambda doc, p: doc["kind"] == "Mesh" and _at(doc, p) not in (None, MESH_ROOT_NAMESPACE)),
    ("limits: at most 64 labels", r"metadata\.labels",
     lambda doc, p: len(_at(doc, p) or {}) > MAX_LABELS),
    ("limits: the document's size", r"", lambda doc, p: bool(limit_errors(doc))),
    *_external_service_checks(),
    ("gossamer.model.resiliencepolicy.ResiliencePolicySpec._external_target",
     r"spec\.(adaptiveConcurrency|routes|healthCheck|hedging|loadBalancer\.locality)",
     lambda doc, p: _at(doc, "spec.targetRef.kind") == "ExternalService"),
    ("gossamer.model.authorizationpolicy._check_host_pattern",
     r"spec\.rules\[\d+\]\.to\[\d+\]\.operation\.(hosts|notHosts)\[\d+\]",
     lambda doc, p: _fails(_host_pattern, _at(doc, p))),
    ("metadata fields the API server sets (uid, generation, finalizers...)",
     r"metadata\.(" + "|".join(set(OBJECT_META) - {"name", "namespace", "labels",
                                                  "annotations", "resourceVersion"}) + ")",
     lambda doc, p: True),
]
# What the API server refuses in metadata that the API takes.
KUBERNETES_ONLY: list[tuple[str, Callable[[dict[str, Any]], bool]]] = [
    ("metadata.annotations keys are qualified names",
     lambda doc: any(e.startswith("metadata.annotations")
                     for e in kube_errors(doc, CRDS[doc["kind"]]))),
    ("metadata.labels key prefixes are at most 253 characters",
     lambda doc: any(len(k.rpartition("/")[0]) > 253 for k in _labels(doc))),
]


def _labels(doc: dict[str, Any]) -> list[str]:
    labels = doc["metadata"].get("labels")
    return list(labels) if isinstance(labels, dict) else []


def api_errors(doc: Any) -> list[str] | None:
    try:
        parse_document(doc)
    except InvalidResource as exc:
        return [e.path for e in exc.errors]
    return None


def explained(doc: dict[str, Any], paths: list[str]) -> list[str]:
    """The API error paths no control-plane-only check accounts for."""
    left = []
    for path in paths:
        if not any(re.fullmatch(pattern, path) and check(doc, path)
                   for _, pattern, check in CONTROL_PLANE):
            left.append(path)
    return left


def check_agreement(doc: dict[str, Any]) -> None:
    crd = CRDS[doc["kind"]]
    stored = decode(doc, crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    api, kube = api_errors(stored), kube_errors(doc, crd)
    if api is not None and not kube:
        assert explained(stored, api) == [], f"the CRD takes what the API refuses: {api}"
    if api is None and kube:
        assert any(check(stored) for _, check in KUBERNETES_ONLY), \
            f"the CRD refuses what the API takes: {kube}"


@pytest.mark.parametrize("doc", VALID, ids=[f"{d['kind']}:{d['metadata']['name']}" for d in VALID])
def test_valid_documents_are_taken_by_both(doc: dict[str, Any]) -> None:
    assert api_errors(doc) is None
    assert kube_errors(doc, CRDS[doc["kind"]]) == []


def test_every_control_plane_only_check_is_listed_here() -> None:
    listed = {name for name, _, _ in CONTROL_PLANE}
    assert set(validations.CONTROL_PLANE_ONLY) - {
        "gossamer.model.ratelimitpolicy.RateLimitMatch._unique",  # reported at path.value
        "gossamer.model.meta.ObjectMeta._labels", "gossamer.model.meta.ObjectMeta._namespace",
    } <= listed


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """One near miss (most documents: one value replaced or one key deleted, so that
    one check decides), or model_helpers' one to three mutations of any kind."""
    doc = copy.deepcopy(draw(st.sampled_from(VALID)))
    values = VALUES | st.sampled_from(_leaves(doc))
    if draw(st.integers(0, 9)) < 3:
        mutate(draw, doc, values)
        return doc
    places = [loc for loc in nodes(doc["spec"]) if loc]
    if not places:
        return doc
    loc = draw(st.sampled_from(places))
    parent = doc["spec"]
    for part in loc[:-1]:
        parent = parent[part]
    if isinstance(parent, dict) and draw(st.booleans()):
        del parent[loc[-1]]
    else:
        parent[loc[-1]] = draw(st.sampled_from(WORDS) | values)
    return doc


def _leaves(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return [x for v in node.values() for x in _leaves(v)]
    if isinstance(node, list):
        return [x for v in node for x in _leaves(v)]
    return [node]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
@pytest.mark.slow
def test_mutated_documents_are_taken_or_refused_by_both(doc: dict[str, Any]) -> None:
    assume(isinstance(doc.get("kind"), str) and doc["kind"] in CRDS)
    assume(isinstance(doc.get("metadata"), dict))
    assume(doc.get("apiVersion") == "mesh.gossamer.dev/v1alpha1")
    try:  # what cannot be JSON cannot reach an API server
        json.dumps(doc, allow_nan=False)
    except ValueError:
        assume(False)
    check_agreement(doc)


# Near misses chosen by hand: (document, path, value, whether the API takes it). Both
# must decide alike (or differ only as listed above).
NEAR_MISSES = [
    (3, "spec.rules[0].from[0].source.principals[0]", "td\n/ns/a/sa/b", False),
    (3, "spec.rules[0].from[0].source.principals[0]", "Td/ns/a/sa/b", False),
    (3, "spec.rules[0].from[0].source.principals[0]", "spiffe://td/ns/a/sa/b", True),
    (3, "spec.rules[0].from[0].source.requestPrincipals[0]", "*/*", False),
    (3, "spec.rules[0].from[0].source.requestPrincipals[0]", "a*b/c", False),
    (3, "spec.rules[0].from[0].source.requestPrincipals[0]", "a/b/c", True),
    (3, "spec.rules[0].to[0].operation.paths[0]", "/a\u00a0b", False),
    (3, "spec.rules[0].to[0].operation.paths[0]", "**", False),
    (3, "spec.rules[0].to[0].operation.paths[0]", "*/a", True),
    (3, "spec.rules[0].to[0].operation.ports[0]", "080", True),
    (3, "spec.rules[0].to[0].operation.ports[0]", "65536", False),
    (3, "spec.rules[0].to[0].operation.ports[0]", "8\u0668", False),
    (3, "spec.rules[0].to[0].operation.methods[0]", "get", False),
    (3, "spec.rules[0].when[1].key", "request.auth.claims[ ]", False),
    (3, "spec.rules[0].when[1].key", "request.auth.claims[a][b][c][d][e][f][g][h][i]", False),
    (3, "spec.rules[0].when[8].values[0]", "0000000080", True),
    (3, "spec.rules[0].when[8].values[0]", "00000000080", False),
    (3, "spec.rules[0].when[7].values[0]", "*", True),
    (3, "spec.rules[0].when[0].values[0]", "a*b", False),
    (7, "spec.local.per", "49ms", False),
    (7, "spec.local.per", "50ms", True),
    (7, "spec.local.burst", 4294967295 - 99, False),
    (7, "spec.global.rules[2].match.path.value", "/a//b", False),
    (7, "spec.global.rules[2].match.headers[0].name", "X-Tier", True),
    (11, "spec.tracing.collector.address", "host:0", False),
    (11, "spec.tracing.collector.address", "h_st:80", False),
    (11, "spec.tracing.collector.address", "a:b:80", False),
    (11, "spec.tracing.collector.address", "host:0000065535", True),
    (12, "spec.tracing.collector.address", "[x]:1", False),  # control plane only
    (13, "spec.egress.hosts[0]", "a/b/c", False),
    (13, "spec.egress.hosts[0]", "./" + "a" * 64, False),
    (14, "spec.abort.grpcStatus", "unavailable", False),
    (14, "spec.abort.grpcStatus", 16, True),
    (1, "spec.address", "fe80::1%eth0", True),
    (0, "spec.selector", {"a/b/c": "x"}, False),
    (0, "spec.ports[1].port", 80, False),
]


@pytest.mark.parametrize(("index", "path", "value", "taken"), NEAR_MISSES,
                         ids=[f"{VALID[i]['kind']}:{p}={v!r}" for i, p, v, _ in NEAR_MISSES])
def test_near_misses_are_decided_alike(index: int, path: str, value: Any, taken: bool) -> None:
    doc = set_path(copy.deepcopy(VALID[index]), path, value)
    assert (api_errors(doc) is None) == taken
    check_agreement(doc)
