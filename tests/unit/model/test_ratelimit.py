"""RateLimitPolicy at the model edge: a full document parses and round-trips, every
bad field is refused with its path and a reason, conflicts and missing targets are
reported by the index, and nothing else escapes."""

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
from gossamer.model import (
    InvalidResource,
    RateLimitPolicy,
    kind_for,
    parse_document,
    parse_documents,
)
from gossamer.model.ratelimitpolicy import KeyType
from tests.model_helpers import (
    DELETE,
    jsonish,
    mutate,
    parses_or_is_rejected_cleanly,
    set_path,
)

MESH = "mesh.gossamer.dev/v1alpha1"


def full_doc() -> dict[str, Any]:
    return {"apiVersion": MESH, "kind": "RateLimitPolicy",
            "metadata": {"name": "catalog", "namespace": "shop"},
            "spec": {
                "targetRef": {"group": "", "kind": "Service", "name": "catalog"},
                "local": {"requests": 100, "per": "1s", "burst": 20},
                "global": {"rules": [
                    {"requests": 1000, "per": "1m"},
                    {"key": {"type": "caller"}, "requests": 10, "per": "1s"},
                    {"match": {"path": {"type": "PathPrefix", "value": "/search"},
                               "method": "GET",
                               "headers": [{"name": "x-tier", "value": "free"}]},
                     "key": {"type": "header", "header": "x-user"},
                     "requests": 5, "per": "1h"},
                    {"key": {"type": "path"}, "requests": 50, "per": "10s"},
                ]},
            }}


def test_full_document_parses_and_round_trips() -> None:
    policy = parse_document(full_doc())
    assert isinstance(policy, RateLimitPolicy)
    assert policy.spec.local is not None
    assert policy.spec.local.per_ms == 1000
    assert policy.spec.global_ is not None
    rules = policy.spec.global_.rules
    assert [r.key.type if r.key else None for r in rules] == [
        None, KeyType.CALLER, KeyType.HEADER, KeyType.PATH]
    assert rules[2].per_ms == 3_600_000
    assert parse_document(policy.to_document()) == policy
    assert policy.to_document()["spec"]["global"]["rules"][0]["per"] == "1m"


def test_kind_aliases() -> None:
    for alias in ("RateLimitPolicy", "ratelimitpolicy", "ratelimitpolicies", "ratelimit", "rlp"):
        assert kind_for(alias) is RateLimitPolicy


S = "spec"
G = f"{S}.global.rules"
REJECTIONS: list[tuple[str, Any, str, str]] = [
    (f"{S}.targetRef", DELETE, f"{S}.targetRef", "required"),
    (f"{S}.targetRef.kind", "HTTPRoute", f"{S}.targetRef.kind", "attaches to a Service"),
    (f"{S}.bogus", 1, f"{S}.bogus", "unknown field"),
    (f"{S}.local.requests", 0, f"{S}.local.requests", "greater than or equal to 1"),
    (f"{S}.local.requests", "5", f"{S}.local.requests", "valid integer"),
    (f"{S}.local.requests", 2**32, f"{S}.local.requests", "less than or equal to"),
    (f"{S}.local.per", "1d", f"{S}.local.per", "is not a duration"),
    (f"{S}.local.per", "0s", f"{S}.local.per", "longer than 0"),
    (f"{S}.local.per", "10ms", f"{S}.local.per", "at least 50ms"),
    (f"{S}.local.per", DELETE, f"{S}.local.per", "required"),
    (f"{S}.local.burst", -1, f"{S}.local.burst", "greater than or equal to 0"),
    (f"{S}.local.burst", 2**32 - 1, f"{S}.local.burst", "requests + burst"),
    (f"{S}.global.rules", [], f"{S}.global.rules", "at least 1 item"),
    (f"{G}[0].requests", DELETE, f"{G}[0].requests", "required"),
    (f"{G}[0].per", "500ms", f"{G}[0].per", "at least 1s"),
    (f"{G}[0].per", "1y", f"{G}[0].per", "is not a duration"),
    (f"{G}[1].key.type", "ip", f"{G}[1].key.type", "'caller', 'header', 'path' or 'clientIP'"),
    (f"{G}[1].key.type", "clientIP", f"{G}[1].key.type",
     "only for a policy that targets a Gateway"),
    (f"{G}[1].key.header", "x-user", f"{G}[1].key.header", "only used with type header"),
    (f"{G}[2].key.header", DELETE, f"{G}[2].key.header", "required with type header"),
    (f"{G}[2].key.header", "bad header", f"{G}[2].key.header", "not a valid HTTP header"),
    (f"{G}[2].key.header", ":path", f"{G}[2].key.header", "not a valid HTTP header"),
    (f"{G}[2].match.method", "FETCH", f"{G}[2].match.method", "is not an HTTP method"),
    (f"{G}[2].match.path.value", "search", f"{G}[2].match.path.value", "start with '/'"),
    (f"{G}[2].match.path.type", "Glob", f"{G}[2].match.path.type", "PathPrefix"),
    (f"{G}[2].match.headers", [{"name": "x-tier", "value": "a"},
                               {"name": "X-Tier", "value": "b"}], f"{G}[2].match.headers",
     "matched only once"),
    (f"{G}[2].match.queryParams", [], f"{G}[2].match.queryParams", "unknown field"),
]


