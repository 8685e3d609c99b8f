"""The authorization evaluator: it reads the translated Envoy config, and its answers
are the ones the policies mean (Istio semantics), on a matrix of calls."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest
from envoy.config.listener.v3.listener_pb2 import Listener

from gossamer.contract.node import NodeMetadata
from gossamer.contract.spiffe import SpiffeId
from gossamer.explain.authz import CLOSED, Decision, Unsupported, check, explain
from gossamer.index import build_index
from gossamer.model import AuthorizationPolicy, Resource, parse_documents
from gossamer.model.authorizationpolicy import Action, Rule, RuleCondition, Source
from gossamer.translate import MeshConfig, MeshSettings, translate_mesh
from gossamer.translate.policies import covers
from gossamer.translate.protos import build, to_dict
from gossamer.translate.proxy import translate_proxy
from gossamer.xds.types import LISTENER

HERE = Path(__file__).parents[1]
NOW = time.time()
ADMIN = {"iss": "https://issuer.example", "sub": "alice", "aud": "catalog",
         "exp": NOW + 86_400, "groups": ["admins"]}  # valid for the whole suite


def docs(extra: str = "") -> list[Resource]:
    text = (HERE / "testdata" / "security.yaml").read_text()
    return parse_documents(text + ("\n---\n" + extra if extra else ""))


@pytest.fixture(scope="module")
def mesh() -> MeshConfig:
    return translate_mesh(build_index(docs(), 1))


def call(mesh: MeshConfig, frm: str | None, to: str, path: str = "/", method: str = "GET",
         **kw: Any) -> Decision:
    from_ns, _, from_svc = (frm or "").rpartition("/")
    to_ns, _, to_svc = to.rpartition("/")
    return check(mesh, from_service=from_svc or None, from_namespace=from_ns or "default",
                 to_service=to_svc, to_namespace=to_ns or "default", path=path, method=method,
                 **kw)


# (caller, callee, method, path, extra, status, deciding policy)
MATRIX: list[tuple[str | None, str, str, str, dict[str, Any], int, str | None]] = [
    # the allowed edge, and what it does not cover
    ("frontend", "catalog", "GET", "/api/items", {}, 200, "default/catalog-readers[rule-0]"),
    ("frontend", "catalog", "HEAD", "/healthz", {}, 200, "default/catalog-readers[rule-0]"),
    ("frontend", "catalog", "POST", "/api/items", {}, 403, None),
    ("frontend", "catalog", "GET", "/api", {}, 403, None),  # /api/* needs the slash
    ("frontend", "catalog", "GET", "/healthz/x", {}, 403, None),  # exact
    ("frontend", "catalog", "GET", "/api/items?x=1", {}, 200,
     "default/catalog-readers[rule-0]"),  # the query string is not part of the path
    # DENY wins over ALLOW
    ("frontend", "catalog", "GET", "/api/dump.bak", {}, 403, "default/catalog-no-debug[rule-0]"),
    ("frontend", "catalog", "GET", "/internal/x", {}, 403, "default/catalog-no-debug[rule-0]"),
    # namespace rules (and a DENY for callers outside a namespace)
    ("monitoring/prometheus", "catalog", "GET", "/metrics", {}, 200,
     "default/catalog-readers[rule-1]"),
    ("frontend", "catalog", "GET", "/metrics", {}, 403, None),
    ("monitoring/prometheus", "catalog", "GET", "/metrics", {"headers": {"X-Debug": "1"}}, 403,
     "default/catalog-no-debug[rule-1]"),
    ("frontend", "catalog", "GET", "/api/x", {"headers": {"x-debug": "1"}}, 200,
     "default/catalog-readers[rule-0]"),
    # the denied edge: default deny everywhere else
    ("catalog", "frontend", "GET", "/", {}, 403, None),
    ("monitoring/prometheus", "frontend", "GET", "/metrics", {}, 403, None),
    # STRICT: a caller without a sidecar is not even connected
    (None, "frontend", "GET", "/", {}, CLOSED, None),
    # PERMISSIVE catalog: plaintext gets in, but has no identity
    (None, "catalog", "GET", "/api/items", {}, 403, None),
    # JWT: a token with the right claims, or not
    (None, "catalog", "GET", "/admin/users", {"claims": ADMIN}, 200,
     "default/catalog-readers[rule-2]"),
    (None, "catalog", "GET", "/admin/users", {"claims": ADMIN | {"groups": "admins"}}, 200,
     "default/catalog-readers[rule-2]"),
    (None, "catalog", "GET", "/admin/users", {"claims": ADMIN | {"groups": ["users"]}}, 403,
     None),
    (None, "catalog", "GET", "/admin/users", {}, 403, None),
    (None, "catalog", "GET", "/admin/users", {"claims": ADMIN | {"aud": ["x", "y"]}}, 401,
     "default/catalog-jwt[jwt-0]"),
    (None, "catalog", "GET", "/admin/users", {"claims": ADMIN | {"exp": NOW - 60}}, 401,
     "default/catalog-jwt[jwt-0]"),
    (None, "catalog", "GET", "/admin/users", {"claims": ADMIN | {"iss": "https://evil"}}, 401,
     None),
    ("frontend", "catalog", "GET", "/admin/users", {"claims": ADMIN}, 200,
     "default/catalog-readers[rule-2]"),
    # TCP: the connection only; a denial closes it
    ("catalog", "data/db", "GET", "/", {}, 200, "data/db-clients[rule-0]"),
    ("frontend", "data/db", "GET", "/", {}, CLOSED, None),
    (None, "data/db", "GET", "/", {}, CLOSED, None),
]


@pytest.mark.parametrize(("frm", "to", "method", "path", "extra", "status", "policy"), MATRIX,
                         ids=[f"{m[0]}->{m[1]} {m[2]} {m[3]} {sorted(m[4])}" for m in MATRIX])
def test_matrix(mesh: MeshConfig, frm: str | None, to: str, method: str, path: str,
                extra: dict[str, Any], status: int, policy: str | None) -> None:
    decision = call(mesh, frm, to, path, method, **extra)
    assert (decision.status, decision.policy) == (status, policy), decision.reason
    assert decision.allowed is (status == 200)
    assert decision.reason


def test_require_a_token_with_request_principals(mesh: MeshConfig) -> None:
    require = """
