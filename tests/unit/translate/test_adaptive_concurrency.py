"""ResiliencePolicy `adaptiveConcurrency`: validation with field paths, the gradient
controller config it becomes, where it goes (the target's own inbound connection
manager, after the security filters) and where it does not, and Envoy accepting it."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from gossamer.index import build_index
from gossamer.model import InvalidResource, ResiliencePolicy, parse_document, parse_documents
from gossamer.model.adaptiveconcurrency import AdaptiveConcurrency
from gossamer.translate import MeshSettings, translate_mesh, translate_proxy
from gossamer.translate.adaptive import adaptive_concurrency_filter
from gossamer.xds.types import CLUSTER, LISTENER
from tests.model_helpers import jsonish, mutate, parses_or_is_rejected_cleanly, set_path
from tests.unit.translate.test_security import _static_bootstrap, assert_envoy_accepts
from tests.unit.translate.test_translate import _as_json, _frontend

HERE = Path(__file__).parents[1]
MESH = (HERE / "testdata" / "mesh.yaml").read_text()
API = "mesh.gossamer.dev/v1alpha1"
FILTER = "envoy.filters.http.adaptive_concurrency"


def full_doc(target: str = "frontend") -> dict[str, Any]:
    return {"apiVersion": API, "kind": "ResiliencePolicy",
            "metadata": {"name": "ac", "namespace": "default"},
            "spec": {"targetRef": {"kind": "Service", "name": target},
                     "retries": {"attempts": 1},
                     "adaptiveConcurrency": {
                         "sampleAggregatePercentile": 95,
                         "concurrencyLimitParams": {"maxConcurrencyLimit": 100,
                                                    "concurrencyUpdateInterval": "200ms"},
                         "minRttCalcParams": {"interval": "30s", "requestCount": 25,
                                              "jitter": 5, "minConcurrency": 2,
                                              "buffer": 50}}}}


def config_of(doc: dict[str, Any]) -> AdaptiveConcurrency:
    policy = parse_document(doc)
    assert isinstance(policy, ResiliencePolicy)
    assert policy.spec.adaptive_concurrency is not None
    return policy.spec.adaptive_concurrency


def gradient(doc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = adaptive_concurrency_filter(config_of(doc))["typedConfig"][
        "gradientControllerConfig"]
    return out


def inbound_filters(extra: list[dict[str, Any]], **proxy: Any) -> list[str]:
    resources = [*parse_documents(MESH), *(parse_document(d) for d in extra)]
    mesh = translate_mesh(build_index(resources, 1), MeshSettings())
    listener = _as_json(translate_proxy(mesh, _frontend(**proxy)).snapshot)["listeners"][
        "inbound"]
    hcm = listener["filterChains"][0]["filters"][0]["typedConfig"]
    return [f["name"] for f in hcm.get("httpFilters", []) if f["name"] != "envoy.filters.http.tap"]


# ---------------------------------------------------------------- model


def test_full_document_round_trips_and_defaults() -> None:
    policy = parse_document(full_doc())
    assert parse_document(policy.to_document()) == policy
    doc = set_path(full_doc(), "spec.adaptiveConcurrency", {})
    config = config_of(doc)
    assert config.concurrency_limit_params.concurrency_update_interval == "100ms"
    assert config.min_rtt is None
    assert config.min_rtt_calc_params is None


S = "spec.adaptiveConcurrency"
REJECTIONS: list[tuple[str, Any, str, str]] = [
    (f"{S}.bogus", 1, f"{S}.bogus", "unknown field"),
    (f"{S}.sampleAggregatePercentile", 101, f"{S}.sampleAggregatePercentile",
     "less than or equal to 100"),
    (f"{S}.concurrencyLimitParams.maxConcurrencyLimit", 0,
     f"{S}.concurrencyLimitParams.maxConcurrencyLimit", "greater than or equal to 1"),
    (f"{S}.concurrencyLimitParams.concurrencyUpdateInterval", "0s",
     f"{S}.concurrencyLimitParams.concurrencyUpdateInterval", "longer than 0"),
    (f"{S}.concurrencyLimitParams.concurrencyUpdateInterval", "100",
     f"{S}.concurrencyLimitParams.concurrencyUpdateInterval", "is not a duration"),
    (f"{S}.minRttCalcParams.interval", "0ms", f"{S}.minRttCalcParams.interval",
     "longer than 0"),
    (f"{S}.minRttCalcParams.requestCount", 0, f"{S}.minRttCalcParams.requestCount",
     "greater than or equal to 1"),
    (f"{S}.minRttCalcParams.jitter", -1, f"{S}.minRttCalcParams.jitter",
     "greater than or equal to 0"),
    (f"{S}.minRttCalcParams.minConcurrency", 0, f"{S}.minRttCalcParams.minConcurrency",
     "greater than or equal to 1"),
    (f"{S}.minRttCalcParams.buffer", 100.1, f"{S}.minRttCalcParams.buffer",
     "less than or equal to 100"),
    (f"{S}.minRtt", "0s", f"{S}.minRtt", "longer than 0"),
    (f"{S}.minRtt", "50ms", f"{S}.minRttCalcParams.interval",
     "only used when the minRTT is measured"),
]


@pytest.mark.parametrize(("path", "value", "reported", "reason"), REJECTIONS,
                         ids=[f"{p}={v!r}"[:80] for p, v, _, _ in REJECTIONS])
def test_bad_field_is_rejected_with_its_path_and_reason(
        path: str, value: Any, reported: str, reason: str) -> None:
    with pytest.raises(InvalidResource) as err:
        parse_document(set_path(full_doc(), path, value))
    found = {e.path: e.reason for e in err.value.errors}
    assert reported in found, found
    assert reason in found[reported], found


def test_fixed_min_rtt_keeps_the_params_that_still_apply() -> None:
    doc = set_path(full_doc(), f"{S}.minRttCalcParams", {"minConcurrency": 2, "buffer": 10})
    doc = set_path(doc, f"{S}.minRtt", "50ms")
    assert gradient(doc)["minRttCalcParams"] == {"fixedValue": "0.050s", "minConcurrency": 2,
                                                 "buffer": {"value": 10.0}}


WORDS = ["50ms", "0s", "1.5s", "100", "interval", "minRtt", ""]


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(full_doc())
    section = doc["spec"]["adaptiveConcurrency"]
    mutate(draw, section, jsonish(WORDS, 2**33))
    return doc


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_sections_parse_or_raise_and_valid_ones_translate(doc: dict[str, Any]) -> None:
    note(json.dumps(doc, default=str)[:2000])
    parses_or_is_rejected_cleanly(doc)
    try:
        config = config_of(doc)
    except InvalidResource:
        return
    inbound_filters([parse_document(doc).to_document()])
    assert adaptive_concurrency_filter(config)["name"] == FILTER


# ---------------------------------------------------------------- translation


def test_full_config_maps_field_by_field() -> None:
    assert gradient(full_doc()) == {
        "sampleAggregatePercentile": {"value": 95.0},
        "concurrencyLimitParams": {"maxConcurrencyLimit": 100,
                                   "concurrencyUpdateInterval": "0.200s"},
        "minRttCalcParams": {"interval": "30.000s", "requestCount": 25, "jitter": {"value": 5.0},
                             "minConcurrency": 2, "buffer": {"value": 50.0}}}


def test_a_measured_min_rtt_always_has_an_interval() -> None:
    """Envoy refuses a controller with neither an interval nor a fixed minRTT."""
    assert gradient(set_path(full_doc(), S, {})) == {
        "concurrencyLimitParams": {"concurrencyUpdateInterval": "0.100s"},
        "minRttCalcParams": {"interval": "60.000s"}}


def test_only_the_targets_own_inbound_side_gets_the_filter_after_security() -> None:
    deny = {"apiVersion": API, "kind": "AuthorizationPolicy", "metadata": {"name": "deny"},
            "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/x"]}}]}]}}
    assert inbound_filters([full_doc(), deny]) == [
        "envoy.filters.http.rbac.deny", FILTER, "envoy.filters.http.router"]
    # frontend's policy is nothing to a catalog instance, nor to frontend's callers.
    assert FILTER not in inbound_filters([full_doc()], service="catalog",
                                         workload="catalog-v1-a")
    assert inbound_filters([full_doc("catalog")]) == ["envoy.filters.http.router"]
    # A catalog-v1 instance is also a catalog instance: catalog's policy covers it.
    assert FILTER in inbound_filters([full_doc("catalog")], service="catalog-v1",
                                     workload="catalog-v1-a")


def test_tcp_inbound_has_no_http_filter_and_no_policy_changes_nothing() -> None:
    assert inbound_filters([full_doc()], app_protocol="tcp") == []
    resources = parse_documents(MESH)
    plain = translate_proxy(translate_mesh(build_index(resources, 1)), _frontend()).snapshot
    others = [*resources, parse_document(full_doc("catalog-v2"))]
    with_policy = translate_proxy(translate_mesh(build_index(others, 1)), _frontend()).snapshot
    assert plain.of(LISTENER)["inbound"].payload == with_policy.of(LISTENER)["inbound"].payload
    assert plain.of(CLUSTER).keys() == with_policy.of(CLUSTER).keys()


@pytest.mark.slow
@pytest.mark.parametrize("fixed", [True, False])
def test_envoy_accepts_the_generated_config(fixed: bool, tmp_path: Path) -> None:
    doc = full_doc()
    if fixed:
        doc = set_path(doc, f"{S}.minRttCalcParams", {"minConcurrency": 2, "buffer": 10})
        doc = set_path(doc, f"{S}.minRtt", "50ms")
    resources = [*parse_documents(MESH), parse_document(doc)]
    snap = translate_proxy(translate_mesh(build_index(resources, 1)), _frontend()).snapshot
    bootstrap = _static_bootstrap(snap)
    assert FILTER in json.dumps(bootstrap)
    assert_envoy_accepts(bootstrap, tmp_path)


# ---------------------------------------------------------------- the docs

DOCS = Path(__file__).parents[3] / "docs"


def test_adaptive_concurrency_examples_in_the_docs_are_valid() -> None:
    text = (DOCS / "resilience.md").read_text()
    section = text[text.index("# Adaptive concurrency"):]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    assert blocks
    for block in blocks:
        if block.startswith("# invalid"):
            with pytest.raises(InvalidResource) as info:
                parse_documents(block)
            assert f"error: {info.value}" in text
        else:
            for resource in parse_documents(block):
                assert isinstance(resource, ResiliencePolicy)
                assert resource.spec.adaptive_concurrency is not None
