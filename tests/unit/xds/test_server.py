"""The grpc.aio ADS server with an in-process grpc client (fast; no Envoy)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from prometheus_client import CollectorRegistry

from gossamer.xds.cache import SnapshotCache
from gossamer.xds.server import NodeInfo, NoHooks, XdsServer
from gossamer.xds.status import ProxyRegistry
from gossamer.xds.types import CLUSTER, Snapshot, XdsResource

TIMEOUT = 5.0


def snap(*names: str, timeout: int = 1) -> Snapshot:
    clusters = {}
    for n in names:
        msg = cluster_pb2.Cluster(name=n)
        msg.connect_timeout.seconds = timeout
        clusters[n] = XdsResource.from_message(CLUSTER, n, msg)
    return Snapshot.build({CLUSTER: clusters})


class Hooks(NoHooks):
    def __init__(self, cache: SnapshotCache, on_connect: Snapshot | None = None) -> None:
        self.cache = cache
        self.on_connect = on_connect
        self.events: list[tuple[str, str]] = []
        self.nodes: list[NodeInfo] = []  # as proxy_connected was given them

    async def proxy_connected(self, node_id: str, node: NodeInfo) -> None:
        self.events.append(("connected", node_id))
        self.nodes.append(node)
        if self.on_connect is not None:
            self.cache.set(node_id, self.on_connect)

    async def proxy_disconnected(self, node_id: str) -> None:
        self.events.append(("disconnected", node_id))


@pytest.fixture
async def env() -> AsyncIterator[dict[str, Any]]:
    cache = SnapshotCache()
    registry = ProxyRegistry()
    hooks = Hooks(cache)
    metrics = CollectorRegistry()
    server = XdsServer(cache, hooks, registry, metrics_registry=metrics)
    port = await server.start("127.0.0.1", 0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield {"cache": cache, "registry": registry, "hooks": hooks, "server": server,
               "stub": ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel),
               "metrics": metrics}
    finally:
        await channel.close()
        await server.stop(0)


def sotw_req(node: str | None = "n1", **kw: Any) -> discovery_pb2.DiscoveryRequest:
    r = discovery_pb2.DiscoveryRequest(type_url=CLUSTER, **kw)
    if node:
        r.node.id = node
        r.node.cluster = "c1"
        r.node.metadata.update({"workload": "w", "admin_port": 9901})
    return r


async def read(call: Any) -> Any:
    return await asyncio.wait_for(call.read(), TIMEOUT)


async def eventually(check: Any, what: str) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"timed out waiting for {what}")


async def test_sotw_stream_over_grpc(env: dict[str, Any]) -> None:
    cache: SnapshotCache = env["cache"]
    registry: ProxyRegistry = env["registry"]
    cache.set("n1", snap("a", "b"))
    call = env["stub"].StreamAggregatedResources()
    await call.write(sotw_req())
    resp = await read(call)
    assert resp.type_url == CLUSTER
    current = cache.get("n1")
    assert current is not None
    assert resp.version_info == current.version(CLUSTER)
    assert sorted(cluster_pb2.Cluster.FromString(a.value).name for a in resp.resources) == [
        "a", "b"]
    await call.write(sotw_req(node=None, version_info=resp.version_info,
                              response_nonce=resp.nonce))
    def acked() -> bool:
        status = registry.get("n1")
        return status is not None and status.synced(cache.get("n1"))

    await eventually(acked, "the ACK")
    [entry] = registry.to_json(cache)
    assert entry["metadata"] == {"workload": "w", "admin_port": 9901.0}
    assert entry["cluster"] == "c1"
    assert entry["synced"] is True
    # A new snapshot is pushed on the open stream.
    cache.set("n1", snap("a"))
    resp2 = await read(call)
    assert [cluster_pb2.Cluster.FromString(a.value).name for a in resp2.resources] == ["a"]
    assert resp2.nonce != resp.nonce
    await eventually(lambda: env["metrics"].get_sample_value(
        "gossamer_xds_pushes_total", {"type": "clusters"}) == 2, "the push metric")
    call.cancel()


async def test_delta_stream_over_grpc(env: dict[str, Any]) -> None:
    cache: SnapshotCache = env["cache"]
    cache.set("n1", snap("a", "b"))
    call = env["stub"].DeltaAggregatedResources()
    first = discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER)
    first.node.id = "n1"
    current = cache.get("n1")
    assert current is not None
    first.initial_resource_versions["a"] = current.of(CLUSTER)["a"].version
    await call.write(first)
    resp = await read(call)
    assert [r.name for r in resp.resources] == ["b"]  # "a" is already there
    await call.write(discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER,
                                                         response_nonce=resp.nonce))
    cache.set("n1", snap("b"))
    resp2 = await read(call)
    assert list(resp2.removed_resources) == ["a"]
    assert not resp2.resources
    call.cancel()


async def test_hook_runs_before_the_snapshot_is_looked_up(env: dict[str, Any]) -> None:
    env["hooks"].on_connect = snap("late")
    call = env["stub"].StreamAggregatedResources()
    await call.write(sotw_req(node="n2"))
    resp = await read(call)
    assert [cluster_pb2.Cluster.FromString(a.value).name for a in resp.resources] == ["late"]
    assert env["hooks"].events == [("connected", "n2")]
    call.cancel()
    await eventually(lambda: ("disconnected", "n2") in env["hooks"].events, "disconnect")
    status = env["registry"].get("n2")
    assert status is not None
    assert not status.connected


async def test_first_request_must_name_the_node(env: dict[str, Any]) -> None:
    call = env["stub"].StreamAggregatedResources()
    await call.write(sotw_req(node=None))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await read(call)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert env["hooks"].events == []


async def test_old_stream_ending_does_not_disconnect_a_newer_one(env: dict[str, Any]) -> None:
    cache: SnapshotCache = env["cache"]
    cache.set("n1", snap("a"))
    old = env["stub"].StreamAggregatedResources()
    await old.write(sotw_req())
    await read(old)
    new = env["stub"].StreamAggregatedResources()
    await new.write(sotw_req())
    await read(new)
    old.cancel()
    await asyncio.sleep(0.2)
    assert ("disconnected", "n1") not in env["hooks"].events
    status = env["registry"].get("n1")
    assert status is not None
    assert status.connected
    new.cancel()
    await eventually(lambda: ("disconnected", "n1") in env["hooks"].events, "disconnect")
    assert env["hooks"].events.count(("connected", "n1")) == 2


async def test_newer_stream_ending_first_makes_the_older_one_current_again(
        env: dict[str, Any]) -> None:
    """The node stays connected, and the control plane is told its older stream's
    node again (to translate for that metadata), until its last stream ends."""
    cache: SnapshotCache = env["cache"]
    registry: ProxyRegistry = env["registry"]
    hooks: Hooks = env["hooks"]
    cache.set("n1", snap("a"))
    old = env["stub"].StreamAggregatedResources()
    await old.write(sotw_req())
    first = await read(old)
    await old.write(sotw_req(node=None, version_info=first.version_info,
                             response_nonce=first.nonce))  # ACK
    newer = env["stub"].StreamAggregatedResources()
    req = sotw_req()
    req.node.metadata.update({"workload": "w2"})
    await newer.write(req)
    await read(newer)
    newer.cancel()
    await eventually(lambda: len(hooks.nodes) == 3, "the older node to be current again")
    assert hooks.events == [("connected", "n1")] * 3
    assert [n.metadata["workload"] for n in hooks.nodes] == ["w", "w2", "w"]
    status = registry.get("n1")
    assert status is not None
    assert status.connected
    assert status.node.metadata["workload"] == "w"
    cache.set("n1", snap("a", "b"))  # the older stream still gets pushes
    resp = await read(old)
    assert sorted(cluster_pb2.Cluster.FromString(a.value).name
                  for a in resp.resources) == ["a", "b"]
    old.cancel()
    await eventually(lambda: ("disconnected", "n1") in hooks.events, "disconnect")
    status = registry.get("n1")
    assert status is not None
    assert not status.connected


async def test_stop_ends_streams_and_runs_disconnect_hooks(env: dict[str, Any]) -> None:
    env["cache"].set("n1", snap("a"))
    call = env["stub"].StreamAggregatedResources()
    await call.write(sotw_req())
    await read(call)
    await env["server"].stop(0)
    assert env["hooks"].events == [("connected", "n1"), ("disconnected", "n1")]
    assert env["metrics"].get_sample_value("gossamer_xds_streams", {"kind": "sotw"}) == 0


class GrantingHooks(Hooks):
    """Admits a stream by its `grant` metadata and returns it as the grant."""

    async def authorize(self, node: NodeInfo, metadata: Any) -> str | None:
        return dict(metadata).get("grant")


async def test_end_streams_ends_only_the_streams_of_that_grant() -> None:
    cache = SnapshotCache()
    hooks = GrantingHooks(cache)
    server = XdsServer(cache, hooks, ProxyRegistry())
    port = await server.start("127.0.0.1", 0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    try:
        calls, firsts = {}, {}
        for node, grant in (("n1", "g1"), ("n2", "g1"), ("n3", "g2")):
            cache.set(node, snap("a"))
            calls[node] = stub.StreamAggregatedResources(metadata=(("grant", grant),))
            await calls[node].write(sotw_req(node=node))
            firsts[node] = await read(calls[node])
        await calls["n3"].write(sotw_req(node="n3", version_info=firsts["n3"].version_info,
                                         response_nonce=firsts["n3"].nonce))  # ACK
        assert server.end_streams("g1") == 2
        for node in ("n1", "n2"):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await read(calls[node])
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        cache.set("n3", snap("a", "b"))  # the other grant's stream still gets pushes
        resp = await read(calls["n3"])
        assert sorted(cluster_pb2.Cluster.FromString(a.value).name
                      for a in resp.resources) == ["a", "b"]
        assert server.end_streams("g1") == 0
        calls["n3"].cancel()
        await eventually(lambda: ("disconnected", "n3") in hooks.events, "n3 gone")
        assert server.end_streams("g2") == 0  # a closed stream leaves its grant
    finally:
        await channel.close()
        await server.stop(0)


async def test_port_in_use_is_an_error() -> None:
    first = XdsServer(SnapshotCache())
    port = await first.start("127.0.0.1", 0)
    try:
        with pytest.raises(OSError, match="cannot listen"):
            await XdsServer(SnapshotCache()).start("127.0.0.1", port)
    finally:
        await first.stop(0)


async def test_a_connected_node_is_refused_to_another_grant() -> None:
    """A node id belongs to the grant of its open streams: another grant's stream is
    refused PERMISSION_DENIED and changes nothing; the same grant's is admitted."""
    cache = SnapshotCache()
    hooks = GrantingHooks(cache)
    registry = ProxyRegistry()
    server = XdsServer(cache, hooks, registry)
    port = await server.start("127.0.0.1", 0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    try:
        cache.set("n1", snap("a"))
        owner = stub.DeltaAggregatedResources(metadata=(("grant", "g1"),))
        first = discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER)
        first.node.id = "n1"
        await owner.write(first)
        await read(owner)
        for method in (stub.StreamAggregatedResources, stub.DeltaAggregatedResources):
            intruder = method(metadata=(("grant", "g2"),))
            request = sotw_req() if method is stub.StreamAggregatedResources else first
            await intruder.write(request)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await read(intruder)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "another credential" in (info.value.details() or "")
        assert hooks.events == [("connected", "n1")]
        status = registry.get("n1")
        assert status is not None
        assert status.connected
        assert server.end_streams("g2") == 0
        again = stub.StreamAggregatedResources(metadata=(("grant", "g1"),))
        await again.write(sotw_req())
        await read(again)  # the same grant: a reconnect, admitted
        again.cancel()
        owner.cancel()
        await eventually(lambda: ("disconnected", "n1") in hooks.events, "n1 gone")
        later = stub.StreamAggregatedResources(metadata=(("grant", "g2"),))
        await later.write(sotw_req())
        await read(later)  # no stream open any more: another grant may have it
        later.cancel()
    finally:
        await channel.close()
        await server.stop(0)
