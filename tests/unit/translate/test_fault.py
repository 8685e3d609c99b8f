"""FaultPolicy at the model edge and as Envoy config: a full document parses and
round-trips, every bad field is refused with its path and a reason; the fault filter
is a no-op in every outbound connection manager and a policy only decorates the
target Service's routes; precedence and conditions; the config Envoy accepts.

Regenerate the golden file after an intended change with
`GOSSAMER_UPDATE_GOLDEN=1 pytest tests/unit/translate/test_fault.py` and review the diff.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from gossamer.index import build_index
from gossamer.model import (
    FaultPolicy,
    InvalidResource,
    Resource,
    ResourceKey,
    kind_for,
    parse_document,
    parse_documents,
)
from gossamer.model.policy import Scope, policy_scope
from gossamer.translate import MeshConfig, MeshSettings, translate_mesh, translate_proxy
from gossamer.translate.fault import FAULT_FILTER_NAME, fractional_percent
from gossamer.xds.types import CLUSTER, LISTENER, ROUTE
from tests.model_helpers import (
    DELETE,
    jsonish,
    mutate,
    parses_or_is_rejected_cleanly,
    set_path,
)
from tests.unit.translate.test_security import _static_bootstrap, assert_envoy_accepts
from tests.unit.translate.test_translate import _as_json, _frontend

HERE = Path(__file__).parents[1]
MESH = (HERE / "testdata" / "mesh.yaml").read_text()
POLICIES = (HERE / "testdata" / "fault.yaml").read_text()
API = "mesh.gossamer.dev/v1alpha1"
HTTP_FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"


def full_doc() -> dict[str, Any]:
    return {"apiVersion": API, "kind": "FaultPolicy",
            "metadata": {"name": "chaos", "namespace": "shop"},
            "spec": {"targetRef": {"group": "", "kind": "Service", "name": "catalog"},
                     "delay": {"fixedDelay": "300ms", "percent": 10},
                     "abort": {"httpStatus": 503, "percent": 2.5},
                     "match": {"headers": [{"name": "x-chaos", "value": "on"},
                                           {"name": "x-user", "type": "RegularExpression",
                                            "value": "test-.*"}]}}}


def docs(extra: str = POLICIES) -> list[Resource]:
    return parse_documents(MESH + ("\n---\n" + extra if extra else ""))


def mesh_of(resources: list[Resource], **options: Any) -> MeshConfig:
    return translate_mesh(build_index(resources, 7), MeshSettings(**options))


def snap_json(mesh: MeshConfig) -> dict[str, Any]:
    return _as_json(translate_proxy(mesh, _frontend()).snapshot)


def vhost_routes(mesh: MeshConfig, vhost: str) -> dict[str, dict[str, Any]]:
    for vh in snap_json(mesh)["routes"]["outbound"]["virtualHosts"]:
        if vh["name"] == vhost:
            return {r["name"]: r for r in vh["routes"]}
    raise AssertionError(f"no virtual host {vhost}")


# ---------------------------------------------------------------- model


def test_full_document_parses_and_round_trips() -> None:
    policy = parse_document(full_doc())
    assert isinstance(policy, FaultPolicy)
    assert policy_scope(policy) is Scope.SERVICE
    assert parse_document(policy.to_document()) == policy


def test_grpc_status_by_name_or_number() -> None:
    for value, code in (("UNAVAILABLE", 14), (14, 14), ("OK", 0), (16, 16)):
        doc = set_path(full_doc(), "spec.abort", {"grpcStatus": value, "percent": 1})
        policy = parse_document(doc)
        assert isinstance(policy, FaultPolicy)
        assert policy.spec.abort is not None
        assert policy.spec.abort.grpc_status == code


def test_kind_aliases() -> None:
    for alias in ("FaultPolicy", "faultpolicy", "faultpolicies", "fault", "fp"):
        assert kind_for(alias) is FaultPolicy


S = "spec"
REJECTIONS: list[tuple[str, Any, str, str]] = [
    (f"{S}.targetRef", DELETE, f"{S}.targetRef", "required"),
    (f"{S}.targetRef.kind", "HTTPRoute", f"{S}.targetRef.kind", "attaches to a Service"),
    (f"{S}.bogus", 1, f"{S}.bogus", "unknown field"),
    (f"{S}.delay.fixedDelay", "300", f"{S}.delay.fixedDelay", "is not a duration"),
    (f"{S}.delay.fixedDelay", "0s", f"{S}.delay.fixedDelay", "longer than 0"),
    (f"{S}.delay.fixedDelay", DELETE, f"{S}.delay.fixedDelay", "required"),
    (f"{S}.delay.percent", DELETE, f"{S}.delay.percent", "required"),
    (f"{S}.delay.percent", 100.5, f"{S}.delay.percent", "less than or equal to 100"),
    (f"{S}.delay.percent", -1, f"{S}.delay.percent", "greater than or equal to 0"),
    (f"{S}.delay.percent", "ten", f"{S}.delay.percent", "valid number"),
    (f"{S}.abort.httpStatus", 199, f"{S}.abort.httpStatus", "greater than or equal to 200"),
    (f"{S}.abort.httpStatus", 600, f"{S}.abort.httpStatus", "less than or equal to 599"),
    (f"{S}.abort.httpStatus", "503", f"{S}.abort.httpStatus", "valid integer"),
    (f"{S}.abort.httpStatus", DELETE, f"{S}.abort", "exactly one of httpStatus or grpcStatus"),
    (f"{S}.abort.grpcStatus", 14, f"{S}.abort", "exactly one of httpStatus or grpcStatus"),
    (f"{S}.abort", {"grpcStatus": 17, "percent": 1}, f"{S}.abort.grpcStatus",
     "less than or equal to 16"),
    (f"{S}.abort", {"grpcStatus": "BUSY", "percent": 1}, f"{S}.abort.grpcStatus",
     "unknown gRPC status 'BUSY'"),
    (f"{S}.abort.percent", 101, f"{S}.abort.percent", "less than or equal to 100"),
    (f"{S}.match.headers", [], f"{S}.match.headers", "at least 1 item"),
    (f"{S}.match.headers[0].name", "bad header", f"{S}.match.headers[0].name",
     "not a valid HTTP header name"),
    (f"{S}.match.headers[1].value", "(", f"{S}.match.headers[1].value", ""),
    (f"{S}.match.headers[0].type", "Prefix", f"{S}.match.headers[0].type", "Exact"),
]


@pytest.mark.parametrize(("path", "value", "reported", "reason"),
                         REJECTIONS,
                         ids=[f"{p}={v!r}"[:80] for p, v, _, _ in REJECTIONS])
def test_bad_field_is_rejected_with_its_path_and_reason(
        path: str, value: Any, reported: str, reason: str) -> None:
    with pytest.raises(InvalidResource) as err:
        parse_document(set_path(full_doc(), path, value))
    found = {e.path: e.reason for e in err.value.errors}
    assert reported in found, found
    assert reason in found[reported], found


def test_a_policy_needs_a_fault_and_either_alone_is_enough() -> None:
    for drop in ("delay", "abort"):
        doc = full_doc()
        del doc["spec"][drop]
        parse_document(doc)
    doc = full_doc()
    del doc["spec"]["delay"], doc["spec"]["abort"]
    with pytest.raises(InvalidResource) as err:
        parse_document(doc)
    assert {e.path: e.reason for e in err.value.errors} == {
        "spec": "a FaultPolicy needs at least one of delay or abort"}


WORDS = ["UNAVAILABLE", "OK", "Exact", "RegularExpression", "x-chaos", "", "5s", "0s",
         "1.5s", "Service", "catalog", "503"]


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(full_doc())
    mutate(draw, doc, jsonish(WORDS, 2**33))
    return doc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_policies_parse_or_raise_invalid_resource(doc: dict[str, Any]) -> None:
    note(json.dumps(doc, default=str)[:2000])
    parses_or_is_rejected_cleanly(doc)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_every_valid_policy_translates(doc: dict[str, Any]) -> None:
    try:
        policy = parse_document(doc)
    except InvalidResource:
        return
    doc = policy.to_document()
    doc["metadata"] = {"name": "p", "namespace": "default"}
    doc["spec"]["targetRef"] = {"kind": "Service", "name": "catalog"}
    translate_proxy(translate_mesh(build_index([*docs(""), parse_document(doc)], 1)),
                    _frontend())


# ---------------------------------------------------------------- translation


def test_golden_frontend_snapshot_with_fault_and_adaptive_concurrency() -> None:
    actual = snap_json(mesh_of(docs()))
    golden = HERE / "golden" / "frontend-fault.json"
    if os.environ.get("GOSSAMER_UPDATE_GOLDEN"):
        golden.write_text(json.dumps(actual, indent=2, sort_keys=True) + "\n")
    assert actual == json.loads(golden.read_text())


def test_percent_is_parts_per_million() -> None:
    assert fractional_percent(30) == {"numerator": 300000, "denominator": "MILLION"}
    assert fractional_percent(0.0125) == {"numerator": 125, "denominator": "MILLION"}
    assert fractional_percent(100) == {"numerator": 1000000, "denominator": "MILLION"}


def test_every_outbound_http_manager_has_a_no_op_fault_filter_before_the_router() -> None:
    listeners = snap_json(mesh_of(docs("")))["listeners"]
    for name in ("outbound", "upstream|80||catalog.default"):
        hcm = listeners[name]["filterChains"][0]["filters"][0]["typedConfig"]
        # CORS answers preflights before any fault is injected, as in Istio.
        # No ExternalService rate limit or wildcard in this mesh: not their filters
        # (translate/listeners.py optional_outbound_filters).
        assert [f["name"] for f in hcm["httpFilters"]] == [
            "envoy.filters.http.cors", FAULT_FILTER_NAME, "envoy.filters.http.router"]
        assert hcm["httpFilters"][1]["typedConfig"] == {"@type": HTTP_FAULT}
    inbound = listeners["inbound"]["filterChains"][0]["filters"][0]["typedConfig"]
    assert FAULT_FILTER_NAME not in [f["name"] for f in inbound["httpFilters"]]


def test_the_target_services_forwarding_routes_carry_the_fault() -> None:
    mesh = mesh_of(docs())
    expected = {
        "@type": HTTP_FAULT,
        "delay": {"fixedDelay": "2s", "percentage": {"numerator": 125000,
                                                     "denominator": "MILLION"}},
        "abort": {"httpStatus": 503, "percentage": {"numerator": 300000,
                                                    "denominator": "MILLION"}},
        "headers": [{"name": "x-chaos", "stringMatch": {"exact": "on"}},
                    {"name": "x-user", "stringMatch": {"safeRegex": {"regex": "test-[0-9]+"}}}],
    }
    for vhost in ("catalog.default:80", "catalog.default:9090"):
        for name, route in vhost_routes(mesh, vhost).items():
            if "redirect" in route:  # sends nothing to catalog
                assert "typedPerFilterConfig" not in route, name
            else:
                assert route["typedPerFilterConfig"] == {FAULT_FILTER_NAME: expected}, name
    v1 = vhost_routes(mesh, "catalog-v1.default:80")["default"]["typedPerFilterConfig"]
    assert v1[FAULT_FILTER_NAME]["abort"] == {
        "grpcStatus": 14, "percentage": {"numerator": 125, "denominator": "MILLION"}}
    for vhost in ("catalog-v2.default:80", "frontend.default:80"):
        assert all("typedPerFilterConfig" not in r for r in vhost_routes(mesh, vhost).values())
    # The per-upstream listener's routes are the same routes.
    upstream = snap_json(mesh)["routes"]["upstream|80||catalog.default"]["virtualHosts"][0]
    assert upstream["routes"] == list(vhost_routes(mesh, "catalog.default:80").values())


@pytest.mark.parametrize("mtls", [True, False])
def test_a_fault_policy_changes_routes_only(mtls: bool) -> None:
    """Clusters and listeners are byte-identical with and without fault policies,
    so a policy reaches callers as an RDS update (no listener drain)."""
    fault_only = "\n---\n".join(d for d in POLICIES.split("\n---\n") if "FaultPolicy" in d)
    plain = translate_proxy(mesh_of(docs(""), mtls=mtls), _frontend()).snapshot
    chaos = translate_proxy(mesh_of(docs(fault_only), mtls=mtls), _frontend()).snapshot
    for type_url in (CLUSTER, LISTENER):
        assert {n: r.payload for n, r in plain.of(type_url).items()} == \
            {n: r.payload for n, r in chaos.of(type_url).items()}
    assert plain.of(ROUTE)["outbound"].payload != chaos.of(ROUTE)["outbound"].payload


def test_first_policy_wins_and_the_rest_are_conflicted_or_dangling() -> None:
    index = build_index(docs(), 1)
    later = index.conditions[ResourceKey("FaultPolicy", "default", "catalog-later")]
    assert (later[0].type, later[0].status, later[0].reason) == ("Accepted", "False",
                                                                 "Conflicted")
    assert "catalog-chaos" in later[0].message
    first = index.conditions[ResourceKey("FaultPolicy", "default", "catalog-chaos")]
    assert (first[0].status, first[1].status) == ("True", "True")
    accepted, resolved = index.conditions[ResourceKey("FaultPolicy", "default", "ghost")]
    assert accepted.status == "True"
    assert (resolved.status, resolved.reason) == ("False", "TargetNotFound")
    assert index.faults[("default", "catalog")].metadata.name == "catalog-chaos"
    assert ("default", "ghost") in index.faults  # applies as soon as ghost exists


@pytest.mark.slow
@pytest.mark.parametrize("mtls", [True, False])
def test_envoy_accepts_the_generated_config(mtls: bool, tmp_path: Path) -> None:
    snap = translate_proxy(mesh_of(docs(), mtls=mtls), _frontend()).snapshot
    assert_envoy_accepts(_static_bootstrap(snap), tmp_path)


# ---------------------------------------------------------------- the docs

DOCS = Path(__file__).parents[3] / "docs"


def test_fault_examples_in_the_docs_are_valid() -> None:
    text = (DOCS / "resilience.md").read_text()
    section = text[text.index("# FaultPolicy"):]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    assert len(blocks) >= 3
    kinds: set[str] = set()
    for block in blocks:
        if block.startswith("# invalid"):
            with pytest.raises(InvalidResource) as info:
                parse_documents(block)
            assert f"error: {info.value}" in text
        else:
            kinds.update(r.kind for r in parse_documents(block))
    assert "FaultPolicy" in kinds
