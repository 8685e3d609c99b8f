"""The delta machine with on-demand rules (`OnDemand`, xds/coverage.py): what the
wildcard and VHDS namespace leave out, explicit names and aliases bring in, and from
then on the stream gets their changes, and only theirs."""

from __future__ import annotations

from types import MappingProxyType

from envoy.service.discovery.v3 import discovery_pb2

from gossamer.xds.cache import SnapshotCache
from gossamer.xds.delta import DeltaStream
from gossamer.xds.events import Outgoing
from gossamer.xds.types import CLUSTER, VHOST, OnDemand, Snapshot, XdsResource
from tests.unit.xds.test_stream import cluster, dreq
from tests.unit.xds.test_vhds_stream import vhost

A, B = vhost("outbound/a.ns:80"), vhost("outbound/b.ns:80")
ALIASES = MappingProxyType({"outbound/a": A.name, "outbound/a.ns": A.name,
                            "outbound/b": B.name})
VHOSTS = OnDemand(None, ALIASES, ("outbound/",))


def _snap(clusters: list[XdsResource], vhosts: list[XdsResource],
          demand: dict[str, OnDemand] | None) -> Snapshot:
    return Snapshot.build({CLUSTER: {c.name: c for c in clusters},
                           VHOST: {v.name: v for v in vhosts}}, on_demand=demand)


def _parsed(out: Outgoing) -> discovery_pb2.DeltaDiscoveryResponse:
    return discovery_pb2.DeltaDiscoveryResponse.FromString(out.payload)


def _entries(out: Outgoing) -> list[tuple[str, bool, list[str]]]:
    """(name, has a resource, aliases) of each entry of the response."""
    return [(r.name, r.HasField("resource"), list(r.aliases)) for r in _parsed(out).resources]


def test_the_wildcard_leaves_on_demand_clusters_to_explicit_names() -> None:
    own, a, b = cluster("own"), cluster("svc-a"), cluster("svc-b")
    demand = {CLUSTER: OnDemand(frozenset({"svc-a", "svc-b"}))}
    m = DeltaStream()
    m.on_snapshot(_snap([own, a, b], [], demand))
    [out] = m.on_request(dreq(CLUSTER))
    assert [e[0] for e in _entries(out)] == ["own"]
    [out] = m.on_request(dreq(CLUSTER, ["svc-a"], nonce=out.nonce))  # ODCDS asks
    assert [e[0] for e in _entries(out)] == ["svc-a"]
    assert m.on_request(dreq(CLUSTER, nonce=out.nonce)) == []
    # A change to b reaches nobody who has not asked for it; a change to a does.
    b2 = cluster("svc-b", timeout=2)
    assert m.on_snapshot(_snap([own, a, b2], [], demand)) == []
    a2 = cluster("svc-a", timeout=2)
    [out] = m.on_snapshot(_snap([own, a2, b2], [], demand))
    assert [e[0] for e in _entries(out)] == ["svc-a"]
    m.on_request(dreq(CLUSTER, nonce=out.nonce))
    # A removed on-demand cluster the stream has is said removed.
    [out] = m.on_snapshot(_snap([own, b2], [], demand))
    assert list(_parsed(out).removed_resources) == ["svc-a"]


def test_vhds_on_demand_answers_aliases_with_the_virtual_host_and_misses_empty() -> None:
    m = DeltaStream()
    m.on_snapshot(_snap([], [A, B], {VHOST: VHOSTS}))
    [out] = m.on_request(dreq(VHOST))  # Envoy's first VHDS request names nothing
    # Nothing up front, but an answer Envoy's namespace watch takes.
    assert _entries(out) == [("outbound/", False, ["outbound/"])]
    [out] = m.on_request(dreq(VHOST, ["outbound/a"], nonce=out.nonce))
    assert _entries(out) == [(A.name, True, ["outbound/a"])]
    [out] = m.on_request(dreq(VHOST, ["outbound/nowhere"], nonce=out.nonce))
    assert _entries(out) == [("outbound/nowhere", False, ["outbound/nowhere"])]
    assert not _parsed(out).removed_resources
    assert m.on_request(dreq(VHOST, nonce=out.nonce)) == []
    # b changes: not this stream's; a changes: sent.
    b2 = vhost("outbound/b.ns:80", cluster="other")
    assert m.on_snapshot(_snap([], [A, b2], {VHOST: VHOSTS})) == []
    a2 = vhost("outbound/a.ns:80", cluster="other")
    [out] = m.on_snapshot(_snap([], [a2, b2], {VHOST: VHOSTS}))
    assert [(n, has) for n, has, _ in _entries(out)] == [(A.name, True)]
    assert _parsed(out).resources[0].version == a2.version


