"""GAMMA consumer routes (translate/consumer.py): a route in another namespace than
its parent Service applies only to callers in the route's namespace, on the ports it
attaches to, on every path a request takes (outbound RDS, VHDS, a dedicated upstream
listener, capture); everyone else follows the producer routes.

Regenerate the golden file after an intended change with
`GOSSAMER_UPDATE_GOLDEN=1 pytest tests/unit/translate/test_consumer.py` and review the
diff.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from envoy.config.route.v3.route_components_pb2 import VirtualHost
from envoy.config.route.v3.route_pb2 import RouteConfiguration

from gossamer.contract.node import NodeMetadata
from gossamer.index import build_index
from gossamer.model import Resource, parse_document, parse_documents
from gossamer.translate import MeshConfig, translate_mesh, translate_proxy
from gossamer.translate.capture import CAPTURE_ROUTES
from gossamer.translate.consumer import port_route_config
from gossamer.translate.protos import to_dict
from gossamer.xds.types import CLUSTER, ROUTE, VHOST, Snapshot
from tests.unit.translate.vips import with_vip_table

HERE = Path(__file__).parents[1]
CONSUMER = (HERE / "testdata" / "consumer.yaml").read_text()
ECHO = ("mesh", "echo", 80)
V2 = "outbound|80||echo-v2.mesh"


def _docs(*extra: dict[str, Any]) -> list[Resource]:
    return with_vip_table(parse_documents(CONSUMER) + [parse_document(d) for d in extra])


def _mesh(*extra: dict[str, Any]) -> MeshConfig:
    return translate_mesh(build_index(_docs(*extra), 3))


def _caller(namespace: str, **over: Any) -> NodeMetadata:
    meta: dict[str, object] = {
        "service": "client", "namespace": namespace, "workload": "client-0",
        "inbound_port": 15006, "app_port": 8080, "outbound_port": 15002,
        "upstreams": [{"service": "echo", "namespace": "mesh", "port": 80,
                       "local_port": 15101}]} | over
    return NodeMetadata.from_metadata(f"client-0.{namespace}", meta)


def _route_config(snap: Snapshot, name: str) -> RouteConfiguration:
    return RouteConfiguration.FromString(snap.of(ROUTE)[name].payload)


def _vhosts(config: RouteConfiguration) -> dict[str, list[dict[str, Any]]]:
    return {v.name: list(to_dict(v)["routes"]) for v in config.virtual_hosts}


def _summary(routes: list[dict[str, Any]]) -> tuple[str, ...]:
    """Where each route sends, and the header it sets: which route a caller follows."""
    out = []
    for r in routes:
        target = r["route"].get("cluster") or "+".join(
            c["name"] for c in r["route"]["weightedClusters"]["clusters"])
        headers = [h["header"]["key"] for h in [*r.get("requestHeadersToAdd", []),
                                               *r.get("responseHeadersToAdd", [])]]
        out.append(f"{r['name']} -> {target} {','.join(headers)}".strip())
    return tuple(out)


def test_golden_outbound_routes_per_caller_namespace() -> None:
    mesh = _mesh()
    actual = {ns: _vhosts(_route_config(translate_proxy(mesh, _caller(ns)).snapshot,
                                        "outbound"))
              for ns in ("consumer", "mesh", "other")}
    golden = HERE / "golden" / "consumer-routes.json"
    if os.environ.get("GOSSAMER_UPDATE_GOLDEN"):
        golden.write_text(json.dumps(actual, indent=2, sort_keys=True) + "\n")
    assert actual == json.loads(golden.read_text())


def test_the_consumer_namespace_follows_its_route_and_the_others_the_producers() -> None:
    mesh = _mesh()
    seen = {ns: _vhosts(_route_config(translate_proxy(mesh, _caller(ns)).snapshot,
                                      "outbound"))
            for ns in ("consumer", "mesh", "other")}
    consumer = ("consumer/echo-consumer/rule0/match0 -> outbound|80||echo-v2.mesh X-Header-Set",)
    producer = ("mesh/echo-producer/rule0/match0 -> outbound|80||echo.mesh x-route",)
    assert _summary(seen["consumer"]["echo.mesh:80"]) == consumer
    assert _summary(seen["other"]["echo.mesh:80"]) == producer
    assert _summary(seen["mesh"]["echo.mesh:80"]) == producer
    # Per port: the consumer route attaches to port 80 only.
    assert _summary(seen["consumer"]["echo.mesh:8080"]) == producer
    # A consumer GRPCRoute likewise.
    assert _summary(seen["consumer"]["rpc.mesh:80"]) == (
        "grpc:consumer/rpc-consumer/rule0/match0 -> outbound|80||rpc-v2.mesh",)
    assert _summary(seen["other"]["rpc.mesh:80"]) == ("default -> outbound|80||rpc.mesh",)
    # The virtual hosts of Services without consumer routes are shared objects.
    assert mesh.outbound_routes("other") is not mesh.outbound_routes("consumer")
    assert mesh.memo.vhosts[(("mesh", "echo-v2", 80), False, None)] is not None
    assert {k[0] for k in mesh.consumer_routes} == {"consumer"}


def test_two_consumer_namespaces_each_follow_their_own_routes() -> None:
    second = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
              "metadata": {"name": "echo-mine", "namespace": "second"},
              "spec": {"parentRefs": [{"name": "echo", "namespace": "mesh"}],
                       "rules": [{"backendRefs": [{"name": "echo", "namespace": "mesh",
                                                   "port": 80}]}]}}
    mesh = _mesh(second)
    for vhds in (False, True):  # one mesh, so the memos are shared by both
        got = {}
        for ns in ("consumer", "second"):
            snap = translate_proxy(mesh, replace(_caller(ns), vhds=vhds)).snapshot
            vhost = (VirtualHost.FromString(snap.of(VHOST)["outbound/echo.mesh:80"].payload)
                     if vhds else next(v for v in _route_config(snap, "outbound").virtual_hosts
                                       if v.name == "echo.mesh:80"))
            got[ns] = [r.name for r in vhost.routes]
        assert got == {"consumer": ["consumer/echo-consumer/rule0/match0"],
                       "second": ["second/echo-mine/rule0/match0"]}, vhds


def test_a_dedicated_upstream_listener_follows_the_callers_routes() -> None:
    mesh = _mesh()
    name = "upstream|80||echo.mesh"
    for ns, cluster in (("consumer", V2), ("other", "outbound|80||echo.mesh")):
        snap = translate_proxy(mesh, _caller(ns)).snapshot
        (routes,) = _vhosts(_route_config(snap, name)).values()
        assert {r["route"]["cluster"] for r in routes} == {cluster}, ns
        assert port_route_config(mesh, ECHO, ns) == snap.of(ROUTE)[name]


def test_vhds_gives_the_consumer_namespace_its_own_virtual_host() -> None:
    mesh = _mesh()
    found = {}
    for ns in ("consumer", "other"):
        snap = translate_proxy(mesh, replace(_caller(ns), vhds=True)).snapshot
        vhost = VirtualHost.FromString(snap.of(VHOST)["outbound/echo.mesh:80"].payload)
        found[ns] = _summary(list(to_dict(vhost)["routes"]))
        assert _summary(_vhosts(_route_config(translate_proxy(mesh, _caller(ns)).snapshot,
                                              "outbound"))["echo.mesh:80"]) == found[ns]
    assert found["consumer"] != found["other"]


def test_capture_routes_follow_the_callers_namespace() -> None:
    mesh = _mesh()
    for ns, cluster in (("consumer", V2), ("other", "outbound|80||echo.mesh")):
        node = _caller(ns, capture=True, capture_port=15001, dns_port=15053,
                       inbound_address="198.18.0.2", dns_resolvers=["198.18.0.53"])
        config = _route_config(translate_proxy(mesh, node).snapshot, CAPTURE_ROUTES)
        echo = next(v for v in config.virtual_hosts if v.name == "echo.mesh:80")
        assert "echo.mesh:80" in echo.domains
        assert [r.route.cluster for r in echo.routes] == [cluster], ns
        # The virtual IP's own chain (MeshFrontendHostname) takes the same variant, also
        # for a caller with no upstream listener of its own for echo.
        bare = translate_proxy(mesh, _caller(ns, upstreams=[], capture=True,
                                             capture_port=15001, dns_port=15053,
                                             inbound_address="198.18.0.2",
                                             dns_resolvers=["198.18.0.53"])).snapshot
        [by_vip] = _route_config(bare, "upstream|80||echo.mesh").virtual_hosts
        assert [r.route.cluster for r in by_vip.routes] == [cluster], ns


def test_a_scoped_consumer_gets_the_clusters_its_route_sends_to() -> None:
    # The consumer's Sidecar lists echo only; its route sends to echo-v2, whose
    # cluster must be in the snapshot (the consistency check refuses otherwise).
    sidecar = {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Sidecar",
               "metadata": {"name": "only-echo", "namespace": "consumer"},
               "spec": {"egress": {"hosts": ["mesh/echo"]}}}
    mesh = _mesh(sidecar)
    config = translate_proxy(mesh, _caller("consumer"))
    assert config.scope == frozenset({("mesh", "echo")})
    assert V2 in config.snapshot.of(CLUSTER)
    assert _summary(_vhosts(_route_config(config.snapshot, "outbound"))["echo.mesh:80"])[0] \
        .endswith("echo-v2.mesh X-Header-Set")


def test_a_route_in_the_services_own_namespace_applies_to_every_caller() -> None:
    # The same route moved into `mesh` is a producer route: `other` follows it too.
    moved = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
             "metadata": {"name": "echo-split", "namespace": "mesh"},
             "spec": {"parentRefs": [{"name": "echo", "port": 80}],
                      "rules": [{"backendRefs": [{"name": "echo-v2", "port": 80}]}]}}
    mesh = _mesh(moved)
    routes = _vhosts(_route_config(translate_proxy(mesh, _caller("other")).snapshot,
                                   "outbound"))["echo.mesh:80"]
    assert "mesh/echo-split/rule0/match0 -> outbound|80||echo-v2.mesh" in _summary(routes)


def test_a_consumer_route_is_accepted_for_its_parent() -> None:
    index = build_index(_docs(), 3)
    for key in (("HTTPRoute", "consumer", "echo-consumer"),
                ("GRPCRoute", "consumer", "rpc-consumer")):
        conds = {c.type: c.status for c in index.conditions[key]}
        assert conds == {"Accepted": "True", "ResolvedRefs": "True"}, key
