"""SnapshotCache change notification and ProxyRegistry bookkeeping."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_pb2

from gossamer.xds.cache import SnapshotCache
from gossamer.xds.events import Acked, Nacked, Outgoing, Subscribed
from gossamer.xds.status import NodeInfo, ProxyRegistry
from gossamer.xds.types import CLUSTER, ROUTE, Snapshot, XdsResource


def snap(route_name: str = "r") -> Snapshot:
    res = XdsResource.from_message(ROUTE, route_name, route_pb2.RouteConfiguration(
        name=route_name))
    return Snapshot.build({ROUTE: {route_name: res}})


# ---------------------------------------------------------------------------------- cache


def test_a_real_change_calls_watchers_and_an_equal_snapshot_does_not() -> None:
    cache = SnapshotCache()
    seen = cache.generation("n")
    calls: list[int] = []
    cache.watch("n", lambda: calls.append(cache.generation("n")))
    cache.set("n", snap())
    assert calls == [cache.generation("n")]
    assert calls[0] != seen
    # An equal snapshot (new object, same versions) calls nobody and is not stored.
    stored = cache.get("n")
    cache.set("n", snap())
    assert len(calls) == 1
    assert cache.get("n") is stored
    cache.set("n", snap("other"))
    assert len(calls) == 2
    assert calls[1] > calls[0]


def test_remove_calls_watchers_and_generations_never_repeat() -> None:
    cache = SnapshotCache()
    cache.set("n", snap())
    first = cache.generation("n")
    calls: list[Snapshot | None] = []
    unwatch = cache.watch("n", lambda: calls.append(cache.get("n")))
    cache.remove("n")
    assert calls == [None]  # the stream sees the snapshot gone
    assert "n" not in cache
    unwatch()
    cache.set("n", snap())
    assert cache.generation("n") > first
    assert cache.node_ids() == ["n"]
    assert len(cache) == 1


def test_watching_an_unknown_node_leaves_nothing_behind() -> None:
    cache = SnapshotCache()
    unwatch = cache.watch("ghost", lambda: None)
    assert cache.node_ids() == []
    unwatch()
    assert cache._entries == {}


def test_watchers_are_called_on_every_real_change_until_unwatched() -> None:
    cache = SnapshotCache()
    calls: list[str] = []
    unwatch_a = cache.watch("n", lambda: calls.append("a"))
    unwatch_b = cache.watch("n", lambda: calls.append("b"))
    cache.set("n", snap())
    assert calls == ["a", "b"]
    cache.set("n", snap())  # same versions: nobody is called
    assert calls == ["a", "b"]
    unwatch_a()
    unwatch_a()  # twice is harmless
    cache.set("n", snap("other"))
    assert calls == ["a", "b", "b"]
    cache.remove("n")
    assert calls == ["a", "b", "b", "b"]
    assert "n" in cache._entries  # kept while watched, without a snapshot
    unwatch_b()
    assert cache._entries == {}
    cache.set("other-node", snap())
    assert calls == ["a", "b", "b", "b"]  # only the node's own changes


def test_a_watcher_may_unwatch_while_being_called() -> None:
    cache = SnapshotCache()
    calls: list[str] = []
    unwatch: list[object] = []

    def once() -> None:
        calls.append("once")
        unwatch[0]()  # type: ignore[operator]
    unwatch.append(cache.watch("n", once))
    cache.watch("n", lambda: calls.append("always"))
    cache.set("n", snap())
    cache.set("n", snap("other"))
    assert calls == ["once", "always", "always"]


# ------------------------------------------------------------------------------- registry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def out(type_url: str, version: str) -> Outgoing:
    return Outgoing(type_url, version, "1", 1, 0, lambda: b"")


def test_registry_tracks_versions_nacks_and_sync() -> None:
    clock = Clock()
    reg = ProxyRegistry(clock=clock)
    current = snap()
    version = current.version(ROUTE)
    sid = reg.connect(NodeInfo("n", "c", {"workload": "w"}), "delta")
    reg.record_event("n", sid, Subscribed(ROUTE, False, frozenset({"r"})))
    reg.record_sent("n", sid, out(ROUTE, "bad"))
    reg.record_event("n", sid, Nacked(ROUTE, "bad", "invalid route", 13))
    status = reg.get("n")
    assert status is not None
    assert not status.synced(current)
    [entry] = reg.to_json(_Cache(current))
    assert entry["last_nack"] == {"type": "routes", "type_url": ROUTE, "version": "bad",
                                  "error": "invalid route", "code": 13, "at": 1000.0}
    assert entry["types"]["routes"]["rejecting"] is True
    assert entry["synced"] is False
    reg.record_sent("n", sid, out(ROUTE, version))
    reg.record_event("n", sid, Acked(ROUTE, version))
    assert status.synced(current)
    [entry] = reg.to_json(_Cache(current))
    assert entry["synced"] is True
    assert entry["types"]["routes"]["sent_count"] == 2
    assert entry["last_nack"]["version"] == "bad"  # kept as history
    # Types the proxy never subscribed to do not count against sync.
    reg.record_event("n", sid, Subscribed(CLUSTER, False, frozenset()))
    assert status.synced(current)


class _Cache:
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def get(self, node_id: str) -> Snapshot | None:
        return self.snapshot


def test_registry_reconnects_and_stale_streams() -> None:
    clock = Clock()
    reg = ProxyRegistry(clock=clock, retain_disconnected=60)
    old = reg.connect(NodeInfo("n"), "sotw")
    reg.record_event("n", old, Nacked(ROUTE, "v1", "boom", 13))
    new = reg.connect(NodeInfo("n"), "sotw")
    # Reports from the old stream are ignored, its end does not disconnect.
    reg.record_event("n", old, Acked(ROUTE, "v9"))
    assert not reg.disconnect("n", old)
    status = reg.get("n")
    assert status is not None
    assert status.connected
    assert status.type(ROUTE).acked_version is None
    assert status.last_nack is not None
    assert status.last_nack.error == "boom"  # carried over
    assert reg.disconnect("n", new)
    assert reg.to_json()[0]["connected"] is False
    assert reg.node_ids() == []
    assert reg.node_ids(connected_only=False) == ["n"]
    clock.now += 61
    assert reg.to_json() == []


def test_node_info_from_proto() -> None:
    node = base_pb2.Node(id="w1.default", cluster="svc", user_agent_name="envoy")
    node.metadata.update({"workload": "w1", "ports": [1, 2]})
    node.user_agent_build_version.version.major_number = 1
    node.user_agent_build_version.version.minor_number = 40
    info = NodeInfo.from_proto(node)
    assert info == NodeInfo("w1.default", "svc", {"workload": "w1", "ports": [1.0, 2.0]},
                            "envoy/1.40.0")


def test_node_metadata_converts_as_message_to_dict_does() -> None:
    from google.protobuf import json_format

    node = base_pb2.Node(id="w1.default")
    node.metadata.update({"s": "x", "n": 3, "f": 2.5, "b": True, "none": None,
                          "list": [1, "a", None, False, {"k": [2, {"deep": "y"}]}],
                          "nested": {"labels": {"app": "web"}, "empty": {}, "l": []}})
    got = NodeInfo.from_proto(node).metadata
    assert got == json_format.MessageToDict(node.metadata)
    assert type(got["n"]) is float
    assert got["list"][4]["k"][1] == {"deep": "y"}


def test_registry_keeps_a_node_connected_until_its_last_stream_ends() -> None:
    """Two open streams of one node: the newest ending first makes the older one
    current again (its metadata, its versions); only the last end disconnects."""
    clock = Clock()
    reg = ProxyRegistry(clock=clock)
    old = reg.connect(NodeInfo("n", "c", {"inbound_port": 1.0}), "delta", "g")
    reg.record_event("n", old, Acked(ROUTE, "v1"))
    clock.now += 1
    new = reg.connect(NodeInfo("n", "c", {"inbound_port": 2.0}), "sotw", "g")
    reg.record_event("n", new, Nacked(ROUTE, "v2", "boom", 13))
    reg.record_event("n", old, Acked(ROUTE, "v3"))  # the older stream's own state
    assert reg.live_grants("n") == {"g"}
    current = reg.get("n")
    assert current is not None
    assert current.node.metadata == {"inbound_port": 2.0}
    assert current.type(ROUTE).acked_version is None
    assert reg.is_current("n", new)
    assert not reg.is_current("n", old)

    assert not reg.disconnect("n", new)  # the older stream is still open
    current = reg.get("n")
    assert current is not None
    assert current.connected
    assert current.stream_id == old
    assert current.node.metadata == {"inbound_port": 1.0}
    assert current.type(ROUTE).acked_version == "v3"
    assert current.last_nack is not None
    assert current.last_nack.error == "boom"  # the newer stream's NACK carries over
    assert reg.is_current("n", old)
    assert reg.node_ids() == ["n"]
    assert not reg.disconnect("n", new)  # a second end of the same stream: nothing

    assert reg.disconnect("n", old)
    assert reg.get("n") is not None
    assert reg.to_json()[0]["connected"] is False
    assert reg.live_grants("n") == frozenset()
    assert not reg.is_current("n", old)


def test_registry_older_stream_ending_first_changes_nothing() -> None:
    reg = ProxyRegistry(clock=Clock())
    old = reg.connect(NodeInfo("n", "c", {"v": "old"}), "delta", "g")
    new = reg.connect(NodeInfo("n", "c", {"v": "new"}), "delta", "g")
    other = reg.connect(NodeInfo("m"), "delta", "h")
    assert not reg.disconnect("n", old)
    current = reg.get("n")
    assert current is not None
    assert (current.stream_id, current.node.metadata) == (new, {"v": "new"})
    assert reg.live_grants("n") == {"g"}
    assert reg.live_grants("m") == {"h"}
    assert reg.disconnect("n", new)
    assert reg.node_ids() == ["m"]
    assert reg.disconnect("m", other)
