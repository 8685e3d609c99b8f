"""Endpoint-only rebuilds (`update_endpoints` + `with_endpoints`) must give exactly
what a full translation gives; the selection index must select what `_selects` does."""

from __future__ import annotations

import random
from typing import Any

from gossamer.contract.node import NodeMetadata
from gossamer.controlplane.reconcile import health_only
from gossamer.index import build_index
from gossamer.index.build import _selected, _selects
from gossamer.model import Resource, Service, Workload, parse_document
from gossamer.translate import translate_mesh, translate_proxy
from gossamer.translate.mesh import update_endpoints
from gossamer.translate.proxy import proxy_inputs, with_endpoints
from gossamer.xds.types import LISTENER, Snapshot

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


def proxy(j: int, namespace: str = "default", vhds: bool = False) -> NodeMetadata:
    i = j % SERVICES
    return NodeMetadata.from_metadata(f"s{i}-{j}.{namespace}", {
        "service": f"s{i}", "namespace": namespace, "workload": f"s{i}-{j}",
        "inbound_port": 30000 + j, "app_port": 10000 + j, "outbound_port": 15001,
        "labels": {"app": f"s{i}", "zone": "z1" if j % 2 else "z2"}, "vhds": vhds,
        "upstreams": [{"service": f"s{(i + 1) % SERVICES}", "namespace": "default",
                       "port": 80, "local_port": 16001}]})


def consumers() -> list[NodeMetadata]:
    """Callers in namespace `other`, where `_random_change` puts consumer routes (one
    takes its virtual hosts over VHDS)."""
    return [proxy(0, "other"), proxy(1, "other", vhds=True), proxy(3, "other")]


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
    assert None in scoped
    assert frozenset({("default", "s1"), ("default", "s2")}) in scoped
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


def test_build_memo_keys_by_value_not_by_shared_objects() -> None:
    # The same input, once with a sub-dict shared and once with equal copies,
    # is one key (a pickle with its memo would tell them apart, and miss); a
    # different value is another key.
    from envoy.config.cluster.v3.cluster_pb2 import Cluster

    from gossamer.translate.protos import _BuildMemo

    memo = _BuildMemo()
    meta = {"filterMetadata": {"a": {"k": "v"}}}
    shared = {"name": "c", "metadata": meta, "transportSocketMatches": [
        {"name": "m", "metadata": meta}]}
    copied = {"name": "c", "metadata": {"filterMetadata": {"a": {"k": "v"}}},
              "transportSocketMatches": [
                  {"name": "m", "metadata": {"filterMetadata": {"a": {"k": "v"}}}}]}
    assert memo.key(Cluster, shared) == memo.key(Cluster, copied)
    assert memo.key(Cluster, shared) != memo.key(Cluster, {**copied, "name": "d"})
    assert memo.key(Cluster, {"name": "c", "x": 1}) != memo.key(Cluster, {"name": "c", "x": True})
    assert memo.key(Cluster, {"name": object()}) is None  # not data: never kept


def _route(i: int, to: int, weight: int) -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": f"r{i}", "namespace": "default"},
            "spec": {"parentRefs": [{"kind": "Service", "name": f"s{i}", "port": 80}],
                     "rules": [{"backendRefs": [
                         {"name": f"s{i}", "port": 80, "weight": weight},
                         {"name": f"s{to}", "port": 80, "weight": 100 - weight}]}]}}


def _consumer_route(i: int, to: int) -> dict[str, Any]:
    """A consumer route: in namespace `other`, for `other`'s callers of s{i} only."""
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": f"c{i}", "namespace": "other"},
            "spec": {"parentRefs": [{"kind": "Service", "name": f"s{i}",
                                     "namespace": "default", "port": 80}],
                     "rules": [{"backendRefs": [
                         {"name": f"s{to}", "namespace": "default", "port": 80}]}]}}