@pytest.mark.parametrize(("path", "value", "reported", "reason"), REJECTIONS,
                         ids=[f"{p}={v!r}"[:80] for p, v, _, _ in REJECTIONS])
def test_bad_field_is_rejected_with_its_path_and_reason(
        path: str, value: Any, reported: str, reason: str) -> None:
    doc = set_path(full_doc(), path, value)
    with pytest.raises(InvalidResource) as err:
        parse_document(doc)
    found = {e.path: e.reason for e in err.value.errors}
    assert reported in found, found
    assert reason in found[reported], found


def test_a_policy_without_any_limit_is_rejected() -> None:
    doc = full_doc()
    del doc["spec"]["local"], doc["spec"]["global"]
    with pytest.raises(InvalidResource) as err:
        parse_document(doc)
    assert [(e.path, e.reason) for e in err.value.errors] == [
        ("spec", "a RateLimitPolicy needs local, global or both")]


def _svc(name: str) -> Any:
    return parse_document({"apiVersion": MESH, "kind": "Service",
                           "metadata": {"name": name, "namespace": "shop"},
                           "spec": {"ports": [{"port": 80}]}})


def _policy(name: str, target: str) -> RateLimitPolicy:
    doc = set_path(set_path(full_doc(), "metadata.name", name), "spec.targetRef.name", target)
    policy = parse_document(doc)
    assert isinstance(policy, RateLimitPolicy)
    return policy


def test_index_first_policy_per_service_wins_and_missing_targets_are_reported() -> None:
    a, b, c = _policy("a", "catalog"), _policy("b", "catalog"), _policy("c", "nowhere")
    index = build_index([_svc("catalog"), c, b, a])
    assert index.rate_limits[("shop", "catalog")] == a
    assert ("shop", "nowhere") in index.rate_limits
    conds = {k.name: {x.type: x for x in v} for k, v in index.conditions.items()
             if k.kind == "RateLimitPolicy"}
    assert conds["a"]["Accepted"].status == "True"
    assert conds["b"]["Accepted"].reason == "Conflicted"
    assert "'a' already targets Service 'catalog'" in (conds["b"]["Accepted"].message or "")
    assert conds["c"]["ResolvedRefs"].reason == "TargetNotFound"



def test_index_keeps_gateway_policies_apart_from_a_service_of_the_same_name() -> None:
    edge = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "catalog"}
    gw_a = parse_document(set_path(set_path(full_doc(), "metadata.name", "gw-a"),
                                   "spec.targetRef", edge))
    gw_b = parse_document(set_path(set_path(full_doc(), "metadata.name", "gw-b"),
                                   "spec.targetRef", edge))
    svc = _policy("svc", "catalog")
    index = build_index([_svc("catalog"), gw_b, gw_a, svc])
    assert index.rate_limits == {("shop", "catalog"): svc}
    assert index.gateway_rate_limits == {("shop", "catalog"): gw_a}
    conds = {k.name: {x.type: x for x in v} for k, v in index.conditions.items()
             if k.kind == "RateLimitPolicy"}
    assert conds["svc"]["Accepted"].status == "True"
    assert conds["gw-a"]["Accepted"].status == "True"
    assert "'gw-a' already targets Gateway 'catalog'" in (
        conds["gw-b"]["Accepted"].message or "")


WORDS = ["caller", "header", "path", "clientIP", "Gateway", "gateway.networking.k8s.io",
         "x-user", "/search", "search", "", "5s", "0s", "1.5s",
         "10ms", "1h", "Service", "GET", "PathPrefix", "Exact", "catalog"]
JSONISH = jsonish(WORDS, 2**33)


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(full_doc())
    mutate(draw, doc, JSONISH)
    return doc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_policies_parse_or_raise_invalid_resource(doc: dict[str, Any]) -> None:
    note(json.dumps(doc, default=str)[:2000])
    parses_or_is_rejected_cleanly(doc)


DOCS = Path(__file__).parents[3] / "docs"


def section(text: str, title: str) -> str:
    """The lines of a top-level `# title` section, up to the next one (outside code)."""
    out: list[str] = []
    inside = fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("# "):
            inside = line == f"# {title}"
        if inside:
            out.append(line)
    return "\n".join(out) + "\n"


def test_rate_limit_examples_in_the_docs_are_valid() -> None:
    """Every example of the section parses; the invalid one fails as the page shows."""
    text = section((DOCS / "resilience.md").read_text(), "RateLimitPolicy")
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert len(blocks) >= 4
    for block in blocks:
        if block.startswith("# invalid"):
            with pytest.raises(InvalidResource) as info:
                parse_documents(block)
            assert f"error: {info.value}" in text
        else:
            assert {r.kind for r in parse_documents(block)} == {"RateLimitPolicy"}
    for field in ("local", "global", "Response headers", "Failures: fail open"):
        assert f"## {field}" in text
    assert "RateLimitPolicy" in (DOCS / "resources.md").read_text()
