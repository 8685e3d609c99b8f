"""The vendored Gateway API CRDs (deploy/crds/gateway-api, v1.5.1) take what Gossamer's
API takes of the Gateway kinds: checked on the routing tests' documents and mutations
of them, with the API server's semantics (kube_schema.py, defaults applied, CEL rules
evaluated with Kubernetes' escaping of property names).

Known differences are listed (GATEWAY_ONLY): Gateway API v1.5.1's CRDs require a `port`
on a backendRef to a core Service, which Gossamer's API does not (it defaults to the
parent's port), and refuse an empty GRPCRoute method or service name, which Gossamer
takes as not given. Where a parentRef leaves out group and kind, the Gateway API's
defaults make it a Gateway (Gossamer's make it a Service): the documents here say
`group: ""` and `kind: Service`, as GAMMA routes must on Kubernetes."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gossamer.model import InvalidResource, parse_document
from tests.model_helpers import nodes, set_path
from tests.unit.k8s.kube_schema import decode, kube_errors

ROOT = Path(__file__).parents[3]
HERE = Path(__file__).parent
VALID = list(yaml.safe_load_all((HERE / "testdata" / "gateway.yaml").read_text()))
CHANNEL = ROOT / "deploy" / "crds" / "gateway-api" / "experimental"
CRDS = {d["spec"]["names"]["kind"]: d for p in sorted(CHANNEL.glob("*.yaml"))
        for d in yaml.safe_load_all(p.read_text())
        if d and d.get("kind") == "CustomResourceDefinition"}
ROUTE_KINDS = ("HTTPRoute", "GRPCRoute", "TCPRoute", "Gateway", "TLSRoute", "ReferenceGrant")


def crd_for(doc: dict[str, Any]) -> dict[str, Any]:
    """The CRD as kube_errors reads it: only the version of the document."""
    crd = CRDS[doc["kind"]]
    version = doc["apiVersion"].rpartition("/")[2]
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    return {**crd, "spec": {**crd["spec"], "versions": [served]}}


def _refs_without_port(doc: Any) -> bool:
    return any(isinstance(n, dict) and "weight" in n and "port" not in n
               and n.get("group", "") == "" and n.get("kind", "Service") == "Service"
               for n in _all(doc)) or any(
        isinstance(n, dict) and isinstance(n.get("backendRef"), dict)
        and "port" not in n["backendRef"] for n in _all(doc))


def _all(doc: Any) -> list[Any]:
    out = [doc]
    if isinstance(doc, dict):
        out += [x for v in doc.values() for x in _all(v)]
    elif isinstance(doc, list):
        out += [x for v in doc for x in _all(v)]
    return out


def _empty_grpc_names(doc: Any) -> bool:
    return doc.get("kind") == "GRPCRoute" and any(
        isinstance(n, dict) and isinstance(n.get("method"), dict)
        and "" in (n["method"].get("service"), n["method"].get("method"))
        for n in _all(doc))


GATEWAY_ONLY = [
    ("a backendRef to a core Service has a port", _refs_without_port),
    ("a GRPCRoute method match's service and method are not empty strings (Gossamer "
     "takes an empty one as not given)", _empty_grpc_names),
]


def check_taken_by_the_crd(doc: dict[str, Any]) -> None:
    crd = crd_for(doc)
    stored = decode(doc, crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    try:
        parse_document(stored)
    except InvalidResource:
        return
    errors = kube_errors(doc, crd)
    if errors:
        assert any(check(stored) for _, check in GATEWAY_ONLY), errors


@pytest.mark.parametrize("kind", ROUTE_KINDS)
def test_the_vendored_crds_are_valid_kubernetes_objects(kind: str) -> None:
    kubernetes_validate.validate(CRDS[kind], kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("doc", VALID, ids=[d["kind"] for d in VALID])
def test_valid_routes_are_taken_by_the_gateway_crds(doc: dict[str, Any]) -> None:
    check_taken_by_the_crd(doc)


def test_a_service_backend_without_port_is_the_known_difference() -> None:
    doc = copy.deepcopy(VALID[2])  # a TCPRoute: Gossamer requires the port there too
    http = set_path(copy.deepcopy(VALID[0]), "spec.rules[0].backendRefs", [{"name": "web"}])
    parse_document(http)
    assert [e.split(":")[0] for e in kube_errors(http, crd_for(http))] == [
        "spec.rules.0.backendRefs.0"]
    http["spec"]["rules"][0]["backendRefs"][0]["port"] = 80
    assert kube_errors(http, crd_for(http)) == []
    assert kube_errors(doc, crd_for(doc)) == []


WORDS = ["", "core", "Service", "Gateway", "gateway.networking.k8s.io", "web", "Web", "a.b",
         80, 0, 65536, "/", "/api", "api", "Exact", "PathPrefix", "RegularExpression",
         "RequestMirror", "CORS", "*", "https://a.example", "GET", "get", "10s", "0s",
         "x-env", ":path", 1, 100, 1_000_001, True, None]


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(draw(st.sampled_from(VALID)))
    places = [loc for loc in nodes(doc["spec"]) if loc]
    loc = draw(st.sampled_from(places))
    parent = doc["spec"]
    for part in loc[:-1]:
        parent = parent[part]
    if isinstance(parent, dict) and draw(st.booleans()):
        del parent[loc[-1]]
    else:
        parent[loc[-1]] = draw(st.sampled_from(WORDS))
    return doc


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
@pytest.mark.slow
def test_what_the_api_takes_of_mutated_routes_the_crds_take(doc: dict[str, Any]) -> None:
    try:
        json.dumps(doc, allow_nan=False)
    except ValueError:
        assume(False)
    check_taken_by_the_crd(doc)