def _policy(kind: str, i: int, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": kind,
            "metadata": {"name": f"{kind.lower()}-{i}", "namespace": "default"},
            "spec": {"targetRef": {"kind": "Service", "name": f"s{i}"}, **spec}}


def _random_change(rng: random.Random, docs: dict[str, dict[str, Any]]) -> None:
    """One change of the kind users make: a route (a consumer route too), a policy, a
    Sidecar, a Service's port protocol, a workload's labels, health or account, or a
    resource deleted."""
    i, to = rng.randrange(SERVICES), rng.randrange(SERVICES)
    kind = rng.choice(["route", "route", "consumer", "timeout", "authz", "sidecar",
                       "protocol", "labels", "health", "account", "delete"])
    if kind == "route":
        docs[f"route{i}"] = _route(i, to, rng.choice([0, 30, 70, 100]))
    elif kind == "consumer":
        docs[f"routec{i}"] = _consumer_route(i, to)
    elif kind == "timeout":
        docs[f"timeout{i}"] = _policy("ResiliencePolicy", i, {
            "timeouts": {"request": f"{rng.randint(1, 9)}s"}})
    elif kind == "authz":
        # By namespace, or by a caller's identity (the inferred scopes change).
        source = rng.choice([{"namespaces": [rng.choice(["default", "other"])]},
                             {"principals": [f"gossamer.local/ns/default/sa/s{to}"]}])
        docs[f"authz{i}"] = _policy("AuthorizationPolicy", i, {"rules": [
            {"from": [{"source": source}]}]})
    elif kind == "sidecar":  # selecting by a label the agents declare, or one they don't
        selector = rng.choice([{"zone": "z1"}, {"tier": "x"}])
        docs["sidecar"] = {**sidecar(), "spec": {
            "workloadSelector": {"matchLabels": selector}, "egress": {
                "hosts": [f"./s{k}" for k in rng.sample(range(SERVICES), 2)]}}}
    elif kind == "protocol":
        svc = service(i)
        svc["spec"]["ports"][0]["protocol"] = rng.choice(["http", "http2", "tcp"])
        docs[f"service{i}"] = svc
    elif kind in ("labels", "health", "account"):
        w = docs[f"workload{rng.randrange(3 * SERVICES)}"]
        if kind == "account":  # callers verify a new SPIFFE ID: clusters change
            w["spec"]["serviceAccount"] = rng.choice(["a1", "a2"])
        elif kind == "health":
            w["spec"]["health"] = rng.choice(["Healthy", "Unhealthy"])
        else:
            w["metadata"]["labels"] = {**w["metadata"]["labels"],
                                       "zone": rng.choice(["z1", "z2"]),
                                       "tier": rng.choice(["x", "y"])}
    else:
        deletable = sorted(k for k in docs if k.startswith(("route", "timeout", "authz",
                                                               "sidecar")))
        for name in rng.sample(deletable, k=min(1, len(deletable))):
            del docs[name]