def test_a_second_alias_of_a_held_virtual_host_is_answered_again() -> None:
    m = DeltaStream()
    m.on_snapshot(_snap([], [A, B], {VHOST: VHOSTS}))
    [out] = m.on_request(dreq(VHOST))
    [out] = m.on_request(dreq(VHOST, ["outbound/a"], nonce=out.nonce))
    [out] = m.on_request(dreq(VHOST, ["outbound/a.ns"], nonce=out.nonce))
    assert _entries(out) == [(A.name, True, ["outbound/a", "outbound/a.ns"])]


def test_turning_on_demand_off_sends_what_the_wildcard_now_covers() -> None:
    own, a = cluster("own"), cluster("svc-a")
    m = DeltaStream()
    m.on_snapshot(_snap([own, a], [], {CLUSTER: OnDemand(frozenset({"svc-a"}))}))
    [out] = m.on_request(dreq(CLUSTER))
    m.on_request(dreq(CLUSTER, nonce=out.nonce))
    [out] = m.on_snapshot(_snap([own, a], [], None))  # same versions, no rule
    assert [e[0] for e in _entries(out)] == ["svc-a"]


def test_a_new_snapshot_with_equal_rules_costs_no_full_diff() -> None:
    own, a = cluster("own"), cluster("svc-a")
    m = DeltaStream()
    m.on_snapshot(_snap([own, a], [], {CLUSTER: OnDemand(frozenset({"svc-a"}))}))
    [out] = m.on_request(dreq(CLUSTER))
    m.on_request(dreq(CLUSTER, nonce=out.nonce))
    # Another translation, another object with the same content: nothing to send.
    assert m.on_snapshot(_snap([own, a], [], {CLUSTER: OnDemand(frozenset({"svc-a"}))})) == []


def test_a_resuming_client_gets_no_empty_opening_answer() -> None:
    own = cluster("own")
    m = DeltaStream()
    m.on_snapshot(_snap([own], [], None))
    assert m.on_request(dreq(CLUSTER, initial={"own": own.version})) == []
    fresh = DeltaStream()
    fresh.on_snapshot(_snap([], [], {CLUSTER: OnDemand(frozenset())}))
    [out] = fresh.on_request(dreq(CLUSTER))  # a new client waits for a first answer
    assert _entries(out) == []


def test_the_cache_takes_a_snapshot_whose_rules_alone_changed() -> None:
    """A route that starts mirroring to a cluster the sidecar holds on demand changes
    no version: the new rules must still reach the stream (and send the cluster)."""
    own, shadow = cluster("own"), cluster("shadow")
    cache = SnapshotCache()
    before = _snap([own, shadow], [], {CLUSTER: OnDemand(frozenset({"shadow"}))})
    after = _snap([own, shadow], [], {CLUSTER: OnDemand(frozenset())})
    cache.set("node", before)
    cache.set("node", _snap([own, shadow], [], {CLUSTER: OnDemand(frozenset({"shadow"}))}))
    assert cache.get("node") is before  # equal rules, equal versions: kept
    cache.set("node", after)
    assert cache.get("node") is after
    m = DeltaStream()
    m.on_snapshot(before)
    [out] = m.on_request(dreq(CLUSTER))
    m.on_request(dreq(CLUSTER, nonce=out.nonce))
    [out] = m.on_snapshot(after)
    assert [e[0] for e in _entries(out)] == ["shadow"]
