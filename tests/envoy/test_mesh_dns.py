"""Mesh DNS through a real Envoy: a capturing sidecar's `dns` listener answers the
mesh's names with the Services' virtual IPs (from the control plane's allocator)
and forwards every other name to the host's resolver."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from gossamer.agent.bootstrap import NodeSpec, bootstrap
from gossamer.controlplane.server import ControlPlane, ControlPlaneOptions
from gossamer.testing.envoy import EnvoyProcess, free_port
from tests.dnswire import AAAA, NOERROR, Responder, resolve
from tests.envoy.harness import wait_for

pytestmark = pytest.mark.slow
API = "mesh.gossamer.dev/v1alpha1"
UPSTREAM_ANSWER = "198.18.77.77"


@pytest.fixture
async def plane() -> AsyncIterator[ControlPlane]:
    cp = ControlPlane(ControlPlaneOptions(state_dir=None, xds_port=0, api_port=0,
                                          debounce=0.01, secure=False,
                                          vip_range="240.241.0.0/24"))
    await cp.start()
    try:
        yield cp
    finally:
        await cp.stop()


@pytest.fixture
def upstream() -> Iterator[Responder]:
    resolver = Responder("127.0.0.1", 0, UPSTREAM_ANSWER)
    try:
        yield resolver
    finally:
        resolver.close()


async def apply(cp: ControlPlane, *docs: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{cp.api_port}", trust_env=False,
                                 timeout=10) as api:
        for doc in docs:
            resp = await api.post("/api/v1/apply", json=doc)
            assert resp.status_code == 200, resp.text


async def virtual_ip(cp: ControlPlane, ns: str, name: str) -> str:
    found: dict[str, str] = {}

    async def allocated() -> bool:
        async with httpx.AsyncClient(trust_env=False, timeout=10) as api:
            doc = (await api.get(f"http://127.0.0.1:{cp.api_port}/api/v1/resources/Service/"
                                 f"{ns}/{name}")).json()
        found["ip"] = doc.get("status", {}).get("virtualIP", "")
        return bool(found["ip"])

    await wait_for(allocated, f"a virtual IP for {ns}/{name}")
    return found["ip"]


def service(name: str, ns: str = "default", port: int = 80, protocol: str = "http"
            ) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"ports": [{"port": port, "protocol": protocol}]}}


async def test_the_sidecar_answers_mesh_names_and_forwards_the_rest(
        plane: ControlPlane, upstream: Responder,
        envoys: Callable[[dict[str, Any]], EnvoyProcess]) -> None:
    await apply(plane, service("catalog"), service("db", "data", 5432, "tcp"),
                {"apiVersion": API, "kind": "Mesh", "metadata": {"name": "default"},
                 "spec": {"dnsDomain": "corp"}})
    catalog, db = await virtual_ip(plane, "default", "catalog"), await virtual_ip(
        plane, "data", "db")
    dns_port = free_port()
    node = NodeSpec(node_id="app-0.default", service="app", namespace="default",
                    workload="app-0", inbound_port=0, inbound_address="127.0.0.1",
                    app_port=0, app_protocol=None, outbound_port=free_port(),
                    admin_port=free_port(), capture=True, capture_port=free_port(),
                    dns_port=dns_port, dns_resolvers=(f"127.0.0.1:{upstream.port}",))
    envoy = envoys(bootstrap(node, "127.0.0.1", plane.xds_port))
    await asyncio.to_thread(envoy.start)
    await envoy.await_ready()
    server = ("127.0.0.1", dns_port)

    async def ask(name: str, qtype: int = 1) -> tuple[int, list[str]]:
        return await asyncio.to_thread(resolve, server, name, qtype)

    assert await ask("catalog") == (NOERROR, [catalog])
    for name in ("catalog.default", "catalog.default.svc.cluster.local", "catalog.default.corp"):
        assert await ask(name) == (NOERROR, [catalog]), name
    assert await ask("db.data.svc") == (NOERROR, [db])
    assert await ask("db.data.corp") == (NOERROR, [db])
    assert upstream.asked == []  # all of those from the table
    # No IPv6 address for a Service; the table answers that itself.
    assert (await ask("catalog", AAAA))[1] == []
    # Not mesh names: a bare name of another namespace, the default domain (the Mesh
    # set another), a name outside the mesh. Forwarded to the host's resolver.
    for name in ("db", "catalog.default.mesh", "www.example.org"):
        assert await ask(name) == (NOERROR, [UPSTREAM_ANSWER]), name
    assert upstream.asked == ["db", "catalog.default.mesh", "www.example.org"]
    # A new Service is resolvable once the control plane has given it an address.
    await apply(plane, service("late"))
    late = await virtual_ip(plane, "default", "late")

    async def resolvable() -> bool:
        return await ask("late.default") == (NOERROR, [late])

    await wait_for(resolvable, "the new Service's name")