def test_unchanged_inputs_mean_an_unchanged_config() -> None:
    """The reconciler builds each mesh on the previous one (`translate_mesh(previous=)`)
    and keeps a proxy's last config when `proxy_inputs` are equal: over random
    changes, both must always give what a translation from scratch gives."""
    rng = random.Random(7)
    docs: dict[str, dict[str, Any]] = {f"service{i}": service(i) for i in range(SERVICES)}
    docs |= {f"workload{j}": workload(j) for j in range(3 * SERVICES)}
    docs |= {"locality": locality_policy(), "sidecar": sidecar()}
    objects: dict[str, tuple[str, Resource]] = {}

    def index_now(revision: int) -> Any:
        # Like the reconciler: a document that did not change keeps its object.
        for name, doc in docs.items():
            text = repr(doc)
            if name not in objects or objects[name][0] != text:
                objects[name] = (text, parse_document(doc).with_revision(revision))
        for name in set(objects) - set(docs):
            del objects[name]
        return build_index([r for _, r in objects.values()], revision)

    proxies = [*(proxy(j) for j in range(2 * SERVICES)), *consumers()]
    mesh = translate_mesh(index_now(1))
    configs = {p.node_id: translate_proxy(mesh, p) for p in proxies}
    reused = consumed = 0
    for step in range(60):
        _random_change(rng, docs)
        index = index_now(step + 2)
        fresh, mesh = translate_mesh(index), translate_mesh(index, previous=mesh)
        consumed += bool(mesh.consumer_routes)
        for p in proxies:
            # The mesh built on the previous one's unchanged Services is the same mesh.
            full = translate_proxy(fresh, p)
            assert contents(translate_proxy(mesh, p).snapshot) == contents(full.snapshot)
            last = configs[p.node_id]
            if last.inputs == proxy_inputs(mesh, p):
                reused += 1
                kept = with_endpoints(mesh, p, last)
                assert contents(kept.snapshot) == contents(full.snapshot), step
                assert dict(kept.snapshot.versions) == dict(full.snapshot.versions)
            configs[p.node_id] = full
    assert reused > 100  # the shortcut is taken, not only checked
    assert consumed > 10  # with consumer routes in the mesh, too


def test_a_route_change_out_of_scope_keeps_the_proxy_inputs() -> None:
    static = [service(i) for i in range(SERVICES)] + [sidecar()]
    work = [workload(j) for j in range(3 * SERVICES)]
    before = parse(static + work)
    scoped = proxy(1)  # odd: s1, s2 and its upstream s2
    mesh = translate_mesh(build_index(before, 1))
    config = translate_proxy(mesh, scoped)
    outside = parse_document(_route(4, 5, 50)).with_revision(99)
    inside = parse_document(_route(2, 5, 50)).with_revision(99)
    assert proxy_inputs(translate_mesh(build_index([*before, outside], 2)),
                        scoped) == config.inputs
    assert proxy_inputs(translate_mesh(build_index([*before, inside], 2)),
                        scoped) != config.inputs


def test_kept_listeners_follow_a_tcp_split_whose_backend_goes() -> None:
    """A TCP upstream's listener names its clusters (a TCPRoute's split), so a change
    to a backend Service alone must rebuild it, though the route object is the same."""
    tcp = [{**service(i), "spec": {"selector": {"app": f"s{i}"},
                                   "ports": [{"port": 9000, "protocol": "tcp"}]}}
           for i in range(3)]
    split = {"apiVersion": "gateway.networking.k8s.io/v1alpha2", "kind": "TCPRoute",
             "metadata": {"name": "split", "namespace": "default"},
             "spec": {"parentRefs": [{"kind": "Service", "name": "s0", "port": 9000}],
                      "rules": [{"backendRefs": [{"name": "s1", "port": 9000, "weight": 50},
                                                 {"name": "s2", "port": 9000, "weight": 50}]}]}}
    caller = NodeMetadata.from_metadata("c-1.default", {
        "service": "c", "workload": "c-1", "outbound_port": 0,
        "upstreams": [{"service": "s0", "port": 9000, "local_port": 16001}]})
    resources = parse([split, *tcp])  # the same objects in both builds, s2 last
    before = translate_mesh(build_index(resources, 1))
    config = translate_proxy(before, caller)
    after = translate_mesh(build_index(resources[:-1], 2), previous=before)
    kept, fresh = translate_proxy(after, caller, config), translate_proxy(after, caller)
    assert contents(kept.snapshot) == contents(fresh.snapshot)
    assert kept.snapshot.of(LISTENER) != config.snapshot.of(LISTENER)  # s2's share closed
    # And with nothing changed, the listeners are the very same objects.
    again = translate_proxy(after, caller, kept)
    assert again.snapshot.of(LISTENER) == kept.snapshot.of(LISTENER)
    assert again.listeners is kept.listeners
