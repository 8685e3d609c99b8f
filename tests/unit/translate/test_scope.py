"""Sidecar egress scopes: which Sidecar applies, what a scoped proxy is sent, and that
a change outside its scope leaves its config as it was."""

from __future__ import annotations

import re
from typing import Any

import pytest
from envoy.config.route.v3.route_pb2 import RouteConfiguration

from gossamer.contract.node import NodeMetadata
from gossamer.index import build_index
from gossamer.model import InvalidResource, Resource, parse_document
from gossamer.translate import InconsistentConfig, translate_mesh, translate_proxy
from gossamer.translate.consistency import check_consistency
from gossamer.translate.mesh import MeshConfig
from gossamer.xds.types import CLUSTER, ENDPOINT, ROUTE

API = "mesh.gossamer.dev/v1alpha1"


def service(name: str, ns: str = "default", port: int = 80,
            protocol: str = "http") -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"ports": [{"port": port, "protocol": protocol}]}}


def workload(svc: str, n: int, ns: str = "default", **labels: str) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Workload",
            "metadata": {"name": f"{svc}-{n}", "namespace": ns, "labels": labels},
            "spec": {"service": svc, "address": "127.0.0.1", "port": 20000 + n}}


def sidecar(name: str, hosts: list[str], ns: str = "default",
            selector: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"egress": {"hosts": hosts}}
    if selector is not None:
        spec["workloadSelector"] = {"matchLabels": selector}
    return {"apiVersion": API, "kind": "Sidecar", "metadata": {"name": name, "namespace": ns},
            "spec": spec}


def split_route(parent: str, backends: list[str], mirror: str) -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": parent, "namespace": "default"},
            "spec": {"parentRefs": [{"kind": "Service", "name": parent, "port": 80}],
                     "rules": [{"backendRefs": [{"name": b, "port": 80, "weight": 1}
                                                for b in backends],
                                "filters": [{"type": "RequestMirror", "requestMirror": {
                                    "backendRef": {"name": mirror, "port": 80}}}]}]}}


def proxy(svc: str, ns: str = "default", outbound: int = 15001,
          upstreams: list[dict[str, Any]] | None = None, **labels: str) -> NodeMetadata:
    return NodeMetadata.from_metadata(f"{svc}-0.{ns}", {
        "service": svc, "namespace": ns, "workload": f"{svc}-0", "inbound_port": 15006,
        "app_port": 8080, "outbound_port": outbound, "labels": labels,
        "upstreams": upstreams or []})


def mesh_of(docs: list[dict[str, Any]]) -> MeshConfig:
    resources: list[Resource] = [parse_document(d).with_revision(i + 1)
                                 for i, d in enumerate(docs)]
    return translate_mesh(build_index(resources, len(resources)))


def outbound_services(names: list[str]) -> set[str]:
    return {n.rsplit("||", 1)[1] for n in names if n.startswith("outbound|")}


BASE = [service("web"), service("catalog"), service("catalog-v2"), service("shadow"),
        service("ledger", ns="payments"), service("audit", ns="payments"),
        workload("web", 0, app="web"), workload("catalog", 1), workload("catalog-v2", 2),
        workload("shadow", 3), workload("ledger", 4, ns="payments")]


def test_scoped_proxy_gets_its_services_and_their_route_backends_only() -> None:
    mesh = mesh_of([*BASE, split_route("catalog", ["catalog", "catalog-v2"], "shadow"),
                    sidecar("web", ["./catalog", "payments/ledger"], selector={"app": "web"})])
    config = translate_proxy(mesh, proxy("web", app="web"))
    snap = config.snapshot
    assert config.scope == frozenset({("default", "catalog"), ("payments", "ledger")})
    # catalog's route splits to catalog-v2 and mirrors to shadow: those come along.
    expected = {"catalog.default", "catalog-v2.default", "shadow.default", "ledger.payments"}
    assert outbound_services(list(snap.of(CLUSTER))) == expected
    assert outbound_services(list(snap.of(ENDPOINT))) == expected
    routes = RouteConfiguration.FromString(snap.of(ROUTE)["outbound"].payload)
    assert [v.name for v in routes.virtual_hosts] == [
        "catalog.default:80", "ledger.payments:80", "no-such-service"]
    # The whole mesh, for a proxy no Sidecar covers.
    whole = translate_proxy(mesh, proxy("other", app="other")).snapshot
    assert len(outbound_services(list(whole.of(CLUSTER)))) == 6


