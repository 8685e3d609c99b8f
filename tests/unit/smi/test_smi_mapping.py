"""The SMI mapping: golden files per kind (tests/unit/golden/smi/NAME.input.yaml ->
NAME.yaml), the refusals (each with its field), and `expand`.

`GOSSAMER_UPDATE_GOLDEN=1 pytest tests/unit/smi/test_smi_mapping.py` rewrites the
goldens; review the diff."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from gossamer.model import FieldError, InvalidResource, parse_document, parse_documents
from gossamer.model.authorizationpolicy import AuthorizationPolicy
from gossamer.model.httproute import HTTPRoute
from gossamer.model.meta import Resource
from gossamer.model.service import Service
from gossamer.model.smi import HTTPRouteGroup, TrafficSplit, TrafficTarget
from gossamer.smi.access import literal, pattern
from gossamer.smi.expand import check, expand, expand_documents, native_documents

GOLDEN = Path(__file__).parent.parent / "golden" / "smi"
CASES = sorted(p.name.removesuffix(".input.yaml") for p in GOLDEN.glob("*.input.yaml"))


def load(case: str) -> list[Resource]:
    return parse_documents((GOLDEN / f"{case}.input.yaml").read_text())


def mapped(resources: list[Resource]) -> list[dict[str, Any]]:
    return [doc for r in resources if isinstance(r, TrafficSplit | TrafficTarget)
            for doc in native_documents(r, resources)]


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    docs = mapped(load(case))
    for doc in docs:  # what the mapping makes is what apply would take
        assert parse_document(doc).metadata.name == doc["metadata"]["name"]
    text = yaml.safe_dump_all(docs, sort_keys=False)
    path = GOLDEN / f"{case}.yaml"
    if os.environ.get("GOSSAMER_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


def test_there_is_a_golden_case_of_each_mapped_kind() -> None:
    assert {c.split("-")[0] for c in CASES} == {"trafficsplit", "traffictarget"}


# ---------------------------------------------------------------- expand


def test_expand_replaces_the_smi_resources_by_what_they_map_to() -> None:
    resources = load("traffictarget-http") + load("trafficsplit-canary")
    result = expand(resources, trust_domain="example.org")
    assert result.refused == {}
    kinds = [r.kind for r in result.resources]
    assert "TrafficTarget" not in kinds
    assert "HTTPRouteGroup" not in kinds
    assert kinds.count("Service") == 3
    assert kinds.count("Workload") == 2
    policies = [r for r in result.resources if isinstance(r, AuthorizationPolicy)]
    assert sorted(p.metadata.name for p in policies) == [
        "smi-api-service-api-api", "smi-api-service-api-api-canary",
        "smi-api-service-metrics-api", "smi-api-service-metrics-api-canary"]
    principals = {p for pol in policies for rule in pol.spec.rules for f in rule.from_
                  for p in f.source.principals}
    assert principals == {"example.org/ns/monitoring/sa/prometheus",
                          "example.org/ns/default/sa/website-service",
                          "example.org/ns/default/sa/payments-service"}
    routes = [r for r in result.resources if isinstance(r, HTTPRoute)]
    assert [r.metadata.name for r in routes] == ["smi-canary"]


def test_expand_reports_a_refused_resource_and_keeps_the_rest() -> None:
    resources = load("trafficsplit-canary") + parse_documents("""
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: broken, namespace: shop}
spec:
  service: website
  matches: [{kind: HTTPRouteGroup, name: missing}]
  backends: [{service: v2, weight: 1}]
