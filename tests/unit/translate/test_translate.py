"""Golden-file tests of generated Envoy config, plus translation invariants.

Regenerate the golden files after an intended change with
`GOSSAMER_UPDATE_GOLDEN=1 pytest tests/unit/translate/test_translate.py` and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_pb2 import RouteConfiguration

from gossamer.contract.node import NodeMetadata
from gossamer.index import build_index
from gossamer.model import parse_documents
from gossamer.model.workload import Health
from gossamer.translate import (
    InconsistentConfig,
    MeshSettings,
    check_consistency,
    translate_mesh,
    translate_proxy,
)
from gossamer.translate.protos import to_dict
from gossamer.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SHORT

HERE = Path(__file__).parents[1]
MESSAGE = {CLUSTER: Cluster, ENDPOINT: ClusterLoadAssignment, LISTENER: Listener,
           ROUTE: RouteConfiguration}


def _mesh_docs() -> list[Any]:
    return parse_documents((HERE / "testdata" / "mesh.yaml").read_text())


def _frontend(**over: Any) -> NodeMetadata:
    meta: dict[str, object] = {
        "service": "frontend", "namespace": "default", "workload": "frontend-0",
        "inbound_port": 15006, "app_port": 8080, "outbound_port": 15001,
        "upstreams": [{"service": "catalog", "port": 80, "local_port": 15101},
                      {"service": "db", "namespace": "data", "port": 5432, "local_port": 15102}],
    } | over
    return NodeMetadata.from_metadata("frontend-0.default", meta)


def _as_json(snapshot: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for type_url, resources in snapshot.resources.items():
        if type_url not in MESSAGE:
            continue
        out[SHORT[type_url]] = {
            name: to_dict(MESSAGE[type_url].FromString(r.payload))
            for name, r in sorted(resources.items())
        }
    return out


@pytest.mark.parametrize(("settings", "golden_name"), [
    (None, "frontend.json"),  # the default: mTLS on, trust domain gossamer.local
    (MeshSettings(mtls=False), "frontend-plaintext.json"),
])
def test_golden_frontend_snapshot(settings: MeshSettings | None, golden_name: str) -> None:
    mesh = translate_mesh(build_index(_mesh_docs(), 7), settings)
    actual = _as_json(translate_proxy(mesh, _frontend()).snapshot)
    golden = HERE / "golden" / golden_name
    if os.environ.get("GOSSAMER_UPDATE_GOLDEN"):
        golden.write_text(json.dumps(actual, indent=2, sort_keys=True) + "\n")
    assert actual == json.loads(golden.read_text())


def test_defaults_are_mtls_in_gossamer_local() -> None:
    mesh = translate_mesh(build_index(_mesh_docs(), 1))
    assert mesh.settings == MeshSettings(trust_domain="gossamer.local", mtls=True)
    cluster = Cluster.FromString(mesh.clusters["outbound|80||catalog.default"].payload)
    assert cluster.transport_socket.name == "envoy.transport_sockets.tls"
    plain = translate_mesh(build_index(_mesh_docs(), 1), MeshSettings(mtls=False))
    cluster = Cluster.FromString(plain.clusters["outbound|80||catalog.default"].payload)
    assert not cluster.HasField("transport_socket")


def test_translation_is_deterministic_and_shared() -> None:
    docs = _mesh_docs()
    a = translate_proxy(translate_mesh(build_index(docs, 1)), _frontend()).snapshot
    mesh = translate_mesh(build_index(list(reversed(docs)), 1))
    b = translate_proxy(mesh, _frontend()).snapshot
    assert a.versions == b.versions
    other = _frontend(workload="frontend-1", inbound_port=15007, upstreams=[])
    c = translate_proxy(mesh, other).snapshot
    name = "outbound|80||catalog.default"
    # Shared resources are the same objects: serialized once for every proxy.
    assert b.of(CLUSTER)[name] is c.of(CLUSTER)[name]
    assert b.of(ROUTE)["outbound"] is c.of(ROUTE)["outbound"]


def test_endpoint_change_moves_only_eds() -> None:
    docs = _mesh_docs()
    before = translate_proxy(translate_mesh(build_index(docs, 1)), _frontend()).snapshot
    changed = [d.model_copy(update={"spec": d.spec.model_copy(update={"health": Health.HEALTHY})})
               if d.metadata.name == "catalog-v2-a" else d for d in docs]
    after = translate_proxy(translate_mesh(build_index(changed, 2)), _frontend()).snapshot
    moved = {t for t in MESSAGE if before.version(t) != after.version(t)}
    assert moved == {ENDPOINT}
    cla = ClusterLoadAssignment.FromString(
        after.of(ENDPOINT)["outbound|80||catalog-v2.default"].payload)
    assert [e.endpoint.address.socket_address.address
            for e in cla.endpoints[0].lb_endpoints] == ["127.0.0.3"]


def test_unhealthy_workloads_are_not_endpoints() -> None:
    mesh = translate_mesh(build_index(_mesh_docs(), 1))
    cla = ClusterLoadAssignment.FromString(
        mesh.endpoints["outbound|80||catalog.default"].payload)
    addresses = [e.endpoint.address.socket_address.address
                 for e in cla.endpoints[0].lb_endpoints]
    assert addresses == ["127.0.0.1", "127.0.0.2"]


def test_every_eds_cluster_has_an_assignment_even_when_empty() -> None:
    mesh = translate_mesh(build_index(_mesh_docs(), 1))
    assert set(mesh.endpoints) == {n for n in mesh.clusters}
    cla = ClusterLoadAssignment.FromString(mesh.endpoints["outbound|80||frontend.default"].payload)
    assert list(cla.endpoints[0].lb_endpoints) == []


def test_route_precedence_and_unresolved_backend() -> None:
    mesh = translate_mesh(build_index(_mesh_docs(), 1))
    routes = mesh.port_routes[("default", "catalog", 80)]
    kinds = [next(iter(r["match"])) for r in routes]
    # Exact, then regex, then longest prefix first, catch-all last.
    assert kinds[0] == "path"
    assert routes[0]["match"]["path"] == "/v2/items"
    assert kinds[1] == "safeRegex"
    assert routes[2]["match"].get("pathSeparatedPrefix") == "/api"
    assert routes[-1]["match"] == {"prefix": "/"}
    weighted = routes[-1]["route"]["weightedClusters"]["clusters"]
    assert weighted == [{"name": "outbound|80||catalog-v1.default", "weight": 80},
                        {"name": "outbound|80||catalog-v2.default", "weight": 20}]


def test_status_reports_unknown_backend_and_parent() -> None:
    docs = _mesh_docs() + parse_documents("""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: orphan}
