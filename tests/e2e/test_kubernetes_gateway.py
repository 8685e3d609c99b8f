"""An ingress Gateway read from the cluster (the API emulator, tests/k8s_emulator.py):
the controller converts the Gateway, its HTTPRoute and the TLS Secret its listener
names; a real gateway Envoy serves HTTPS with that certificate in front of a real
sidecar; the Gateway's, its listeners' and the route's status are written back; a
rotated Secret reaches the Envoy; Secrets no Gateway names never enter the store."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gossamer.controlplane.server import ControlPlane
from gossamer.testing.envoy import EnvoyProcess, free_port
from tests.e2e.test_kubernetes_controller import (
    emulator,
    endpoint_slice,
    plane,
    pod,
    service,
    start_controller,
)
from tests.envoy import conftest as envoy_fixtures
from tests.envoy.harness import Backend, MiniMesh, Sidecar, wait_for
from tests.envoy.test_gateway_edge import GatewayProxy
from tests.gateway_docs import GW, gateway, http_route, parent, self_signed, tls_secret
from tests.k8s_emulator import KubeEmulator

pytestmark = pytest.mark.slow
envoys = envoy_fixtures.envoys
backends = envoy_fixtures.backends
__all__ = ["emulator", "plane", "start_controller"]  # fixtures, used by name
HOST = "shop.example.com"


async def _https(port: int, cert: bytes) -> str:
    """GET / over HTTPS to HOST at the gateway, trusting only `cert`: the body, or
    what failed."""
    ctx = ssl.create_default_context(cadata=cert.decode())
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=5, verify=ctx) as http:
            resp = await http.get(f"https://127.0.0.1:{port}/",
                                  extensions={"sni_hostname": HOST},
                                  headers={"Host": HOST})
            return resp.text if resp.status_code == 200 else str(resp.status_code)
    except (httpx.TransportError, ssl.SSLError) as exc:
        return type(exc).__name__


def _condition(conditions: list[dict[str, Any]] | None, kind: str) -> dict[str, Any]:
    return next((c for c in conditions or () if c["type"] == kind), {})


async def test_a_gateway_from_the_cluster_serves_https_and_reports_status(
        plane: ControlPlane, emulator: KubeEmulator, start_controller: Any,
        envoys: Callable[[dict[str, Any]], EnvoyProcess],
        backends: tuple[Backend, Backend]) -> None:
    a, _ = backends
    mesh = MiniMesh(plane, envoys)
    side = Sidecar(plane, envoys, "echo", 0, app_port=a.port)
    port = free_port()
    cert, key = self_signed(HOST)
    emulator.put(service("echo", "198.18.0.10"))
    emulator.put(pod("echo-0", "echo", side, a))
    emulator.put(endpoint_slice("echo-abc", "echo", {"echo-0": True}))
    emulator.put({**tls_secret("shop-cert", cert, key)})
    emulator.put(tls_secret("unnamed", cert, key))  # a TLS Secret no Gateway names
    emulator.put({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                  "metadata": {"name": "db-password", "namespace": "default"},
                  "data": {"password": "c2VjcmV0"}})
    edge = gateway(listeners=[{"name": "https", "port": port, "protocol": "HTTPS",
                               "hostname": HOST,
                               "tls": {"certificateRefs": [{"name": "shop-cert"}]}}],
                   namespace="default")
    emulator.put(edge)
    route = http_route("shop", [parent("https")], [HOST], [("echo", 1)])
    route["metadata"]["namespace"] = "default"
    emulator.put(route)
    run = await start_controller(plane, "cp-a")
    mesh.sidecars.append(side)
    await side.start()
    proxy = GatewayProxy(mesh, envoys)
    await proxy.start()

    async def answers(want: str, trusted: bytes) -> bool:
        return await _https(port, trusted) == want

    await wait_for(lambda: answers("A", cert), "HTTPS through the gateway to echo", 30)
    assert await plane.store.get("Secret", "default", "shop-cert") is not None
    assert await plane.store.get("Secret", "default", "unnamed") is None
    assert await plane.store.get("Secret", "default", "db-password") is None
    assert ("default", "db-password") not in run.controller.cluster.of("Secret")

    async def status_written() -> bool:
        gw = emulator.get(f"{GW}/v1", "Gateway", "default", "edge") or {}
        st = gw.get("status") or {}
        listeners = st.get("listeners") or [{}]
        rt = emulator.get(f"{GW}/v1", "HTTPRoute", "default", "shop") or {}
        parents = (rt.get("status") or {}).get("parents") or [{}]
        return (_condition(st.get("conditions"), "Accepted").get("status") == "True"
                and _condition(listeners[0].get("conditions"), "Programmed")
                .get("status") == "True"
                and listeners[0].get("attachedRoutes") == 1
                and _condition(parents[0].get("conditions"), "Accepted")
                .get("status") == "True")

    await wait_for(status_written, "Gateway, listener and route status written back", 20)
    gw = emulator.get(f"{GW}/v1", "Gateway", "default", "edge") or {}
    accepted = _condition(gw["status"]["conditions"], "Accepted")
    assert accepted["observedGeneration"] == gw["metadata"]["generation"]
    assert accepted["lastTransitionTime"]
    rt = emulator.get(f"{GW}/v1", "HTTPRoute", "default", "shop") or {}
    assert rt["status"]["parents"][0]["parentRef"]["name"] == "edge"
    assert rt["status"]["parents"][0]["controllerName"] == "gateway.gossamer.dev/controller"

    # The Secret is rotated in the cluster: the gateway serves the new certificate.
    new_cert, new_key = self_signed(HOST)
    emulator.put(tls_secret("shop-cert", new_cert, new_key))
    await wait_for(lambda: answers("A", new_cert), "the rotated certificate served", 30)
    assert await _https(port, cert) != "A"
