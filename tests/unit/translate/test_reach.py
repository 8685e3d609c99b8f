"""Egress scopes inferred from AuthorizationPolicies (translate/reach.py): a sidecar no
Sidecar covers holds the Services its identity could be let into, never fewer.

Regenerate the golden file after an intended change with
GOSSAMER_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/translate/test_reach.py
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

from gossamer.contract.node import NodeMetadata
from gossamer.index import MeshIndex, build_index
from gossamer.model import AuthorizationPolicy, InvalidResource, Resource, parse_document
from gossamer.model.authorizationpolicy import Action, Rule, Source, principal_id
from gossamer.translate import translate_mesh, translate_proxy
from gossamer.translate.mesh import MeshConfig
from gossamer.translate.policies import proxy_policies
from gossamer.xds.types import CLUSTER

API = "mesh.gossamer.dev/v1alpha1"
GOLDEN = Path(__file__).parent.parent / "golden" / "reach-scopes.json"
TD = "gossamer.local"


def service(name: str, ns: str = "default") -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80, "protocol": "http"}]}}


def workload(svc: str, n: int, ns: str = "default", account: str | None = None,
             app_port: int = 8080) -> dict[str, Any]:
    spec: dict[str, Any] = {"service": svc, "address": "127.0.0.1", "port": 20000 + n,
                            "appPort": app_port}
    if account:
        spec["serviceAccount"] = account
    return {"apiVersion": API, "kind": "Workload",
            "metadata": {"name": f"{svc}-{n}", "namespace": ns, "labels": {"app": svc}},
            "spec": spec}


def authz(name: str, spec: dict[str, Any], ns: str = "default",
          target: str | None = None) -> dict[str, Any]:
    if target is not None:
        spec = {"targetRef": {"kind": "Service", "name": target}, **spec}
    return {"apiVersion": API, "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def proxy(svc: str, ns: str = "default", account: str | None = None,
          outbound: int = 15001, **extra: Any) -> NodeMetadata:
    return NodeMetadata.from_metadata(f"{svc}-0.{ns}", {
        "service": svc, "namespace": ns, "workload": f"{svc}-0", "inbound_port": 15006,
        "app_port": 8080, "outbound_port": outbound,
        **({"service_account": account} if account else {}), **extra})


INFER = {"apiVersion": API, "kind": "Mesh", "metadata": {"name": "default"},
         "spec": {"reachability": "inferred"}}


def mesh_of(docs: list[dict[str, Any]]) -> MeshConfig:
    """The mesh of `docs`, inferring scopes unless `docs` hold a Mesh of their own."""
    if not any(d["kind"] == "Mesh" for d in docs):
        docs = [*docs, INFER]
    resources: list[Resource] = [parse_document(d).with_revision(i + 1)
                                 for i, d in enumerate(docs)]
    return translate_mesh(build_index(resources, len(resources)))


def principal(ns: str, sa: str) -> str:
    return f"{TD}/ns/{ns}/sa/{sa}"


# web, api, db, audit in `default`; ledger in `payments`; `new` has no workloads.
BASE = [service("web"), service("api"), service("db"), service("audit"), service("new"),
        service("ledger", ns="payments"),
        workload("web", 0), workload("api", 1), workload("db", 2), workload("audit", 3),
        workload("ledger", 4, ns="payments")]
POLICIES = [
    # api: web by principal; db: api, and any caller for one path (could match).
    authz("api", {"rules": [{"from": [{"source": {"principals": [principal("default", "web")]}}]}]},
          target="api"),
    authz("db", {"rules": [
        {"from": [{"source": {"principals": [principal("default", "api")]}}]},
        {"to": [{"operation": {"paths": ["/health"]}}],
         "from": [{"source": {"namespaces": ["payments"]}}]}]}, target="db"),
    # audit: nobody (an ALLOW without rules).
    authz("audit", {}, target="audit"),
    # ledger: its namespace, but web is denied outright and api only on some paths.
    authz("ledger", {"rules": [{"from": [{"source": {"namespaces": ["default", "payments"]}}]}]},
          ns="payments", target="ledger"),
    authz("ledger-deny", {"action": "DENY", "rules": [
        {"from": [{"source": {"principals": [principal("default", "web")]}}]},
        {"from": [{"source": {"principals": [principal("default", "api")]}}],
         "to": [{"operation": {"paths": ["/admin/*"]}}]}]}, ns="payments", target="ledger"),
]


def scopes(mesh: MeshConfig, callers: list[NodeMetadata]) -> dict[str, list[str] | None]:
    out: dict[str, list[str] | None] = {}
    for p in callers:
        scope = mesh.scope_of(p)
        out[f"{p.namespace}/{p.account}"] = None if scope is None else sorted(
            f"{ns}/{name}" for ns, name in scope)
    return out


def test_golden_inferred_scopes() -> None:
    mesh = mesh_of([*BASE, *POLICIES])
    callers = [proxy("web"), proxy("api"), proxy("db"), proxy("ledger", ns="payments"),
               proxy("x", ns="other", account="robot")]
    actual = scopes(mesh, callers)
    if os.environ.get("GOSSAMER_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(actual, indent=2, sort_keys=True) + "\n")
    assert actual == json.loads(GOLDEN.read_text())
    # What the golden file says, for its reader: web reaches api but not db, audit or
    # (denied outright) ledger; api reaches db and ledger (DENY only on some paths) but
    # not itself; `new` has no workloads yet, web no policy.
    assert actual["default/web"] == ["default/api", "default/new", "default/web"]
    assert actual["default/api"] == ["default/db", "default/new", "default/web",
                                     "payments/ledger"]


def test_scope_is_the_whole_mesh_until_a_policy_restricts() -> None:
    mesh = mesh_of(BASE)
    assert mesh.scope_of(proxy("web")) is None
    # A DENY that may spare some requests, and an ALLOW everyone matches: no restriction.
    allow_all = authz("all", {"rules": [{"from": [{"source": {"namespaces": ["*"]}}]}]},
                      target="db")
    partial_deny = authz("d", {"action": "DENY", "rules": [
        {"to": [{"operation": {"methods": ["DELETE"]}}]}]}, ns="gossamer-system")
    mesh = mesh_of([*BASE, allow_all, partial_deny])
    assert mesh.scope_of(proxy("web")) is None
    assert mesh.reachability().restricted is False


def test_a_sidecar_overrides_and_declared_upstreams_stay() -> None:
    sidecar = {"apiVersion": API, "kind": "Sidecar",
               "metadata": {"name": "all", "namespace": "default"},
               "spec": {"egress": {"hosts": ["*/*"]}}}
    assert mesh_of([*BASE, *POLICIES, sidecar]).scope_of(proxy("web")) is None
    up = [{"service": "audit", "port": 80, "local_port": 16001}]
    scope = mesh_of([*BASE, *POLICIES]).scope_of(proxy("web", upstreams=up))
    assert scope is not None
    assert ("default", "audit") in scope
    # A proxy without the catch-all listener stays scoped to its upstreams.
    assert mesh_of([*BASE, *POLICIES]).scope_of(proxy("web", outbound=0, upstreams=up)) \
        == frozenset({("default", "audit")})


def test_inference_is_the_meshs_choice_and_off_by_default() -> None:
    mesh_doc = {"apiVersion": API, "kind": "Mesh", "metadata": {"name": "default"},
                "spec": {"reachability": "all"}}
    assert mesh_of([*BASE, *POLICIES, mesh_doc]).scope_of(proxy("web")) is None
    mesh_doc["spec"] = {}  # a Mesh that says nothing: every Service, as without one
    assert mesh_of([*BASE, *POLICIES, mesh_doc]).scope_of(proxy("web")) is None
    resources = [parse_document(d).with_revision(i + 1)
                 for i, d in enumerate([*BASE, *POLICIES])]
    assert translate_mesh(build_index(resources, len(resources))).scope_of(
        proxy("web")) is None
    mesh_doc["spec"] = {"reachability": "inferred"}
    assert mesh_of([*BASE, *POLICIES, mesh_doc]).scope_of(proxy("web")) is not None
    with pytest.raises(InvalidResource, match="reachability"):
        parse_document({**mesh_doc, "spec": {"reachability": "some"}})


def test_an_unreachable_service_has_no_cluster_and_an_allow_brings_it() -> None:
    mesh = mesh_of([*BASE, *POLICIES])
    clusters = translate_proxy(mesh, proxy("web")).snapshot.of(CLUSTER)
    assert "outbound|80||db.default" not in clusters
    assert "outbound|80||api.default" in clusters
    allow = authz("db-web", {"rules": [{"from": [{"source": {
        "principals": [principal("default", "web")]}}]}]}, target="db")
    mesh = mesh_of([*BASE, *POLICIES, allow])
    assert "outbound|80||db.default" in translate_proxy(mesh, proxy("web")).snapshot.of(CLUSTER)


# ---------------------------------------------------------------- soundness

ACCOUNTS = [("default", "a"), ("default", "b"), ("other", "c")]
METHODS, PATHS, PORTS = ["GET", "POST"], ["/x", "/y"], [8080, 9090]
REQUEST_PRINCIPALS = [None, "iss/alice"]


def _random_source(rng: random.Random) -> dict[str, Any]:
    out: dict[str, Any] = {}
    while not out:
        for field, pool in (
                ("principals", ["*", *(principal(n, s) for n, s in ACCOUNTS),
                                f"spiffe://{TD}/ns/default/sa/a", "other.td/ns/default/sa/b"]),
                ("notPrincipals", ["*", *(principal(n, s) for n, s in ACCOUNTS)]),
                ("namespaces", ["*", "default", "other", "nowhere"]),
                ("notNamespaces", ["*", "default", "other"]),
                ("requestPrincipals", ["*", "iss/alice", "iss/bob"])):
            if rng.random() < 0.25:
                out[field] = rng.sample(pool, rng.randint(1, 2))
    return out


def _random_rule(rng: random.Random) -> dict[str, Any]:
    rule: dict[str, Any] = {}
    if rng.random() < 0.8:
        rule["from"] = [{"source": _random_source(rng)} for _ in range(rng.randint(1, 2))]
    if rng.random() < 0.3:
        op = rng.choice([{"methods": [rng.choice(METHODS)]}, {"paths": [rng.choice(PATHS)]},
                         {"ports": [rng.choice(PORTS)]}, {"notMethods": ["GET"]}])
        rule["to"] = [{"operation": op}]
    if rng.random() < 0.2:
        rule["when"] = [rng.choice([
            {"key": "request.headers[x-k]", "values": ["1"]},
            {"key": "source.namespace", "values": [rng.choice(["default", "other"])]}])]
    return rule


def _random_mesh(rng: random.Random) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = [service(f"s{i}") for i in range(6)]
    docs.append(service("t0", ns="other"))
    for n in range(8):
        name = rng.choice(["s0", "s1", "s2", "s3", "s4", "t0"])  # s5: no workloads
        ns = "other" if name == "t0" else "default"
        docs.append(workload(name, n, ns=ns, account=rng.choice([None, "a", "b", "c"]),
                             app_port=rng.choice(PORTS)))
    for k in range(rng.randint(1, 6)):
        ns, target = rng.choice([("default", "s0"), ("default", "s1"), ("default", "s2"),
                                 ("default", "s3"), ("default", None), ("other", None),
                                 ("gossamer-system", None), ("other", "t0")])
        spec: dict[str, Any] = {"action": rng.choice(["ALLOW", "ALLOW", "DENY"]),
                                "rules": [_random_rule(rng) for _ in range(rng.randint(0, 2))]}
        docs.append(authz(f"p{k}", spec, ns=ns, target=target))
    return docs


def _source_matches(src: Source, ns: str, sa: str, jwt: str | None) -> bool:
    spiffe = f"spiffe://{TD}/ns/{ns}/sa/{sa}"

    def principal_is(p: str) -> bool:
        return p == "*" or principal_id(p) == spiffe

    def namespace_is(n: str) -> bool:
        return n in ("*", ns)

    def jwt_is(r: str) -> bool:
        return jwt is not None and (r == "*" or r == jwt)

    return all((not src.principals or any(principal_is(p) for p in src.principals),
                not any(principal_is(p) for p in src.not_principals),
                not src.namespaces or any(namespace_is(n) for n in src.namespaces),
                not any(namespace_is(n) for n in src.not_namespaces),
                not src.request_principals or any(jwt_is(r) for r in src.request_principals),
                not any(jwt_is(r) for r in src.not_request_principals)))


def _rule_matches(rule: Rule, caller: tuple[str, str], request: tuple[Any, ...]) -> bool:
    """Istio's semantics for one concrete request, written from the spec, independent
    of translate/reach.py: any `from`, any `to`, every `when`."""
    method, path, port, header, jwt = request
    ns, sa = caller
    if rule.from_ and not any(_source_matches(f.source, ns, sa, jwt) for f in rule.from_):
        return False
    if rule.to and not any(
            (not o.methods or method in o.methods) and method not in o.not_methods
            and (not o.paths or path in o.paths) and (not o.ports or port in o.ports)
            for t in rule.to for o in [t.operation]):
        return False
    for cond in rule.when:
        value = header if cond.key == "request.headers[x-k]" else ns
        if value not in cond.values:
            return False
    return True


def _allowed(policies: list[AuthorizationPolicy], caller: tuple[str, str],
             request: tuple[Any, ...]) -> bool:
    def hits(action: Action) -> list[bool]:
        return [any(_rule_matches(r, caller, request) for r in p.spec.rules)
                for p in policies if p.spec.action is action]
    if any(hits(Action.DENY)):
        return False
    allows = hits(Action.ALLOW)
    return not allows or any(allows)


def _reachable(index: MeshIndex, caller: tuple[str, str]) -> set[tuple[str, str]]:
    """Every Service one of whose workloads lets some request from `caller` through."""
    out = {key for key in index.services if not index.accounts.get(key)}
    for w in index.workloads:
        ns, name = w.metadata.namespace, w.metadata.name
        covered = proxy_policies(index, ns, index.proxy_services(ns, name, w.spec.service))
        policies = [*covered.deny, *covered.allow]
        requests = [(m, p, w.spec.app_port, h, j) for m in METHODS for p in PATHS
                    for h in (None, "1") for j in REQUEST_PRINCIPALS]
        if any(_allowed(policies, caller, r) for r in requests):
            out.update(index.workload_services.get((ns, name), ()))
    return out


@pytest.mark.slow
def test_inferred_scope_never_leaves_out_a_service_rbac_would_let_the_caller_reach() -> None:
    rng = random.Random(18)
    excluded = 0
    for case in range(300):
        docs = _random_mesh(rng)
        mesh = mesh_of(docs)
        for ns, sa in ACCOUNTS:
            scope = mesh.scope_of(proxy("caller", ns=ns, account=sa))
            reachable = _reachable(mesh.index, (ns, sa))
            if scope is not None:
                assert reachable <= scope, (case, ns, sa, sorted(reachable - scope), docs)
                excluded += len(set(mesh.index.services) - scope)
    assert excluded > 100  # the inference does leave Services out
