"""Endpoint-only rebuilds (`update_endpoints` + `with_endpoints`) must give exactly
what a full translation gives; the selection index must select what `_selects` does."""

from __future__ import annotations

import random
from typing import Any

from gossamer.controlplane.reconcile import health_only
from gossamer.index import _selected, _selects, build_index
from gossamer.model import Resource, Service, Workload, parse_document
from gossamer.translate import ProxyIdentity, translate_mesh, translate_proxy
from gossamer.translate.mesh import update_endpoints, with_endpoints
from gossamer.xds.types import Snapshot

SERVICES = 6


def service(i: int, selector: bool = True) -> dict[str, Any]:
    return {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Service",
            "metadata": {"name": f"s{i}", "namespace": "default"},
            "spec": {**({"selector": {"app": f"s{i}"}} if selector else {}),
                     "ports": [{"port": 80, "protocol": "http"}]}}


def workload(j: int, health: str = "Healthy") -> dict[str, Any]:
    i = j % SERVICES
    return {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Workload",
            "metadata": {"name": f"s{i}-{j}", "namespace": "default",
                         "labels": {"app": f"s{i}", **({"zone": "z1"} if j % 2 else {})}},
            "spec": {"service": f"s{i}", "address": "127.0.0.1", "port": 20000 + j,
                     "health": health}}


def locality_policy() -> dict[str, Any]:
    return {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "ResiliencePolicy",
            "metadata": {"name": "local", "namespace": "default"},
            "spec": {"targetRef": {"kind": "Service", "name": "s1"},
                     "loadBalancer": {"locality": {"failoverPriority": ["zone"]}}}}


def sidecar() -> dict[str, Any]:
    """Scopes the odd services' sidecars to s1 (with locality) and s2."""
    return {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Sidecar",
            "metadata": {"name": "odd", "namespace": "default"},
            "spec": {"workloadSelector": {"matchLabels": {"zone": "z1"}},
                     "egress": {"hosts": ["./s1", "default/s2"]}}}


def parse(docs: list[dict[str, Any]]) -> list[Resource]:
    return [parse_document(d).with_revision(k + 1) for k, d in enumerate(docs)]


def proxy(j: int) -> ProxyIdentity:
    i = j % SERVICES
    return ProxyIdentity.from_node(f"s{i}-{j}.default", {
        "service": f"s{i}", "workload": f"s{i}-{j}", "inbound_port": 30000 + j,
        "app_port": 10000 + j, "outbound_port": 15001,
        "labels": {"app": f"s{i}", "zone": "z1" if j % 2 else "z2"},
        "upstreams": [{"service": f"s{(i + 1) % SERVICES}", "port": 80, "local_port": 16001}]})


def contents(snap: Snapshot) -> dict[str, dict[str, str]]:
    return {t: {n: r.version for n, r in snap.of(t).items()} for t in snap.resources}


def test_endpoint_only_update_equals_full_translation() -> None:
    rng = random.Random(3)
    static = [service(i) for i in range(SERVICES)] + [locality_policy(), sidecar()]
    work = [workload(j) for j in range(3 * SERVICES)]
    mesh = translate_mesh(build_index(parse(static + work), 1))
    assert mesh.locality  # zone-local endpoint priorities are covered too
    proxies = [proxy(j) for j in range(2 * SERVICES)]
    configs = {p.node_id: translate_proxy(mesh, p) for p in proxies}
    # Scoped proxies (egress: s1, s2, and their upstream) are covered too.
    scoped = {c.scope for c in configs.values()}
    assert None in scoped and frozenset({("default", "s1"), ("default", "s2")}) in scoped
    for step in range(12):
        for w in rng.sample(work, rng.randint(1, 3)):
            w["spec"]["health"] = "Unhealthy" if w["spec"]["health"] == "Healthy" else "Healthy"
        index = build_index(parse(static + work), step + 2)
        mesh, full = update_endpoints(mesh, index), translate_mesh(index)
        for p in proxies:
            fast, slow = with_endpoints(mesh, p, configs[p.node_id]), translate_proxy(full, p)
            assert dict(fast.snapshot.versions) == dict(slow.snapshot.versions)
            assert contents(fast.snapshot) == contents(slow.snapshot)
            configs[p.node_id] = fast


def test_health_only_tells_a_heartbeat_from_a_real_change() -> None:
    old = parse_document(workload(1))
    flipped = parse_document(workload(1, "Unhealthy")).with_revision(9)
    moved = parse_document({**workload(1), "spec": {**workload(1)["spec"], "port": 1}})
    assert health_only(old, flipped)
    assert health_only(old, old.with_revision(5))
    assert not health_only(old, moved)
    assert not health_only(None, old)
    assert not health_only(old, None)
    assert not health_only(parse_document(service(1)), parse_document(service(1)))


def test_selection_index_selects_what_selects_does() -> None:
    docs = [service(i, selector=i % 3 != 0) for i in range(SERVICES)]
    docs += [workload(j) for j in range(4 * SERVICES)]
    docs.append({**workload(99), "metadata": {"name": "other-ns", "namespace": "x",
                                              "labels": {"app": "s1"}}})
    resources = parse(docs)
    services = {(r.metadata.namespace, r.metadata.name): r for r in resources
                if isinstance(r, Service)}
    workloads = [r for r in resources if isinstance(r, Workload)]
    got = _selected(services, workloads)
    for key, svc in services.items():
        assert got[key] == [w for w in workloads if _selects(svc, w)]


def test_build_memo_returns_fresh_equal_messages_and_stays_bounded() -> None:
    from envoy.config.cluster.v3.cluster_pb2 import Cluster

    from gossamer.translate.protos import _BuildMemo, build

    data = {"name": "c", "type": "EDS", "edsClusterConfig": {"edsConfig": {"ads": {}}}}
    first = build(Cluster, data)
    first.name = "mutated by its caller"
    second = build(Cluster, data)
    assert second.name == "c"
    assert second.SerializeToString(deterministic=True) == \
        build(Cluster, dict(reversed(list(data.items())))).SerializeToString(deterministic=True)
    memo = _BuildMemo(max_bytes=1000, max_entry=200)
    assert memo.key(Cluster, {"name": "x" * 300}) is None  # too big to keep
    for i in range(50):
        key = memo.key(Cluster, {"name": f"c{i}"})
        assert key is not None
        memo.put(key, b"x" * 40)
    assert memo._bytes <= 1000
