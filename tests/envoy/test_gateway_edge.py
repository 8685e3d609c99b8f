"""Policies at the edge against a real gateway Envoy: a node with metadata `gateway`
(as `gossamer gateway` runs it) in the MiniMesh, serving a Gateway's HTTP listener on
loopback in front of a Service's sidecar. Clients are told apart by `X-Forwarded-For`,
which the Gateway trusts for one hop (`xff-num-trusted-hops: "1"`). Rate limits and faults
that target the Gateway, its request body limit, and a route's CORS filter."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gossamer.agent.bootstrap import bootstrap
from gossamer.contract.node import NodeMetadata
from gossamer.model.gateway import XFF_HOPS
from gossamer.testing.envoy import EnvoyProcess, free_port
from tests.envoy.harness import API, Backend, MiniMesh, wait_for
from tests.gateway_docs import GW, gateway, http_route, parent

pytestmark = pytest.mark.slow
HOST = "shop.example.com"
# The client the set-up checks the listener with (it spends no other client's quota).
WARMUP = "198.18.0.250"


class GatewayProxy:
    """One replica of Gateway `name`: an Envoy from the agent's bootstrap, no app."""

    def __init__(self, mini: MiniMesh, make: Callable[[dict[str, Any]], EnvoyProcess],
                 name: str = "edge", namespace: str = "default") -> None:
        self.workload = f"{name}-0"
        self.node = NodeMetadata(
            node_id=f"{self.workload}.{namespace}", service=name, namespace=namespace,
            workload=self.workload, inbound_port=0, inbound_address="127.0.0.1",
            app_port=0, app_protocol=None, outbound_port=free_port(), admin_port=free_port(),
            gateway=name)
        self.envoy = make(bootstrap(self.node, "127.0.0.1", mini.plane.xds_port))
        mini.sidecars.append(self)  # type: ignore[arg-type]

    async def start(self) -> None:
        await asyncio.to_thread(self.envoy.start)
        await self.envoy.await_ready()


async def edge(mini: MiniMesh, make: Callable[[dict[str, Any]], EnvoyProcess],
               backend: Backend, *policies: dict[str, Any],
               annotations: dict[str, str] | None = None, **rule: Any) -> int:
    """Service `echo` behind `backend`, a Gateway `edge` with one HTTP listener routing
    HOST to it, `policies`, and a running replica; the listener's port."""
    port = free_port()
    await mini.serve("echo", [backend])
    await mini.apply(
        gateway(listeners=[{"name": "http", "port": port, "protocol": "HTTP"}],
                annotations={XFF_HOPS: "1", **(annotations or {})}),
        http_route("shop", [parent("http")], [HOST], [("echo", 1)], **rule), *policies)
    proxy = GatewayProxy(mini, make)
    await proxy.start()
    await mini.wait_synced()

    async def up() -> bool:
        try:
            return (await send(port, 1, WARMUP))[0] == 200
        except httpx.TransportError:
            return False

    await wait_for(up, "the gateway's listener answers")
    backend.reset()
    return port


async def send(port: int, count: int, client_ip: str, method: str = "GET",
               body: bytes | None = None) -> list[int]:
    """`count` requests through the gateway, as if from `client_ip`: status codes."""
    headers = {"Host": HOST, "X-Forwarded-For": client_ip}
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        return [(await http.request(method, f"http://127.0.0.1:{port}/", headers=headers,
                                    content=body)).status_code for _ in range(count)]


def edge_policy(kind: str, spec: dict[str, Any], name: str = "edge-policy") -> dict[str, Any]:
    return {"apiVersion": API, "kind": kind, "metadata": {"name": name},
            "spec": {"targetRef": {"group": GW, "kind": "Gateway", "name": "edge"}, **spec}}


async def test_gateway_routes_to_the_service(
        mini: MiniMesh, envoys: Callable[[dict[str, Any]], EnvoyProcess],
        make_backend: Callable[[str], Backend]) -> None:
    backend = make_backend("A")
    port = await edge(mini, envoys, backend)
    assert await send(port, 3, "198.18.0.1") == [200] * 3
    assert backend.hits == 3