def test_which_sidecar_applies() -> None:
    docs = [*BASE, sidecar("ns-default", ["./catalog"]),
            sidecar("a-web", ["./shadow"], selector={"app": "web"}),
            sidecar("z-web", ["./web"], selector={"app": "web"}),
            sidecar("mesh", ["payments/*"], ns="gossamer-system")]
    mesh = mesh_of(docs)
    # A selector beats the namespace default; of two selectors, the first by name.
    assert mesh.scope_of(proxy("web", app="web")) == frozenset({("default", "shadow")})
    assert mesh.scope_of(proxy("catalog")) == frozenset({("default", "catalog")})
    # No Sidecar in its namespace: the mesh root namespace's default.
    assert mesh.scope_of(proxy("ledger", ns="payments")) == frozenset(
        {("payments", "ledger"), ("payments", "audit")})
    # `*/*` is the whole mesh; the declared upstreams always stay.
    mesh = mesh_of([*BASE, sidecar("all", ["*/*"])])
    assert mesh.scope_of(proxy("web")) is None
    mesh = mesh_of([*BASE, sidecar("one", ["*/shadow"])])
    up = [{"service": "ledger", "namespace": "payments", "port": 80, "local_port": 16001}]
    assert mesh.scope_of(proxy("web", upstreams=up)) == frozenset(
        {("default", "shadow"), ("payments", "ledger")})


def test_a_proxy_without_catch_all_listener_is_scoped_to_its_upstreams() -> None:
    mesh = mesh_of(BASE)
    up = [{"service": "catalog", "port": 80, "local_port": 16001}]
    snap = translate_proxy(mesh, proxy("web", outbound=0, upstreams=up)).snapshot
    assert outbound_services(list(snap.of(CLUSTER))) == {"catalog.default"}
    # (and its inbound listener's own route config, by RDS)
    assert set(snap.of(ROUTE)) == {"inbound", "upstream|80||catalog.default"}


def test_a_change_outside_the_scope_leaves_the_proxy_config_unchanged() -> None:
    scoped = sidecar("web", ["./catalog"], selector={"app": "web"})
    before = translate_proxy(mesh_of([*BASE, scoped]), proxy("web", app="web")).snapshot
    after = translate_proxy(mesh_of([*BASE, scoped, split_route("shadow", ["web"], "web"),
                                     workload("ledger", 9, ns="payments")]),
                            proxy("web", app="web")).snapshot
    assert dict(after.versions) == dict(before.versions)
    # ...and a change inside it moves the proxy's routes.
    inside = translate_proxy(mesh_of([*BASE, scoped, split_route("catalog", ["web"], "web")]),
                             proxy("web", app="web")).snapshot
    assert inside.versions[ROUTE] != before.versions[ROUTE]
    assert outbound_services(list(inside.of(CLUSTER))) == {"catalog.default", "web.default"}


def test_second_namespace_default_is_reported_and_ignored() -> None:
    docs = [*BASE, sidecar("a", ["./catalog"]), sidecar("b", ["./web"])]
    resources = [parse_document(d).with_revision(i + 1) for i, d in enumerate(docs)]
    index = build_index(resources, len(resources))
    assert [s.metadata.name for s in index.sidecars] == ["a"]
    key = resources[-1].key
    (cond,) = index.conditions[key]
    assert (cond.status, cond.reason) == ("False", "Conflicted")
    assert "'a'" in cond.message
    assert index.conditions[resources[-2].key][0].message == "scope: namespace"


@pytest.mark.parametrize(("spec", "field", "reason"), [
    ({"egress": {"hosts": ["catalog"]}}, "spec.egress.hosts[0]", "namespace/service"),
    ({"egress": {"hosts": ["./ok", "Bad_NS/x"]}}, "spec.egress.hosts[1]", "namespace"),
    ({"egress": {"hosts": ["./cat*"]}}, "spec.egress.hosts[0]", "Service name"),
    ({"egress": {"hosts": []}}, "spec.egress.hosts", "at least 1"),
    ({}, "spec.egress", "required"),
    ({"egress": {"hosts": ["./a"]}, "workloadSelector": {"matchLabels": {}}},
     "spec.workloadSelector.matchLabels", "at least 1"),
    ({"egress": {"hosts": ["./a"]}, "workloadSelector": {"matchLabels": {"a b": "c"}}},
     "spec.workloadSelector.matchLabels", "label key"),
    ({"egress": {"hosts": ["./a"], "ports": [80]}}, "spec.egress.ports", "unknown field"),
])
def test_invalid_sidecar_is_rejected_with_field_and_reason(spec: dict[str, Any], field: str,
                                                           reason: str) -> None:
    with pytest.raises(InvalidResource) as err:
        parse_document({"apiVersion": API, "kind": "Sidecar",
                        "metadata": {"name": "s"}, "spec": spec})
    fields = {e.path: e.reason for e in err.value.errors}
    assert field in fields, fields
    assert reason in fields[field], fields


def test_a_route_to_a_cluster_the_proxy_lacks_is_never_published() -> None:
    missing = re.escape("does not have: 'outbound|80||x.default'")
    with pytest.raises(InconsistentConfig, match=missing):
        check_consistency(eds_refs=[], endpoints=[], rds_refs=[], routes=[],
                          listener_ports={}, cluster_refs=["outbound|80||x.default"],
                          clusters={"outbound|80||y.default": None})
