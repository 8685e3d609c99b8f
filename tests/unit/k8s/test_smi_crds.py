"""The SMI kinds' CRDs (k8s/crds.py smi_crds, the chart's `smi.crds`) take and refuse
what `gossamer apply` takes and refuses of those kinds: the SMI golden tests' documents
and hypothesis mutations of them, as tests/unit/k8s/test_crd_agreement.py checks
Gossamer's own kinds. Where they may differ is listed (CONTROL_PLANE), each with the
check that makes the difference."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gossamer.k8s.crds import smi_crds
from gossamer.model import InvalidResource, parse_document
from gossamer.model.regex import check_re2
from tests.model_helpers import jsonish, mutate, nodes
from tests.unit.k8s.kube_schema import decode, kube_errors

GOLDEN = Path(__file__).parents[1] / "golden" / "smi"
CRDS = {(c["spec"]["group"], c["spec"]["names"]["kind"]): c for c in smi_crds()}


def _crd(doc: dict[str, Any]) -> dict[str, Any] | None:
    group = str(doc.get("apiVersion", "")).rpartition("/")[0]
    return CRDS.get((group, str(doc.get("kind"))))


VALID = [d for p in sorted(GOLDEN.glob("*.input.yaml"))
         for d in yaml.safe_load_all(p.read_text()) if d and _crd(d) is not None]
WORDS = ["", "a", "web", "web-v2", "Web", "-x", "a" * 64, "ServiceAccount", "Deployment",
         "HTTPRouteGroup", "TCPRoute", "GET", "get", "*", "/api/.*", "(a", "x-env",
         "default", "shop", "8080", "65536", "0", "1", "10m"]
VALUES = jsonish(WORDS, 70_000) | st.sampled_from([2**63, -1, 0, 1, 100, 65535, 65536, 1.5,
                                                    True, False])
# What the API refuses and the CRD cannot express: (API error path, why, the check
# that the document is refused for that reason).
CONTROL_PLANE: list[tuple[str, str, Callable[[dict[str, Any]], bool]]] = [
    (r"spec\.destination\.namespace", "a TrafficTarget grants access in its own namespace; "
     "a CRD's CEL rules cannot read metadata.namespace",
     lambda doc: doc["spec"]["destination"].get("namespace") not in (
         None, doc["metadata"].get("namespace"))),
    (r"spec\.matches\[\d+\]\.(pathRegex|headers\..+)", "a valid RE2 regex: no CEL function "
     "says whether a string is one", lambda doc: any(
         _bad_regex(v) for m in doc["spec"]["matches"] if isinstance(m, dict)
         for v in [m.get("pathRegex"), *(m.get("headers") or {}).values()] if v is not None)),
]


def _bad_regex(value: Any) -> bool:
    try:
        check_re2(value)
    except (ValueError, TypeError):
        return True
    return False


def api_errors(doc: Any) -> list[str] | None:
    try:
        parse_document(doc)
    except InvalidResource as exc:
        return [e.path for e in exc.errors]
    return None


def test_there_is_one_crd_per_smi_kind_gossamer_reads() -> None:
    assert sorted(f"{c['metadata']['name']}/{c['spec']['versions'][0]['name']}"
                  for c in CRDS.values()) == [
        "httproutegroups.specs.smi-spec.io/v1alpha4", "tcproutes.specs.smi-spec.io/v1alpha4",
        "trafficsplits.split.smi-spec.io/v1alpha4",
        "traffictargets.access.smi-spec.io/v1alpha3"]
    assert {d["kind"] for d in VALID} == {"TrafficSplit", "TrafficTarget", "HTTPRouteGroup",
                                          "TCPRoute"}


@pytest.mark.parametrize("doc", VALID, ids=[f"{d['kind']}:{d['metadata']['name']}"
                                            for d in VALID])
def test_valid_documents_are_taken_by_both(doc: dict[str, Any]) -> None:
    assert api_errors(doc) is None
    assert kube_errors(doc, _crd(doc) or {}) == []


def check_agreement(doc: dict[str, Any]) -> None:
    crd = _crd(doc)
    assert crd is not None
    stored = decode(doc, crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    api, kube = api_errors(stored), kube_errors(doc, crd)
    if api is not None and not kube:
        left = [p for p in api if not any(re.fullmatch(pat, p) and check(stored)
                                          for pat, _, check in CONTROL_PLANE)]
        assert left == [], f"the CRD takes what the API refuses: {api}"
    if api is None and kube:
        assert all(e.startswith("metadata.") for e in kube), \
            f"the CRD refuses what the API takes: {kube}"


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(draw(st.sampled_from(VALID)))
    if draw(st.integers(0, 9)) < 3:
        mutate(draw, doc, VALUES)
        return doc
    places = [loc for loc in nodes(doc["spec"]) if loc]
    loc = draw(st.sampled_from(places))
    parent = doc["spec"]
    for part in loc[:-1]:
        parent = parent[part]
    if isinstance(parent, dict) and draw(st.booleans()):
        del parent[loc[-1]]
    else:
        parent[loc[-1]] = draw(st.sampled_from(WORDS) | VALUES)
    return doc


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutated())
def test_mutated_documents_are_taken_or_refused_by_both(doc: dict[str, Any]) -> None:
    assume(isinstance(doc.get("metadata"), dict) and _crd(doc) is not None)
    try:
        json.dumps(doc, allow_nan=False)
    except ValueError:
        assume(False)
    check_agreement(doc)