""")
    result = expand(resources)
    assert [r.metadata.name for r in result.resources if isinstance(r, HTTPRoute)] == [
        "smi-canary"]
    (key, exc), = result.refused.items()
    assert str(key) == "TrafficSplit/shop/broken"
    assert exc.errors == [FieldError("spec.matches[0].name",
                                     "HTTPRouteGroup 'missing' not found in namespace 'shop'")]


def test_expand_documents_gives_documents_or_raises() -> None:
    docs = list(yaml.safe_load_all((GOLDEN / "trafficsplit-tcp.input.yaml").read_text()))
    out = expand_documents(docs)
    assert [d["kind"] for d in out] == ["Service", "HTTPRoute", "TCPRoute", "TCPRoute"]
    docs[1]["spec"]["backends"][0]["service"] = "db"
    with pytest.raises(InvalidResource) as info:
        expand_documents(docs)
    assert info.value.errors[0].path == "spec.backends[0].service"


# ---------------------------------------------------------------- refusals


def refused_at_apply(text: str) -> list[FieldError]:
    with pytest.raises(InvalidResource) as info:
        parse_documents(text)
    return info.value.errors


TARGET = """
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: t, namespace: default}
spec:
  destination: {kind: ServiceAccount, name: server}
  rules: [{kind: TCPRoute, name: ports}]
  sources: [{kind: ServiceAccount, name: client}]
