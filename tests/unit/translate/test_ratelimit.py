"""RateLimitPolicy as Envoy config: golden file of the target's inbound listener, the
filter order (after RBAC, before the router), the descriptors per key type, no change
without a policy, and the generated config accepted by Envoy itself.

Regenerate the golden file after an intended change with
`GOSSAMER_UPDATE_GOLDEN=1 pytest tests/unit/translate/test_ratelimit.py` and review
the diff.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from gossamer.contract.names import MATCH_KEY, RULE_KEY, XDS_CLUSTER
from gossamer.index import build_index
from gossamer.model import Resource, parse_documents
from gossamer.model.ratelimitpolicy import path_regex
from gossamer.translate import MeshConfig, MeshSettings, translate_mesh, translate_proxy
from gossamer.translate.ratelimit import (
    ANONYMOUS,
    GLOBAL_FILTER,
    LOCAL_FILTER,
)
from gossamer.xds.types import CLUSTER, LISTENER, ROUTE
from tests.unit.translate.test_security import _static_bootstrap, assert_envoy_accepts
from tests.unit.translate.test_translate import _as_json, _frontend

HERE = Path(__file__).parents[1]
MESH = (HERE / "testdata" / "mesh.yaml").read_text()
POLICIES = (HERE / "testdata" / "ratelimit.yaml").read_text()
DENY = """
apiVersion: mesh.gossamer.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: no-admin}
spec:
  targetRef: {kind: Service, name: frontend}
  action: DENY
  rules: [{to: [{operation: {paths: [/admin/*]}}]}]
"""


def docs(extra: str = POLICIES) -> list[Resource]:
    return parse_documents(MESH + ("\n---\n" + extra if extra else ""))


def mesh_of(resources: list[Resource], **settings: Any) -> MeshConfig:
    return translate_mesh(build_index(resources, 7), MeshSettings(**settings))


def inbound(mesh: MeshConfig) -> dict[str, Any]:
    out: dict[str, Any] = _as_json(translate_proxy(mesh, _frontend()).snapshot)[
        "listeners"]["inbound"]
    return out


def http_filters(listener: dict[str, Any]) -> list[dict[str, Any]]:
    hcm = listener["filterChains"][0]["filters"][0]["typedConfig"]
    out: list[dict[str, Any]] = hcm["httpFilters"]
    return [f for f in out if f["name"] != "envoy.filters.http.tap"]


def test_golden_inbound_listener_with_a_full_policy() -> None:
    actual = inbound(mesh_of(docs(POLICIES + "\n---\n" + DENY)))
    golden = HERE / "golden" / "frontend-ratelimit.json"
    if os.environ.get("GOSSAMER_UPDATE_GOLDEN"):
        golden.write_text(json.dumps(actual, indent=2, sort_keys=True) + "\n")
    assert actual == json.loads(golden.read_text())


@pytest.mark.parametrize("mtls", [True, False])
def test_filters_run_after_rbac_and_before_the_router_on_every_chain(mtls: bool) -> None:
    listener = inbound(mesh_of(docs(POLICIES + "\n---\n" + DENY), mtls=mtls))
    for chain in listener["filterChains"]:
        names = [f["name"] for f in chain["filters"][0]["typedConfig"]["httpFilters"]]
        assert names == ["envoy.filters.http.tap", "envoy.filters.http.rbac.deny",
                         LOCAL_FILTER, GLOBAL_FILTER,
                         "envoy.filters.http.router"]


def test_local_bucket_and_global_service_settings() -> None:
    local, glob = http_filters(inbound(mesh_of(docs(), mtls=False)))[:2]
    assert local["typedConfig"]["tokenBucket"] == {
        "maxTokens": 120, "tokensPerFill": 100, "fillInterval": "1s"}
    assert local["typedConfig"]["enableXRatelimitHeaders"] == "DRAFT_VERSION_03"
    cfg = glob["typedConfig"]
    assert cfg["domain"] == "gossamer"
    assert cfg.get("failureModeDeny", False) is False
    assert cfg["enableXRatelimitHeaders"] == "DRAFT_VERSION_03"
    assert cfg["rateLimitService"]["grpcService"]["envoyGrpc"]["clusterName"] == XDS_CLUSTER


def test_descriptors_name_the_rule_gate_on_the_match_and_carry_the_key() -> None:
    glob = http_filters(inbound(mesh_of(docs(), mtls=False)))[1]
    rules = [r["actions"] for r in glob["typedConfig"]["rateLimits"]]
    assert [a[0]["genericKey"] for a in rules] == [
        {"descriptorKey": RULE_KEY, "descriptorValue": f"default/frontend-limits/{i}"}
        for i in range(5)]
    assert len(rules[0]) == 1  # the whole Service: one counter
    caller = rules[1][1]["extension"]["typedConfig"]
    assert caller["descriptorKey"] == "caller"
    assert "connection.uri_san_peer_certificate" in caller["text"]
    assert ANONYMOUS in caller["text"]
    gate, key = rules[2][1]["headerValueMatch"], rules[2][2]["requestHeaders"]
    assert (gate["descriptorKey"], gate["expectMatch"]) == (MATCH_KEY, True)
    assert {h["name"] for h in gate["headers"]} == {"x-tier", "x-region", ":method", ":path"}
    assert key == {"headerName": "x-user", "descriptorKey": "header"}
    assert rules[3][2]["extension"]["typedConfig"]["text"] == "request.url_path"
    assert len(rules[4]) == 2


@pytest.mark.parametrize(("kind", "value", "yes", "no"), [
    ("PathPrefix", "/search/", ["/search", "/search/x", "/search?q=1", "/search/a/b?x"],
     ["/searchx", "/", "/x/search"]),
    ("Exact", "/a.b", ["/a.b", "/a.b?x=1"], ["/a.b/", "/axb", "/a.bc"]),
    ("RegularExpression", "/items/[0-9]+", ["/items/12", "/items/3?x"], ["/items/x", "/items/"]),
])
def test_path_regexes_follow_gateway_semantics(kind: str, value: str, yes: list[str],
                                               no: list[str]) -> None:
    from gossamer.model.httproute import PathMatchType

    regex = re.compile(path_regex(PathMatchType(kind), value))
    assert all(regex.fullmatch(p) for p in yes)
    assert not any(regex.fullmatch(p) for p in no)


def test_policies_for_other_services_or_absent_ones_change_nothing() -> None:
    stray = POLICIES.replace("name: frontend}", "name: catalog}") + """
---
apiVersion: mesh.gossamer.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: nowhere}
spec: {targetRef: {kind: Service, name: nowhere}, local: {requests: 1, per: 1s}}
"""
    plain = translate_proxy(mesh_of(docs("")), _frontend()).snapshot
    with_stray = translate_proxy(mesh_of(docs(stray)), _frontend()).snapshot
    for type_url in (CLUSTER, ROUTE, LISTENER):
        assert {n: r.payload for n, r in plain.of(type_url).items()} == \
            {n: r.payload for n, r in with_stray.of(type_url).items()}


def test_a_conflicting_policy_takes_no_effect() -> None:
    second = POLICIES.replace("frontend-limits", "zz-second").replace("requests: 100",
                                                                      "requests: 7")
    local = http_filters(inbound(mesh_of(docs(POLICIES + "\n---\n" + second), mtls=False)))[0]
    assert local["typedConfig"]["tokenBucket"]["tokensPerFill"] == 100


def test_tcp_services_get_no_http_filters() -> None:
    proxy = _frontend(app_protocol="tcp")
    snap = _as_json(translate_proxy(mesh_of(docs()), proxy).snapshot)
    chain = snap["listeners"]["inbound"]["filterChains"][0]
    assert [f["name"] for f in chain["filters"]] == ["envoy.filters.network.tcp_proxy"]


@pytest.mark.slow
@pytest.mark.parametrize("mtls", [True, False])
def test_envoy_accepts_the_generated_config(mtls: bool, tmp_path: Path) -> None:
    snap = translate_proxy(mesh_of(docs(POLICIES + "\n---\n" + DENY), mtls=mtls),
                           _frontend()).snapshot
    bootstrap = _static_bootstrap(snap)
    bootstrap["staticResources"]["clusters"].append({
        "name": XDS_CLUSTER, "type": "STATIC", "connectTimeout": "1s",
        "loadAssignment": {"clusterName": XDS_CLUSTER, "endpoints": [{"lbEndpoints": [
            {"endpoint": {"address": {"socketAddress": {"address": "127.0.0.1",
                                                        "portValue": 9}}}}]}]}})
    assert_envoy_accepts(bootstrap, tmp_path)
