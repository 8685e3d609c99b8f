"""The delta machine with VHDS's VirtualHost resources: Envoy's first request names
nothing (all of the node's virtual hosts), a subscription may name a namespace
(`<route config>`, covering `<route config>/...`) or one virtual host (on demand)."""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2
from envoy.service.discovery.v3 import discovery_pb2

from gossamer.xds.delta import DeltaStream
from gossamer.xds.events import Outgoing
from gossamer.xds.types import VHOST, Snapshot, XdsResource
from tests.unit.xds.test_stream import dreq


def vhost(name: str, cluster: str = "c") -> XdsResource:
    domain = name.rpartition("/")[2]
    msg = route_components_pb2.VirtualHost(name=domain, domains=[domain], routes=[
        route_components_pb2.Route(
            match=route_components_pb2.RouteMatch(prefix="/"),
            route=route_components_pb2.RouteAction(cluster=cluster))])
    return XdsResource.from_message(VHOST, name, msg)


def snap(*vhosts: XdsResource) -> Snapshot:
    return Snapshot.build({VHOST: {v.name: v for v in vhosts}})


def parts(out: Outgoing) -> tuple[dict[str, str], list[str]]:
    parsed = discovery_pb2.DeltaDiscoveryResponse.FromString(out.payload)
    assert parsed.type_url == VHOST
    return {r.name: r.version for r in parsed.resources}, list(parsed.removed_resources)


def ack(m: DeltaStream, out: Outgoing) -> list[Outgoing]:
    return m.on_request(dreq(VHOST, nonce=out.nonce))


def test_first_request_gets_every_virtual_host_then_only_changes() -> None:
    m = DeltaStream()
    a, b = vhost("outbound/a"), vhost("outbound/b")
    m.on_snapshot(snap(a, b))
    [out] = m.on_request(dreq(VHOST))
    assert sorted(parts(out)[0]) == ["outbound/a", "outbound/b"]
    assert ack(m, out) == []
    a2 = vhost("outbound/a", cluster="d")
    [out] = m.on_snapshot(snap(a2, b))
    assert parts(out) == ({"outbound/a": a2.version}, [])
    assert ack(m, out) == []
    [out] = m.on_snapshot(snap(a2))
    assert parts(out) == ({}, ["outbound/b"])


def test_a_namespace_subscription_covers_its_virtual_hosts_only() -> None:
    m = DeltaStream()
    a, b, other = vhost("outbound/a"), vhost("outbound/b"), vhost("capture/x")
    m.on_snapshot(snap(a, b, other))
    [out] = m.on_request(dreq(VHOST, ["outbound"]))
    assert sorted(parts(out)[0]) == ["outbound/a", "outbound/b"]
    assert parts(out)[1] == []  # a namespace names no resource: never "removed"
    assert ack(m, out) == []
    b2 = vhost("outbound/b", cluster="d")
    x2 = vhost("capture/x", cluster="d")
    [out] = m.on_snapshot(snap(a, b2, x2))
    assert parts(out) == ({"outbound/b": b2.version}, [])
    assert ack(m, out) == []
    # On demand: a name that does not exist is answered, once, by an empty resource
    # under that name and alias (what Envoy's on_demand filter waits for).
    [out] = m.on_request(dreq(VHOST, ["outbound/nowhere"]))
    assert parts(out) == ({"outbound/nowhere": ""}, [])
    [entry] = discovery_pb2.DeltaDiscoveryResponse.FromString(out.payload).resources
    assert not entry.HasField("resource")
    assert list(entry.aliases) == ["outbound/nowhere"]
    assert ack(m, out) == []
    assert m.on_snapshot(snap(a, b2, x2, vhost("capture/y"))) == []
    # Re-subscribing the namespace resends what it covers (Envoy may have dropped it).
    [out] = m.on_request(dreq(VHOST, ["outbound"]))
    assert sorted(parts(out)[0]) == ["outbound/a", "outbound/b"]
    assert ack(m, out) == []
    assert m.on_request(dreq(VHOST, unsubscribe=["outbound"])) == []
    c = vhost("outbound/c")
    assert m.on_snapshot(snap(a, b2, c)) == []  # no longer subscribed