"""


@pytest.mark.parametrize(("edit", "path"), [
    ({"rules": [{"kind": "UDPRoute", "name": "u"}]}, "spec.rules[0].kind"),
    ({"sources": [{"kind": "Group", "name": "admins"}]}, "spec.sources[0].kind"),
    ({"destination": {"kind": "ServiceAccount", "name": "s", "namespace": "other"}},
     "spec.destination.namespace"),
    ({"sources": []}, "spec.sources"),
    ({"rules": [{"kind": "TCPRoute", "name": "p", "matches": ["x"]}]}, "spec.rules[0].matches"),
])
def test_what_no_mapping_could_use_is_refused_at_apply(edit: dict[str, Any], path: str) -> None:
    doc = yaml.safe_load(TARGET)
    doc["spec"].update(edit)
    assert [e.path for e in refused_at_apply(yaml.safe_dump(doc))] == [path]


def test_a_split_that_sends_to_its_root_is_refused() -> None:
    doc = yaml.safe_load((GOLDEN / "trafficsplit-canary.input.yaml").read_text().split(
        "---")[1])
    doc["spec"]["backends"].append({"service": "website", "weight": 1})
    errors = refused_at_apply(yaml.safe_dump(doc))
    assert [e.path for e in errors] == ["spec.backends[2].service"]


def _target_case(**changes: Any) -> list[Resource]:
    resources = load("traffictarget-http")
    out = []
    for r in resources:
        if isinstance(r, HTTPRouteGroup) and "matches" in changes:
            doc = r.to_document()
            doc["spec"]["matches"] = changes["matches"]
            r = parse_document(doc)
        out.append(r)
    return out + [parse_document(d) for d in changes.get("extra", [])]


@pytest.mark.parametrize(("matches", "reason"), [
    ([{"name": "api", "pathRegex": "/v[0-9]+/"}], "pathRegex '/v[0-9]+/' cannot be mapped"),
    ([{"name": "api", "headers": {"x-a": "a|b"}}], "header 'x-a' regex 'a|b' cannot be"),
    ([{"name": "api", "pathRegex": "api"}], "pathRegex 'api' cannot be mapped"),
])
def test_what_an_authorization_policy_cannot_match_is_refused(
        matches: list[dict[str, Any]], reason: str) -> None:
    resources = _target_case(matches=matches)
    target = next(r for r in resources if r.metadata.name == "api-service-api"
                  and isinstance(r, TrafficTarget))
    target = parse_document({**target.to_document(), "spec": {
        **target.to_document()["spec"], "rules": [
            {"kind": "HTTPRouteGroup", "name": "api-service-routes"}]}})
    with pytest.raises(InvalidResource) as info:
        check(target, resources)
    (err,) = info.value.errors
    assert err.path == "spec.rules[0]"
    assert reason in err.reason


def test_a_service_of_several_accounts_is_refused_as_a_destination() -> None:
    other = {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Workload",
             "metadata": {"name": "api-3", "namespace": "default", "labels": {"app": "api"}},
             "spec": {"service": "api", "address": "10.0.0.9", "port": 15006,
                      "serviceAccount": "legacy"}}
    resources = _target_case(extra=[other])
    target = next(r for r in resources if isinstance(r, TrafficTarget))
    with pytest.raises(InvalidResource) as info:
        check(target, resources)
    assert info.value.errors == [FieldError(
        "spec.destination.name", "Service 'api' also runs workloads as legacy: an "
        "AuthorizationPolicy covers all of a Service's workloads, so access to "
        "'api-service''s alone cannot be expressed")]


@pytest.mark.parametrize(("edit", "path"), [
    ({"rules": [{"kind": "TCPRoute", "name": "nope"}]}, "spec.rules[0].name"),
    ({"rules": [{"kind": "HTTPRouteGroup", "name": "api-service-routes",
                 "matches": ["metrics", "nope"]}]}, "spec.rules[0].matches[1]"),
])
def test_missing_specs_are_refused_with_the_field(edit: dict[str, Any], path: str) -> None:
    resources = load("traffictarget-http")
    target = next(r for r in resources if isinstance(r, TrafficTarget))
    doc = target.to_document()
    doc["spec"].update(edit)
    with pytest.raises(InvalidResource) as info:
        check(parse_document(doc), resources)
    assert [e.path for e in info.value.errors] == [path]


def test_matches_on_a_root_with_tcp_ports_are_refused() -> None:
    resources = load("trafficsplit-tcp") + load("trafficsplit-ab")
    split = next(r for r in resources if r.metadata.name == "ab")
    doc = copy.deepcopy(split.to_document())
    doc["metadata"]["namespace"] = "data"
    doc["spec"]["service"] = "db"
    with pytest.raises(InvalidResource) as info:
        check(parse_document(doc), resources)
    assert [e.path for e in info.value.errors] == ["spec.matches"]


def test_a_mapping_envoy_would_refuse_is_refused_with_the_source() -> None:
    resources = load("trafficsplit-ab")
    group = next(r for r in resources if isinstance(r, HTTPRouteGroup)).to_document()
    group["spec"]["matches"] = [{"name": f"m{i}", "methods": ["GET", "PUT", "POST"]}
                                for i in range(30)]  # 90 matches in one rule: over 64
    resources = [parse_document(group), *(r for r in resources
                                          if not isinstance(r, HTTPRouteGroup))]
    split = next(r for r in resources if isinstance(r, TrafficSplit))
    with pytest.raises(InvalidResource) as info:
        check(split, resources)
    (err,) = info.value.errors
    assert err.path == "spec"
    assert err.reason.startswith("maps to an invalid HTTPRoute 'smi-ab': spec.rules[0].matches")


def test_a_split_with_an_unknown_root_maps_to_an_http_route() -> None:
    split = next(r for r in load("trafficsplit-canary") if isinstance(r, TrafficSplit))
    assert [d["kind"] for d in native_documents(split, [split])] == ["HTTPRoute"]
    svc = next(r for r in load("trafficsplit-tcp") if isinstance(r, Service))
    assert svc.metadata.name == "db"


@pytest.mark.parametrize(("regex", "start", "want"), [
    ("/api", True, "/api*"), ("/api/.*", True, "/api/*"), ("^/metrics$", True, "/metrics"),
    (".*", True, "*"), (r"/a\.json", True, "/a.json*"), ("/v[0-9]", True, None),
    ("acme-.*", False, "acme-*"), (".*Firefox", False, "*Firefox"), ("yes", False, "yes"),
    (".*Firefox.*", False, None), (r"\d+", False, None),
])
def test_regexes_as_patterns(regex: str, start: bool, want: str | None) -> None:
    assert pattern(regex, anchored_start=start) == want
    assert literal(r"a\-b") == "a-b"