async def test_global_limit_per_client_ip_counts_the_xff_client(
        mini: MiniMesh, envoys: Callable[[dict[str, Any]], EnvoyProcess],
        make_backend: Callable[[str], Backend]) -> None:
    backend = make_backend("A")
    # An hour's window: a short burst does not straddle two windows.
    port = await edge(mini, envoys, backend, edge_policy("RateLimitPolicy", {"global": {
        "rules": [{"key": {"type": "clientIP"}, "requests": 3, "per": "1h"}]}}))
    assert await send(port, 5, "198.18.0.1") == [200] * 3 + [429] * 2
    # Another client, on the same connection peer (loopback): its own counter.
    assert await send(port, 3, "198.18.0.2") == [200] * 3
    assert backend.hits == 6


async def test_local_limit_is_one_bucket_per_replica(
        mini: MiniMesh, envoys: Callable[[dict[str, Any]], EnvoyProcess],
        make_backend: Callable[[str], Backend]) -> None:
    backend = make_backend("A")
    # The set-up's request takes a token too: 1 + 2 pass, whoever sends them.
    port = await edge(mini, envoys, backend, edge_policy("RateLimitPolicy", {
        "local": {"requests": 3, "per": "1h"}}))
    assert await send(port, 2, "198.18.0.1") + await send(port, 2, "198.18.0.2") == [
        200, 200, 429, 429]
    assert backend.hits == 2


async def test_fault_abort_at_the_gateway_answers_every_request(
        mini: MiniMesh, envoys: Callable[[dict[str, Any]], EnvoyProcess],
        make_backend: Callable[[str], Backend]) -> None:
    backend = make_backend("A")
    port = await edge(mini, envoys, backend)
    await mini.apply(edge_policy("FaultPolicy", {"abort": {"httpStatus": 503,
                                                           "percent": 100}}))

    async def aborted() -> bool:
        return (await send(port, 1, "198.18.0.1"))[0] == 503

    await wait_for(aborted, "the fault reaches the gateway")
    before = backend.hits  # the requests sent before the fault was in place got through
    assert await send(port, 20, "198.18.0.1") == [503] * 20
    assert backend.hits == before


async def test_request_body_over_the_limit_gets_413(
        mini: MiniMesh, envoys: Callable[[dict[str, Any]], EnvoyProcess],
        make_backend: Callable[[str], Backend]) -> None:
    backend = make_backend("A")
    port = await edge(mini, envoys, backend,
                      annotations={"gateway.gossamer.dev/max-request-body-kb": "1"})
    assert await send(port, 1, "198.18.0.1", "POST", b"x" * 1024) == [200]
    assert await send(port, 1, "198.18.0.1", "POST", b"x" * 1025) == [413]
    assert backend.hits == 1


async def test_a_routes_cors_filter_answers_preflights_at_the_gateway(
        mini: MiniMesh, envoys: Callable[[dict[str, Any]], EnvoyProcess],
        make_backend: Callable[[str], Backend]) -> None:
    backend = make_backend("A")
    port = await edge(mini, envoys, backend, filters=[{"type": "CORS", "cors": {
        "allowOrigins": ["https://shop.example"], "allowMethods": ["GET", "PUT"]}}])
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        pre = await http.options(f"http://127.0.0.1:{port}/", headers={
            "Host": HOST, "Origin": "https://shop.example",
            "Access-Control-Request-Method": "PUT"})
        allowed = await http.get(f"http://127.0.0.1:{port}/", headers={
            "Host": HOST, "Origin": "https://shop.example"})
        other = await http.get(f"http://127.0.0.1:{port}/", headers={
            "Host": HOST, "Origin": "https://evil.example"})
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == "https://shop.example"
    assert "PUT" in pre.headers["access-control-allow-methods"]
    assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
    assert other.status_code == 200
    assert "access-control-allow-origin" not in other.headers
    # The preflight was answered at the gateway.
    assert backend.hits == 2