spec:
  parentRefs: [{name: nowhere}]
  rules: [{backendRefs: [{name: ghost}]}]
""")
    index = build_index(docs, 1)
    conds = {c.type: c for c in index.conditions[docs[-1].key]}
    assert conds["Accepted"].status == "False"
    assert conds["Accepted"].reason == "NoMatchingParent"
    assert conds["ResolvedRefs"].reason == "BackendNotFound"
    assert "ghost" in \
        conds["ResolvedRefs"].message
    translate_mesh(index)  # must not raise on dangling references


def test_namespaces_scope_short_names() -> None:
    mesh = translate_mesh(build_index(_mesh_docs(), 1))
    data_proxy = _frontend(namespace="data", upstreams=[])
    snap = translate_proxy(mesh, data_proxy).snapshot
    rc = RouteConfiguration.FromString(snap.of(ROUTE)["outbound"].payload)
    domains = {d for vh in rc.virtual_hosts for d in vh.domains}
    assert "catalog" not in domains
    assert "catalog.default" in domains
    assert not any(d.startswith("db") for d in domains)  # TCP services have no virtual host
    # The default port answers without a port; others only with it.
    assert "catalog.default:9090" in domains


def test_consistency_check_rejects_dangling_references() -> None:
    with pytest.raises(InconsistentConfig) as err:
        check_consistency(eds_refs=["a", "b"], endpoints=["a"], rds_refs=["r"], routes=[],
                          listener_ports={"x": 1, "y": 1})
    assert len(err.value.problems) == 3


def test_upstream_port_colliding_with_inbound_is_refused() -> None:
    mesh = translate_mesh(build_index(_mesh_docs(), 1))
    bad = _frontend(upstreams=[{"service": "catalog", "port": 80, "local_port": 15006}])
    with pytest.raises(InconsistentConfig):
        translate_proxy(mesh, bad)
