"""The control-plane benchmark's simulated sidecar (bench/controlplane/simproxy.py),
driven against the real sans-I/O delta stream machine with a translated snapshot."""

from __future__ import annotations

from typing import Any

from bench.controlplane.simproxy import Response, SimProxy

from gossamer.contract.node import NodeMetadata
from gossamer.index import build_index
from gossamer.model import parse_document
from gossamer.translate import translate_mesh, translate_proxy
from gossamer.xds.delta import DeltaStream
from gossamer.xds.events import Acked, Subscribed
from gossamer.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, VHOST, Snapshot

META: dict[str, Any] = {
    "service": "a", "namespace": "default", "workload": "a-0", "inbound_port": 30000,
    "inbound_address": "127.0.0.1", "app_port": 10000, "outbound_port": 15001,
    "admin_port": 15000, "upstreams": [{"service": "b", "namespace": "default", "port": 80,
                                        "local_port": 16001}],
}


def service(name: str) -> dict[str, Any]:
    return {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80, "protocol": "http"}]}}


def snapshot(*names: str, meta: dict[str, Any] = META) -> Snapshot:
    index = build_index([parse_document(service(n)).with_revision(i + 1)
                         for i, n in enumerate(names)], len(names))
    proxy = NodeMetadata.from_metadata("a-0.default", meta)
    return translate_proxy(translate_mesh(index), proxy).snapshot


def exchange(sim: SimProxy, machine: DeltaStream, requests: list[Any]) -> list[Any]:
    """Run requests through the server machine and the answers back through the
    proxy until both are quiet; return every request the proxy sent."""
    sent = list(requests)
    queue = list(requests)
    while queue:
        for out in machine.on_request(queue.pop(0)):
            payload = out.payload
            replies = sim.on_response(Response.FromString(payload), len(payload))
            sent += replies
            queue += replies
    return sent


def test_first_connect_subscribes_like_envoy_and_acks_every_response() -> None:
    sim = SimProxy("a-0.default", "a", META)
    machine = DeltaStream()
    machine.on_snapshot(snapshot("a", "b", "c"))
    first = sim.start()
    assert [r.type_url for r in first] == [CLUSTER, LISTENER]
    assert first[0].node.id == "a-0.default"
    assert not first[1].HasField("node")  # setNodeOnFirstMessageOnly
    sent = exchange(sim, machine, first)
    acks = [r for r in sent if r.response_nonce]
    events = machine.drain_events()
    # Every response is ACKed with its nonce: one explicit Acked event per response.
    assert len([e for e in events if isinstance(e, Acked) and not e.implicit]) == len(acks)
    eds = {e.names for e in events if isinstance(e, Subscribed) and e.type_url == ENDPOINT}
    assert frozenset({"outbound|80||a.default", "outbound|80||b.default",
                      "outbound|80||c.default"}) in eds
    rds = sim.types[ROUTE].names
    assert rds == {"inbound", "outbound", "upstream|80||b.default"}
    assert sim.synced()


def test_reconnect_sends_known_versions_and_receives_nothing_unchanged() -> None:
    sim = SimProxy("a-0.default", "a", META)
    snap = snapshot("a", "b")
    first = DeltaStream()
    first.on_snapshot(snap)
    exchange(sim, first, sim.start())
    before = sim.responses
    again = DeltaStream()  # a restarted control plane with the same config
    again.on_snapshot(snap)
    opening = sim.start()
    assert [r.type_url for r in opening] == [CLUSTER, LISTENER, ENDPOINT, ROUTE]
    assert dict(opening[2].initial_resource_versions) == sim.types[ENDPOINT].known
    exchange(sim, again, opening)
    assert sim.responses == before


def test_a_removed_cluster_unsubscribes_its_endpoints() -> None:
    sim = SimProxy("a-0.default", "a", META)
    machine = DeltaStream()
    machine.on_snapshot(snapshot("a", "b", "c"))
    exchange(sim, machine, sim.start())
    sent = []
    for out in machine.on_snapshot(snapshot("a", "b")):
        payload = out.payload
        sent += sim.on_response(Response.FromString(payload), len(payload))
    unsubscribe = [r for r in sent if r.type_url == ENDPOINT and r.resource_names_unsubscribe]
    assert [list(r.resource_names_unsubscribe) for r in unsubscribe] == [
        ["outbound|80||c.default"]]
    assert "outbound|80||c.default" not in sim.types[ENDPOINT].names


VHDS_META = {**META, "vhds": True}


def test_vhds_subscribes_once_the_route_config_asks_and_resumes_on_reconnect() -> None:
    sim = SimProxy("a-0.default", "a", VHDS_META)
    machine = DeltaStream()
    snap = snapshot("a", "b", "c", meta=VHDS_META)
    machine.on_snapshot(snap)
    sent = exchange(sim, machine, sim.start())
    opened = [r for r in sent if r.type_url == VHOST and not r.response_nonce]
    assert [list(r.resource_names_subscribe) for r in opened] == [[]]  # as Envoy: names nothing
    assert sim.types[VHOST].known.keys() == snap.of(VHOST).keys()
    assert "outbound/b.default:80" in sim.types[VHOST].known
    assert sim.synced()
    before = sim.responses
    again = DeltaStream()
    again.on_snapshot(snap)
    opening = sim.start()
    assert [r.type_url for r in opening] == [CLUSTER, LISTENER, ENDPOINT, ROUTE, VHOST]
    assert dict(opening[4].initial_resource_versions) == sim.types[VHOST].known
    exchange(sim, again, opening)
    assert sim.responses == before
