"""What a delta stream keeps per stream when every sidecar has every Service
(no `Sidecar` scoping): the subscribed names and the versions the client has
must be shared with the snapshot and the other streams, not copied per stream."""

from __future__ import annotations

import gc
import tracemalloc

from envoy.service.discovery.v3 import discovery_pb2

from gossamer.xds.delta import DeltaStream
from gossamer.xds.events import Outgoing
from gossamer.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, VHOST, Snapshot, XdsResource

SERVICES = 1000
STREAMS = 50


def _res(type_url: str, name: str, version: str = "1") -> XdsResource:
    return XdsResource(type_url, name, name.encode(), f"{name}-{version}")


def _mesh(changed: int | None = None) -> Snapshot:
    """Every Service's cluster, endpoints and virtual host; `changed`: that
    Service's endpoints at a new version."""
    names = [f"outbound|80||s{i}.default" for i in range(SERVICES)]
    return Snapshot.build({
        CLUSTER: {n: _res(CLUSTER, n) for n in names},
        ENDPOINT: {n: _res(ENDPOINT, n, "2" if i == changed else "1")
                   for i, n in enumerate(names)},
        LISTENER: {"outbound": _res(LISTENER, "outbound")},
        ROUTE: {"outbound": _res(ROUTE, "outbound")},
        VHOST: {f"outbound/s{i}.default:80": _res(VHOST, f"outbound/s{i}.default:80")
                for i in range(SERVICES)},
    })


def _request(type_url: str, subscribe: list[str] | None = None, nonce: str = "",
             ) -> discovery_pb2.DeltaDiscoveryRequest:
    return discovery_pb2.DeltaDiscoveryRequest(
        type_url=type_url, resource_names_subscribe=subscribe or [], response_nonce=nonce)


def _ack_all(m: DeltaStream, out: list[Outgoing]) -> None:
    while out:
        sent = out.pop(0)
        out += m.on_request(_request(sent.type_url, nonce=sent.nonce))


def _synced_stream(snap: Snapshot) -> DeltaStream:
    """A stream opened as Envoy opens it (CDS and LDS wildcard, EDS by name, RDS
    by name, VHDS) and every response ACKed."""
    m = DeltaStream()
    out = m.on_request(_request(CLUSTER)) + m.on_snapshot(snap)
    out += m.on_request(_request(ENDPOINT, list(snap.of(ENDPOINT))))
    out += m.on_request(_request(LISTENER))
    out += m.on_request(_request(ROUTE, ["outbound"]))
    out += m.on_request(_request(VHOST))
    _ack_all(m, out)
    m.drain_events()
    return m


def test_an_unscoped_stream_keeps_a_few_kilobytes_not_a_copy_of_the_mesh() -> None:
    snap = _mesh()
    streams = [_synced_stream(snap)]  # first-use allocations (caches) not counted
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        streams += [_synced_stream(snap) for _ in range(STREAMS)]
        gc.collect()
        per_stream = (tracemalloc.get_traced_memory()[0] - before) / STREAMS
    finally:
        tracemalloc.stop()
    # A dict of a thousand versions or a set of a thousand names per stream
    # alone is over 30 KB; each stream had three dicts and a set (225 KB).
    assert per_stream < 20_000, f"{per_stream:.0f} bytes per stream"
    assert len({id(s.types[ENDPOINT].names) for s in streams}) == 1


def test_shared_state_still_tracks_each_stream() -> None:
    """An endpoint change reaches every stream as the one changed resource; a
    stream that then subscribes to one more name (an on-demand virtual host)
    gets only that, and the others are unaffected."""
    first, second = _synced_stream(_mesh()), _synced_stream(_mesh())
    changed = _mesh(changed=7)
    for m in (first, second):
        out = m.on_snapshot(changed)
        assert [(o.type_url, o.resources, o.removed) for o in out] == [(ENDPOINT, 1, 0)]
        _ack_all(m, out)
        assert m.types[ENDPOINT].known["outbound|80||s7.default"] == "outbound|80||s7.default-2"
    extra = discovery_pb2.DeltaDiscoveryRequest(
        type_url=ENDPOINT, resource_names_unsubscribe=["outbound|80||s3.default"])
    assert first.on_request(extra) == []
    assert "outbound|80||s3.default" not in first.types[ENDPOINT].known
    assert "outbound|80||s3.default" in second.types[ENDPOINT].known
    out = first.on_request(_request(ENDPOINT, ["outbound|80||s3.default"]))
    assert [(o.type_url, o.resources, o.removed) for o in out] == [(ENDPOINT, 1, 0)]
    assert second.on_snapshot(changed) == []
