"""The ADS server driving a real Envoy, state of the world and delta.

One scenario per protocol variant, in phases that build on each other:
initial config and traffic, an endpoints-only change, a cluster-only change,
a NACKed route config and its repair, and a control-plane restart under
traffic. Every wait is bounded in time; every process is stopped on failure.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2, duration_pb2
from prometheus_client import CollectorRegistry

from gossamer.envoy.errors import EnvoyError
from gossamer.testing.envoy import EnvoyProcess, ads_bootstrap, free_port
from gossamer.xds.cache import SnapshotCache
from gossamer.xds.server import NodeInfo, NoHooks, XdsServer
from gossamer.xds.status import ProxyRegistry
from gossamer.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, Snapshot, XdsResource

pytestmark = pytest.mark.slow

SERVICE = "svc"
ROUTE_NAME = "local"

# ------------------------------------------------------------------------------ resources


def cluster(connect_timeout_s: int = 1) -> XdsResource:
    msg = cluster_pb2.Cluster(name=SERVICE, type=cluster_pb2.Cluster.EDS,
                              connect_timeout=duration_pb2.Duration(seconds=connect_timeout_s))
    msg.eds_cluster_config.eds_config.ads.SetInParent()
    msg.eds_cluster_config.eds_config.resource_api_version = 2  # V3
    return XdsResource.from_message(CLUSTER, SERVICE, msg)


def endpoints(port: int) -> XdsResource:
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=SERVICE)
    sa = cla.endpoints.add().lb_endpoints.add().endpoint.address.socket_address
    sa.address, sa.port_value = "127.0.0.1", port
    return XdsResource.from_message(ENDPOINT, SERVICE, cla)


def listener(port: int) -> XdsResource:
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix="ingress")
    hcm.rds.route_config_name = ROUTE_NAME
    hcm.rds.config_source.ads.SetInParent()
    hcm.rds.config_source.resource_api_version = 2
    router = hcm.http_filters.add(name="envoy.filters.http.router")
    router.typed_config.Pack(router_pb2.Router())
    msg = listener_pb2.Listener(name="ingress")
    msg.address.socket_address.address = "127.0.0.1"
    msg.address.socket_address.port_value = port
    chain = msg.filter_chains.add()
    f = chain.filters.add(name="envoy.filters.network.http_connection_manager")
    packed = any_pb2.Any()
    packed.Pack(hcm)
    f.typed_config.CopyFrom(packed)
    return XdsResource.from_message(LISTENER, "ingress", msg)


def routes(tag: str = "v1", bad_regex: bool = False) -> XdsResource:
    msg = route_pb2.RouteConfiguration(name=ROUTE_NAME)
    vh = msg.virtual_hosts.add(name="all", domains=["*"])
    if bad_regex:
        bad = vh.routes.add()
        bad.match.safe_regex.regex = "("  # RE2 rejects it: Envoy must NACK
        bad.route.cluster = SERVICE
    r = vh.routes.add()
    r.match.prefix = "/"
    r.route.cluster = SERVICE
    header = vh.response_headers_to_add.add()
    header.header.key, header.header.value = "x-route-tag", tag
    return XdsResource.from_message(ROUTE, ROUTE_NAME, msg)


def snapshot(*resources: XdsResource) -> Snapshot:
    by_type: dict[str, dict[str, XdsResource]] = {}
    for res in resources:
        by_type.setdefault(res.type_url, {})[res.name] = res
    return Snapshot.build(by_type)


# -------------------------------------------------------------------------------- helpers


def http_get(port: int, timeout: float = 2.0) -> tuple[int, str, dict[str, str]]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/", timeout=timeout) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace"), dict(exc.headers)
    except OSError as exc:
        return 0, str(exc), {}


async def aget(port: int) -> tuple[int, str, dict[str, str]]:
    return await asyncio.to_thread(http_get, port)


async def eventually(check: Callable[[], Awaitable[bool]] | Callable[[], bool], what: str,
                     timeout: float = 15.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 1):
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def answers(port: int, body: str, tag: str | None = None) -> bool:
    status, text, headers = await aget(port)
    return status == 200 and text == body and (tag is None or
                                               headers.get("x-route-tag") == tag)


class Hooks(NoHooks):
    """Records hook calls; optionally computes the node's snapshot on connect."""

    def __init__(self, cache: SnapshotCache, snapshot_on_connect: Snapshot | None = None):
        self.cache = cache
        self.snapshot_on_connect = snapshot_on_connect
        self.connected: list[NodeInfo] = []
        self.disconnected: list[str] = []

    async def proxy_connected(self, node_id: str, node: NodeInfo) -> None:
        self.connected.append(node)
        if self.snapshot_on_connect is not None:
            await asyncio.sleep(0.05)  # the control plane computes it asynchronously
            self.cache.set(node_id, self.snapshot_on_connect)

    async def proxy_disconnected(self, node_id: str) -> None:
        self.disconnected.append(node_id)


