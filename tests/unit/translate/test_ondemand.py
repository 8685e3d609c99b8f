"""On-demand discovery in translation (translate/ondemand.py): which sidecars get it,
the `on_demand` filter on their outbound listener, and which of their virtual hosts
and clusters the snapshot keeps for explicit requests (`OnDemand`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from gossamer.contract.node import NodeMetadata
from gossamer.translate import translate_proxy
from gossamer.translate.proxy import proxy_inputs
from gossamer.xds.types import CLUSTER, VHOST, Snapshot
from tests.unit.translate.test_scope import BASE, mesh_of, proxy, sidecar, split_route
from tests.unit.translate.test_vhds import _mesh

MESH = {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Mesh",
        "metadata": {"name": "default"}, "spec": {"onDemand": True}}


def _vhds(svc: str = "web", **kw: Any) -> NodeMetadata:
    return replace(proxy(svc, **kw), vhds=True)


def _filters(snap: Snapshot, listener: str = "outbound") -> list[str]:
    lis = Listener.FromString(snap.of("type.googleapis.com/envoy.config.listener.v3.Listener")
                              [listener].payload)
    hcm = hcm_pb2.HttpConnectionManager()
    lis.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    return [f.name for f in hcm.http_filters]


def test_off_by_default() -> None:
    snap = translate_proxy(mesh_of(BASE), _vhds()).snapshot
    assert snap.demand(VHOST) is None
    assert snap.demand(CLUSTER) is None
    assert "envoy.filters.http.on_demand" not in _filters(snap)


def test_an_unscoped_vhds_sidecar_holds_every_service_for_explicit_requests() -> None:
    mesh = mesh_of([*BASE, MESH])
    snap = translate_proxy(mesh, _vhds()).snapshot
    assert _filters(snap)[0] == "envoy.filters.http.on_demand"
    vhosts = snap.demand(VHOST)
    assert vhosts is not None
    assert vhosts.names is None
    assert vhosts.namespaces == ("outbound/",)
    # Each name a caller uses for a Service port is an alias of its virtual host.
    assert vhosts.aliases["outbound/catalog"] == "outbound/catalog.default:80"
    assert vhosts.aliases["outbound/catalog.default.svc.cluster.local:80"] == \
        "outbound/catalog.default:80"
    assert vhosts.aliases["outbound/ledger.payments"] == "outbound/ledger.payments:80"
    assert "outbound/ledger" not in vhosts.aliases  # another namespace: not by short name
    assert not any(a.endswith("/*") for a in vhosts.aliases)  # the catch-all: never
    assert set(vhosts.aliases.values()) <= set(snap.of(VHOST))
    clusters = snap.demand(CLUSTER)
    assert clusters is not None
    assert clusters.names is not None
    services = {n for n in snap.of(CLUSTER) if n.startswith("outbound|")}
    assert services
    assert all(clusters.holds(n) for n in services)
    own = set(snap.of(CLUSTER)) - services  # its own app's, for instance
    assert own
    assert not any(clusters.holds(n) for n in own)


def test_clusters_its_own_listeners_name_and_mirrors_are_sent_up_front() -> None:
    docs = [*BASE, MESH, split_route("catalog", ["catalog", "catalog-v2"], "shadow")]
    node = _vhds(upstreams=[{"service": "ledger", "namespace": "payments", "port": 80,
                             "local_port": 9001}])
    snap = translate_proxy(mesh_of(docs), node).snapshot
    clusters = snap.demand(CLUSTER)
    assert clusters is not None
    assert not clusters.holds("outbound|80||ledger.payments")  # its upstream listener's
    assert not clusters.holds("outbound|80||shadow.default")  # catalog's route mirrors to it
    assert clusters.holds("outbound|80||catalog-v2.default")


def test_not_for_scoped_capturing_or_sotw_sidecars() -> None:
    mesh = mesh_of([*BASE, MESH, sidecar("web", ["./catalog"], selector={"app": "web"})])
    assert translate_proxy(mesh, _vhds(app="web")).snapshot.demand(VHOST) is None
    assert translate_proxy(mesh, proxy("web")).snapshot.demand(VHOST) is None  # no VHDS
    capturing = NodeMetadata.from_metadata("web-0.default", {
        "service": "web", "namespace": "default", "workload": "web-0", "inbound_port": 15006,
        "app_port": 8080, "outbound_port": 15002, "capture": True, "capture_port": 15001,
        "vhds": True})
    snap = translate_proxy(mesh_of([*BASE, MESH]), capturing).snapshot
    assert snap.demand(VHOST) is None
    assert snap.demand(CLUSTER) is None


def test_turning_it_on_retranslates_the_proxy() -> None:
    before = mesh_of(BASE)
    after = mesh_of([*BASE, MESH])
    assert proxy_inputs(before, _vhds()) != proxy_inputs(after, _vhds())


def test_a_new_mirror_retranslates_an_on_demand_proxy() -> None:
    """Its cluster must then come up front: the reconciler may not keep the last
    config (the inputs differ)."""
    before = mesh_of([*BASE, MESH])
    after = mesh_of([*BASE, MESH, split_route("catalog", ["catalog"], "shadow")])
    assert proxy_inputs(before, _vhds()) != proxy_inputs(after, _vhds())
    clusters = translate_proxy(after, _vhds()).snapshot.demand(CLUSTER)
    assert clusters is not None
    assert not clusters.holds("outbound|80||shadow.default")


def test_a_route_change_keeps_the_virtual_hosts_rules_object() -> None:
    """Every on-demand stream compares the rules by identity first: a route change,
    which renames no host, must not hand a thousand streams new rules to compare."""
    before = _mesh([*BASE, MESH])
    after = _mesh([*BASE, MESH, split_route("catalog", ["catalog-v2"], "shadow")],
                  previous=before)
    old = translate_proxy(before, _vhds()).snapshot
    new = translate_proxy(after, _vhds()).snapshot
    assert old.version(VHOST) != new.version(VHOST)  # a virtual host changed...
    assert new.demand(VHOST) is old.demand(VHOST)  # ...the rules are the same object
    renamed = _mesh([*BASE, MESH, {**BASE[0], "metadata": {"name": "web2",
                                                          "namespace": "default"}}],
                    previous=after)
    assert translate_proxy(renamed, _vhds()).snapshot.demand(VHOST) is not new.demand(VHOST)


def test_proxies_share_one_set_of_on_demand_names() -> None:
    """A set of every Service's cluster per proxy was ~30 MiB at 1000 x 1000: the
    set is the scope's, each proxy's own exceptions (its upstreams) are apart."""
    mesh = mesh_of([*BASE, MESH])
    one = translate_proxy(mesh, _vhds(upstreams=[
        {"service": "ledger", "namespace": "payments", "port": 80, "local_port": 9001}]))
    two = translate_proxy(mesh, _vhds("catalog"))
    a, b = one.snapshot.demand(CLUSTER), two.snapshot.demand(CLUSTER)
    assert a is not None
    assert b is not None
    assert a.names is b.names
    assert a.kept == {"outbound|80||ledger.payments"}
    assert not b.kept