apiVersion: mesh.gossamer.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: require-jwt}
spec:
  targetRef: {kind: Service, name: catalog}
  action: DENY
  rules: [{from: [{source: {notRequestPrincipals: ["*"]}}], to: [{operation: {paths: [/api/*]}}]}]
"""
    strict = translate_mesh(build_index(docs(require), 2))
    denied = call(strict, "frontend", "catalog", "/api/items")
    assert (denied.status, denied.policy) == (403, "default/require-jwt[rule-0]")
    token = ADMIN | {"groups": []}
    assert call(strict, "frontend", "catalog", "/api/items", claims=token).allowed
    assert call(mesh, "frontend", "catalog", "/api/items").allowed  # without the policy


def test_mtls_off_no_caller_has_an_identity() -> None:
    plain = translate_mesh(build_index(docs(), 1), MeshSettings(mtls=False))
    decision = call(plain, "frontend", "catalog", "/api/items")
    assert decision.status == 403
    assert "not a proven identity" in decision.reason
    # STRICT means nothing without mTLS: a plaintext caller reaches frontend's RBAC.
    assert call(plain, None, "frontend").status == 403


def test_unknown_service_and_port(mesh: MeshConfig) -> None:
    assert call(mesh, "frontend", "nowhere").status == CLOSED
    assert not check(mesh, from_service="frontend", to_service="catalog", port=81).allowed
    assert check(mesh, from_service="frontend", to_service="catalog", port=9090,
                 path="/api/x").allowed


def test_no_policy_allows_everything() -> None:
    open_mesh = translate_mesh(build_index(
        [r for r in docs() if r.kind != "AuthorizationPolicy"], 1))
    decision = call(open_mesh, "catalog", "frontend", "/anything", "DELETE")
    assert decision.allowed
    assert "no ALLOW policy covers the workload" in decision.reason


def test_explain_takes_a_listener_and_refuses_matchers_it_does_not_know(
        mesh: MeshConfig) -> None:
    proxy = NodeMetadata.from_metadata("c", {"service": "catalog", "workload": "catalog-0",
                                          "inbound_port": 15006, "app_port": 8080})
    snap = translate_proxy(mesh, proxy).snapshot
    listener = Listener.FromString(snap.of(LISTENER)["inbound"].payload)
    web = SpiffeId("gossamer.local", "default", "web")
    assert explain(listener, source=web, path="/api/x").allowed
    data = to_dict(listener)
    hcm = data["filterChains"][0]["filters"][0]["typedConfig"]
    allow = hcm["httpFilters"][3]["typedConfig"]["rules"]["policies"]  # tap, jwt, deny, allow
    allow["default/catalog-readers[rule-0]"]["principals"] = [
        {"directRemoteIp": {"addressPrefix": "10.0.0.0", "prefixLen": 8}}]
    with pytest.raises(Unsupported):
        explain(build(Listener, data), source=web, path="/api/x")


# ---------------------------------------------------------------- a reference model
# An independent, direct reading of the policy documents with Istio's semantics. The
# evaluator works on translated Envoy config; agreeing on a grid of calls checks the
# translation and the evaluator at once.


def _pattern(pattern: str, value: str | None) -> bool:
    if value is None:
        return False
    if pattern == "*":
        return value != ""
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return value == pattern


def _any_not(values: list[str], not_values: list[str], test: Any) -> bool:
    return ((not values or any(test(v) for v in values))
            and not any(test(v) for v in not_values))


def _principal(pattern: str, peer: str | None) -> bool:
    if peer is None:
        return False
    return pattern == "*" or peer == (pattern if pattern.startswith("spiffe://")
                                      else "spiffe://" + pattern)


def _namespace(pattern: str, peer: str | None) -> bool:
    return peer is not None and (pattern == "*" or f"/ns/{pattern}/" in peer)


def _req_principal(pattern: str, claims: dict[str, Any] | None) -> bool:
    if not claims:
        return False
    if pattern == "*":
        return True
    iss, _, sub = pattern.rpartition("/")
    return ((iss == "*" or claims.get("iss") == iss)
            and (sub == "*" or claims.get("sub") == sub))


def _claim(claims: dict[str, Any] | None, path: tuple[str, ...], pattern: str) -> bool:
    node: Any = claims or {}
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    items = node if isinstance(node, list) else [node]
    return any(isinstance(i, str) and _pattern(pattern, i) for i in items)


def _source(src: Source, peer: str | None, claims: dict[str, Any] | None) -> bool:
    return (_any_not(src.principals, src.not_principals, lambda p: _principal(p, peer))
            and _any_not(src.namespaces, src.not_namespaces, lambda n: _namespace(n, peer))
            and _any_not(src.request_principals, src.not_request_principals,
                         lambda r: _req_principal(r, claims)))


def _condition(c: RuleCondition, peer: str | None, req: dict[str, Any]) -> bool:
    key = c.parsed_key
    tests = {
        "source.principal": lambda v: _principal(v, peer),
        "source.namespace": lambda v: _namespace(v, peer),
        "request.headers": lambda v: _pattern(v, req["headers"].get(key.path[0] if key.path
                                                                     else "")),
        "request.auth.claims": lambda v: _claim(req["claims"], key.path, v),
    }
    return _any_not(c.values, c.not_values, tests[key.kind])


def _rule(rule: Rule, peer: str | None, req: dict[str, Any]) -> bool:
    path = req["path"].split("?")[0]
    ops = [t.operation for t in rule.to]
    return ((not rule.from_ or any(_source(f.source, peer, req["claims"]) for f in rule.from_))
            and (not ops or any(
                _any_not(o.methods, o.not_methods, lambda m: _pattern(m, req["method"]))
                and _any_not(o.paths, o.not_paths, lambda p: _pattern(p, path))
                for o in ops))
            and all(_condition(c, peer, req) for c in rule.when))


def reference(policies: list[AuthorizationPolicy], peer: str | None,
              req: dict[str, Any]) -> bool:
    deny = [p for p in policies if p.spec.action is Action.DENY]
    allow = [p for p in policies if p.spec.action is Action.ALLOW]
    if any(_rule(r, peer, req) for p in deny for r in p.spec.rules):
        return False
    return not allow or any(_rule(r, peer, req) for p in allow for r in p.spec.rules)


CALLERS = [("default", "frontend", "web"), ("default", "catalog", "catalog"),
           ("monitoring", "prometheus", "prometheus"), None]
REQUESTS: list[dict[str, Any]] = [
    dict(method=m, path=p, headers=h, claims=c) for m, p, h, c in itertools.product(
    ["GET", "POST", "HEAD"],
    ["/api/x", "/api", "/healthz", "/metrics", "/internal/a", "/x.bak", "/admin/x?q=1"],
    [{}, {"x-debug": "yes"}],
    [None, ADMIN, ADMIN | {"groups": ["users"], "sub": "bob"}])]


def test_evaluator_agrees_with_the_reference_semantics(mesh: MeshConfig) -> None:
    covering = [p for p in mesh.index.authorization_policies
                if covers(p, "default", frozenset({("default", "catalog")}))]
    disagreements = []
    for caller, req in itertools.product(CALLERS, REQUESTS):
        peer = None if caller is None else f"spiffe://gossamer.local/ns/{caller[0]}/sa/" \
                                           f"{caller[2]}"
        expected = reference(covering, peer, req)
        got = check(mesh, from_service=caller[1] if caller else None,
                    from_namespace=caller[0] if caller else "default", to_service="catalog",
                    method=req["method"], path=req["path"], headers=req["headers"],
                    claims=req["claims"])
        if got.allowed != expected:
            disagreements.append((caller, req, got))
    assert not disagreements, disagreements[:3]
    assert len(CALLERS) * len(REQUESTS) == 504