class Traffic:
    """Requests through Envoy every few ms in a thread, counting failures (bounded)."""

    def __init__(self, port: int, max_requests: int = 5000) -> None:
        self.port = port
        self.max_requests = max_requests
        self.ok = 0
        self.failures: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        for _ in range(self.max_requests):
            if self._stop.is_set():
                return
            status, text, _ = http_get(self.port)
            if status == 200:
                self.ok += 1
            else:
                self.failures.append((status, text))
            time.sleep(0.01)


def sent_counts(registry: ProxyRegistry, node_id: str) -> dict[str, int]:
    status = registry.get(node_id)
    assert status is not None
    return {t: status.type(t).sent_count for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE)}


def synced(registry: ProxyRegistry, cache: SnapshotCache, node_id: str) -> bool:
    status = registry.get(node_id)
    return status is not None and status.synced(cache.get(node_id))


# ---------------------------------------------------------------------------------- test


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_ads_with_real_envoy(delta: bool, backends: Any,
                                   envoys: Callable[[dict[str, Any]], EnvoyProcess]) -> None:
    a, b = backends
    node_id = f"gossamer-test-{'delta' if delta else 'sotw'}"
    kind = "delta" if delta else "sotw"
    listen = free_port()
    cache = SnapshotCache()
    registry = ProxyRegistry()
    hooks = Hooks(cache)
    metrics = CollectorRegistry()
    server = XdsServer(cache, hooks, registry, metrics_registry=metrics)
    servers = [server]
    try:
        xds_port = await server.start("127.0.0.1", 0)
        v1 = snapshot(cluster(), endpoints(a.port), listener(listen), routes("v1"))
        cache.set(node_id, v1)
        envoy = envoys(ads_bootstrap(node_id, xds_port, delta=delta,
                                     metadata={"workload": "w1", "namespace": "default"}))
        await asyncio.to_thread(envoy.start)
        await envoy.await_ready()

        # -- 1. initial config: traffic reaches A, everything ACKed ---------------------
        await eventually(lambda: answers(listen, "A", "v1"), "traffic to backend A")
        await eventually(lambda: synced(registry, cache, node_id), "proxy synced")
        [node] = hooks.connected
        assert node.id == node_id
        assert node.metadata == {"workload": "w1", "namespace": "default"}
        [entry] = registry.to_json(cache)
        assert entry["connected"]
        assert entry["synced"]
        assert entry["stream"] == kind
        assert entry["last_nack"] is None

        # -- 2. endpoints-only change: only EDS is pushed; traffic follows --------------
        before = sent_counts(registry, node_id)
        cds_ok = await envoy.astat("cluster_manager.cds.update_success")
        lds_ok = await envoy.astat("listener_manager.lds.update_success")
        eds_ok = await envoy.astat(f"cluster.{SERVICE}.update_success")
        v2 = snapshot(cluster(), endpoints(b.port), listener(listen), routes("v1"))
        cache.set(node_id, v2)
        await eventually(lambda: answers(listen, "B"), "traffic to follow the endpoints to B")
        await eventually(lambda: synced(registry, cache, node_id), "EDS ACKed")
        after = sent_counts(registry, node_id)
        assert {t: after[t] - before[t] for t in after} == {
            CLUSTER: 0, ENDPOINT: 1, LISTENER: 0, ROUTE: 0}
        assert await envoy.astat("cluster_manager.cds.update_success") == cds_ok
        assert await envoy.astat("listener_manager.lds.update_success") == lds_ok
        assert await envoy.astat(f"cluster.{SERVICE}.update_success") > eds_ok

        # -- 3. cluster-only change: the re-warming cluster gets its endpoints resent ---
        # (without the resend Envoy keeps the new cluster warming until its
        # initial_fetch_timeout, 15 s, then falls back to cached endpoints)
        before = sent_counts(registry, node_id)
        v3 = snapshot(cluster(connect_timeout_s=3), endpoints(b.port), listener(listen),
                      routes("v1"))
        cache.set(node_id, v3)
        started = time.monotonic()

        async def cluster_updated() -> bool:
            dump = await envoy.aconfig_dump(include_eds=False)
            clusters = next(c for c in dump["configs"] if c["@type"].endswith(
                "ClustersConfigDump"))
            active = [c for c in clusters.get("dynamic_active_clusters", [])
                      if c["cluster"]["name"] == SERVICE]
            return (not clusters.get("dynamic_warming_clusters")
                    and bool(active) and active[0]["cluster"]["connect_timeout"] == "3s")

        await eventually(cluster_updated, "the modified cluster to finish warming", timeout=10)
        assert time.monotonic() - started < 5
        await eventually(lambda: synced(registry, cache, node_id), "CDS ACKed")
        after = sent_counts(registry, node_id)
        assert after[CLUSTER] - before[CLUSTER] == 1
        assert after[ENDPOINT] - before[ENDPOINT] == 1
        assert await answers(listen, "B")

        # -- 4. a route config Envoy rejects: NACK recorded, old config keeps serving ---
        before = sent_counts(registry, node_id)
        bad = snapshot(cluster(connect_timeout_s=3), endpoints(b.port), listener(listen),
                       routes("bad", bad_regex=True))
        cache.set(node_id, bad)

        def nacked() -> bool:
            status = registry.get(node_id)
            nack = status.type(ROUTE).last_nack if status else None
            return nack is not None and nack.version == bad.version(ROUTE)

        await eventually(nacked, "the RDS NACK")
        status = registry.get(node_id)
        assert status is not None
        nack = status.type(ROUTE).last_nack
        assert nack is not None
        assert "missing )" in nack.error, nack.error  # RE2's own words, via Envoy
        assert status.type(ROUTE).rejecting
        assert not synced(registry, cache, node_id)
        [entry] = registry.to_json(cache)
        assert entry["last_nack"]["type"] == "routes"
        assert entry["last_nack"]["error"] == nack.error
        assert entry["synced"] is False
        for _ in range(5):  # the previous routes keep serving
            assert await answers(listen, "B", "v1")
        # Another type changing must not resend the rejected routes.
        bad2 = snapshot(cluster(connect_timeout_s=3), endpoints(a.port), listener(listen),
                        routes("bad", bad_regex=True))
        cache.set(node_id, bad2)
        await eventually(lambda: answers(listen, "A", "v1"), "traffic back to A")
        await asyncio.sleep(0.3)
        after = sent_counts(registry, node_id)
        assert after[ROUTE] - before[ROUTE] == 1, "the NACKed routes were resent"
        assert registry.get(node_id) is status
        assert status.type(ROUTE).nack_count == 1

        # A fixed route config is ACKed and applied.
        good = snapshot(cluster(connect_timeout_s=3), endpoints(a.port), listener(listen),
                        routes("v2"))
        cache.set(node_id, good)
        await eventually(lambda: answers(listen, "A", "v2"), "the repaired routes")
        await eventually(lambda: synced(registry, cache, node_id), "RDS ACKed after repair")
        assert not status.type(ROUTE).rejecting
        assert registry.to_json(cache)[0]["last_nack"]["version"] == bad.version(ROUTE)
        assert metrics.get_sample_value("gossamer_xds_nacks_total", {"type": "routes"}) == 1

        # -- 5. control-plane restart under traffic --------------------------------------
        with Traffic(listen) as traffic:
            await asyncio.sleep(0.2)
            await server.stop(0)
            await eventually(lambda: hooks.disconnected == [node_id], "disconnect hook")
            assert registry.get(node_id) is not None
            assert not registry.to_json(cache)[0]["connected"]
            await asyncio.sleep(0.5)  # Envoy serves on its own meanwhile
            served_while_down = traffic.ok

            cache2 = SnapshotCache()
            registry2 = ProxyRegistry()
            hooks2 = Hooks(cache2, snapshot_on_connect=good)
            server2 = XdsServer(cache2, hooks2, registry2)
            servers.append(server2)
            assert await server2.start("127.0.0.1", xds_port) == xds_port
            await eventually(lambda: synced(registry2, cache2, node_id),
                             "the proxy to reconnect and be in sync", timeout=20)
            await asyncio.sleep(0.3)
        assert traffic.failures == []
        assert traffic.ok > served_while_down > 0
        assert [n.id for n in hooks2.connected] == [node_id]
        resent = sent_counts(registry2, node_id)
        if delta:
            # initial_resource_versions told us Envoy has it all: nothing is resent.
            assert resent == {CLUSTER: 0, ENDPOINT: 0, LISTENER: 0, ROUTE: 0}
        else:
            # SotW: wildcard types are skipped by version; named types are resent,
            # since we cannot know which names the old stream delivered.
            assert resent[CLUSTER] == 0
            assert resent[LISTENER] == 0
        assert await answers(listen, "A", "v2")
    finally:
        for s in servers:
            await s.stop(0)


def test_envoy_process_reports_a_bad_bootstrap() -> None:
    proc = EnvoyProcess({"static_resources": {"clusters": [{"name": "x", "type": "NOPE"}]}})
    with pytest.raises(EnvoyError, match="exited with code"):
        proc.start(timeout=15)
    assert not proc.running()


def test_envoy_process_context_manager_cleans_up() -> None:
    bootstrap = ads_bootstrap("static", free_port())
    bootstrap.pop("dynamic_resources")  # nothing to wait for: LIVE at once
    with EnvoyProcess(bootstrap) as proc:
        proc.wait_ready(timeout=15)
        assert proc.stats()["server.state"] == 0  # 0 = LIVE
        pid = proc.pid
        assert pid is not None
        assert proc.config_dump()["configs"]
    assert not proc.running()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
