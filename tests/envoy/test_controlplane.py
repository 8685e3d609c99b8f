"""The real control plane driving real sidecar Envoys, in both ADS variants.

The control plane runs in the test's event loop (memory store, ephemeral
ports); each sidecar is an Envoy started from the agent's own bootstrap, so
these tests cover translation, the xDS server and the bootstrap together.
They test plumbing (xDS variants, NACKs, EDS-only pushes) with security off
(`secure=False`); the zero-trust mesh is covered by tests/e2e/test_security.py.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.type.matcher.v3 import regex_pb2

from gossamer.agent.bootstrap import bootstrap
from gossamer.cli.run import DRAIN_NOTE
from gossamer.contract.node import NodeMetadata, Upstream
from gossamer.contract.protocol import Protocol
from gossamer.controlplane.server import ControlPlane, ControlPlaneOptions
from gossamer.testing.envoy import EnvoyProcess, free_port
from gossamer.xds.types import ROUTE, Snapshot, XdsResource
from tests.envoy.conftest import Backend

pytestmark = pytest.mark.slow


@pytest.fixture
async def cp() -> AsyncIterator[ControlPlane]:
    plane = ControlPlane(ControlPlaneOptions(state_dir=None, xds_port=0, api_port=0,
                                             debounce=0.01, secure=False))
    await plane.start()
    try:
        yield plane
    finally:
        await plane.stop()


class Sidecar:
    def __init__(self, plane: ControlPlane, service: str, *, delta: bool, app_port: int = 0,
                 make: Callable[[dict[str, Any]], EnvoyProcess], protocol: str = "http",
                 upstreams: tuple[dict[str, Any], ...] = ()) -> None:
        self.inbound = free_port() if app_port else 0
        self.outbound = free_port()
        self.node = NodeMetadata(
            node_id=f"{service}-0.default", service=service, namespace="default",
            workload=f"{service}-0", inbound_port=self.inbound, inbound_address="127.0.0.1",
            app_port=app_port, app_protocol=Protocol(protocol), outbound_port=self.outbound,
            admin_port=free_port(), upstreams=tuple(Upstream(**u) for u in upstreams))
        self.envoy = make(bootstrap(self.node, "127.0.0.1", plane.xds_port, delta=delta))


async def _api(plane: ControlPlane, method: str, path: str, body: Any = None) -> Any:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{plane.api_port}",
                                 trust_env=False, timeout=5) as client:
        resp = await client.request(method, path, json=body)
        assert resp.status_code < 300, resp.text
        return resp.json()


async def _wait(predicate: Callable[[], Any], what: str, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def _synced(plane: ControlPlane, n: int) -> bool:
    proxies = await _api(plane, "GET", "/api/v1/proxies")
    return len(proxies) == n and all(p["connected"] and p["synced"] for p in proxies)


def _docs(inbound: int) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Service",
         "metadata": {"name": "echo"}, "spec": {"ports": [{"port": 80}]}},
        {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Workload",
         "metadata": {"name": "echo-0"},
         "spec": {"service": "echo", "address": "127.0.0.1", "port": inbound}},
    ]


async def _start_pair(cp: ControlPlane, envoys: Callable[[dict[str, Any]], EnvoyProcess],
                      backend: Backend, delta: bool) -> tuple[Sidecar, Sidecar]:
    server = Sidecar(cp, "echo", delta=delta, app_port=backend.port, make=envoys)
    client = Sidecar(cp, "client", delta=delta, make=envoys)
    for doc in _docs(server.inbound):
        await _api(cp, "POST", "/api/v1/apply", doc)
    for side in (server, client):
        await asyncio.to_thread(side.envoy.start)
        await side.envoy.await_ready()
    await _wait(lambda: _synced(cp, 2), "both proxies in sync")
    return server, client


async def _get(client: Sidecar, url: str = "http://echo/") -> httpx.Response:
    async with httpx.AsyncClient(proxy=f"http://127.0.0.1:{client.outbound}",
                                 trust_env=False, timeout=5) as http:
        return await http.get(url)


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_request_crosses_two_sidecars(cp: ControlPlane, envoys: Any,
                                            backends: tuple[Backend, Backend],
                                            delta: bool) -> None:
    _, client = await _start_pair(cp, envoys, backends[0], delta)
    resp = await _get(client)
    assert resp.status_code == 200
    assert resp.text == "A"
    assert backends[0].hits == 1
    proxies = await _api(cp, "GET", "/api/v1/proxies")
    assert {p["stream"] for p in proxies} == {"delta" if delta else "sotw"}


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_endpoint_change_pushes_only_eds(cp: ControlPlane, envoys: Any,
                                               backends: tuple[Backend, Backend],
                                               delta: bool) -> None:
    _, client = await _start_pair(cp, envoys, backends[0], delta)
    before = await client.envoy.astats()
    await _api(cp, "POST", "/api/v1/workloads/default/echo-0/heartbeat",
               {"health": "Unhealthy"})
    await _wait(lambda: _synced(cp, 2), "sync after the endpoint change")
    resp = await _get(client)
    assert resp.status_code == 503  # no healthy instance left
    after = await client.envoy.astats()
    for stat in ("cluster_manager.cds.update_success", "listener_manager.lds.update_success"):
        assert after[stat] == before[stat], stat
    eds = "cluster.outbound|80||echo.default.update_success"
    assert after[eds] > before[eds]


def _bad_routes() -> XdsResource:
    rc = route_pb2.RouteConfiguration(name="outbound", virtual_hosts=[
        route_components_pb2.VirtualHost(name="broken", domains=["*"], routes=[
            route_components_pb2.Route(
                match=route_components_pb2.RouteMatch(
                    safe_regex=regex_pb2.RegexMatcher(regex="(unclosed")),
                route=route_components_pb2.RouteAction(cluster="x"))])])
    return XdsResource.from_message(ROUTE, "outbound", rc)


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_nack_keeps_last_good_config_and_check_reports_it(
        cp: ControlPlane, envoys: Any, backends: tuple[Backend, Backend], delta: bool) -> None:
    _, client = await _start_pair(cp, envoys, backends[0], delta)
    node = client.node.node_id
    good = cp.cache.get(node)
    assert good is not None
    # Simulate a translation bug: publish a route config Envoy must reject.
    bad = Snapshot.build({**good.resources, ROUTE: {**good.of(ROUTE), "outbound": _bad_routes()}})
    cp.cache.set(node, bad)

    async def nacked() -> bool:
        proxies = await _api(cp, "GET", "/api/v1/proxies")
        return any(p["node_id"] == node and p["last_nack"] for p in proxies)

    await _wait(nacked, "the NACK to be recorded")
    resp = await _get(client)
    assert (resp.status_code, resp.text) == (200, "A")  # still on the last good config
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gossamer", "check", "--server",
        f"http://127.0.0.1:{cp.api_port}", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    line = next(x for x in out.decode().splitlines() if node in x)
    assert "NOT in sync" in line
    assert "last NACK" in line
    assert "missing ): (unclosed" in line  # Envoy's own error text
    assert out.decode().splitlines()[-1] == DRAIN_NOTE  # what "in sync" does not mean
    assert err.decode().startswith("error: 1 proxy")
    # The next real change is translated afresh and ACKed.
    await _api(cp, "POST", "/api/v1/apply", {
        "apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Service",
        "metadata": {"name": "other"}, "spec": {"ports": [{"port": 80}]}})
    await _wait(lambda: _synced(cp, 2), "sync after a good config")
    assert (await _get(client)).text == "A"


async def _check(plane: ControlPlane) -> tuple[int | None, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gossamer", "check", "--server",
        f"http://127.0.0.1:{plane.api_port}", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_check_fails_for_a_lost_proxy_until_its_workload_is_deregistered(
        cp: ControlPlane, envoys: Any, backends: tuple[Backend, Backend]) -> None:
    """A sidecar whose Workload still names it but which is not connected is a problem
    (its workload is an endpoint with no config); once deregistered, as an agent that
    stops does, it is listed for the record and no longer counted."""
    server, _ = await _start_pair(cp, envoys, backends[0], delta=True)
    node = server.node.node_id
    doc = _docs(server.inbound)[1]
    doc["spec"]["proxy"] = node  # as the agent registers it
    await _api(cp, "POST", "/api/v1/apply", doc)
    await _wait(lambda: _synced(cp, 2), "both proxies in sync")
    code, out, err = await _check(cp)
    assert code == 0, out + err
    await asyncio.to_thread(server.envoy.stop)

    async def gone() -> bool:
        proxies = await _api(cp, "GET", "/api/v1/proxies")
        return any(p["node_id"] == node and not p["connected"] for p in proxies)

    await _wait(gone, "the proxy to disconnect")
    await _wait(lambda: _registered(cp, node), "the index to have the registration")
    code, out, err = await _check(cp)
    assert code == 1, out + err
    assert f"proxy {node}: DISCONNECTED, NOT in sync" in out.splitlines()
    assert err.startswith("error: 1 proxy")
    await _api(cp, "DELETE", "/api/v1/resources/Workload/default/echo-0")
    await _wait(lambda: _registered(cp, node, False), "the deregistration")
    code, out, err = await _check(cp)
    assert code == 0, out + err
    assert f"proxy {node}: DISCONNECTED, NOT in sync" in out.splitlines()  # still listed


async def _registered(plane: ControlPlane, node: str, want: bool = True) -> bool:
    proxies = await _api(plane, "GET", "/api/v1/proxies")
    return any(p["node_id"] == node and p["registered"] is want for p in proxies)
