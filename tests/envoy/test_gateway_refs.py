"""Namespaces at the edge, through a real gateway Envoy: a route of another namespace
attaches only where the listener's `allowedRoutes` selector admits its namespace's
labels, and its backend in a third namespace gets traffic only once a ReferenceGrant
there allows it (before: 500, as the Gateway API says for an invalid backendRef)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gossamer.testing.envoy import EnvoyProcess, free_port
from tests.envoy.harness import Backend, MiniMesh, wait_for
from tests.envoy.test_gateway_edge import GatewayProxy
from tests.gateway_docs import GW, gateway, http_route, parent

pytestmark = pytest.mark.slow
HOST = "web.example.com"


def _namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name,
                                                                 "labels": labels}}


GRANT = {"apiVersion": f"{GW}/v1beta1", "kind": "ReferenceGrant",
         "metadata": {"name": "front-routes", "namespace": "default"},
         "spec": {"from": [{"group": GW, "kind": "HTTPRoute", "namespace": "front"}],
                  "to": [{"group": "", "kind": "Service", "name": "echo"}]}}


async def _status(port: int) -> tuple[int, str]:
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        resp = await http.get(f"http://127.0.0.1:{port}/", headers={"Host": HOST})
    return resp.status_code, resp.text


async def _route_parent(mini: MiniMesh) -> dict[str, tuple[str, str]]:
    doc = await mini.api("GET", "/api/v1/resources/HTTPRoute/front/web")
    [found] = doc["status"]["parents"]
    return {c["type"]: (c["status"], c["reason"]) for c in found["conditions"]}


async def test_selector_and_reference_grant_at_the_edge(
        mini: MiniMesh, envoys: Callable[[dict[str, Any]], EnvoyProcess],
        make_backend: Callable[[str], Backend]) -> None:
    backend = make_backend("echo")
    port = free_port()
    await mini.serve("echo", [backend])
    route = http_route("web", [{**parent("http"), "namespace": "shop"}], [HOST], [])
    route["metadata"]["namespace"] = "front"
    route["spec"]["rules"][0]["backendRefs"] = [
        {"name": "echo", "namespace": "default", "port": 80}]
    await mini.apply(
        _namespace("front", team="web"),
        {**gateway(listeners=[{"name": "http", "port": port, "protocol": "HTTP",
                               "allowedRoutes": {"namespaces": {
                                   "from": "Selector",
                                   "selector": {"matchLabels": {"team": "web"}}}}}]),
         "metadata": {"name": "edge", "namespace": "shop"}},
        route)
    proxy = GatewayProxy(mini, envoys, namespace="shop")
    await proxy.start()
    await mini.wait_synced()

    async def answers(status: int) -> Callable[[], Any]:
        async def check() -> bool:
            try:
                return (await _status(port))[0] == status
            except httpx.TransportError:
                return False
        return check

    # Attached (the selector admits `front`), but the backend is not granted: 500.
    await wait_for(await answers(500), "the route attached, its backend refused")
    assert await _route_parent(mini) == {"Accepted": ("True", "Accepted"),
                                         "ResolvedRefs": ("False", "RefNotPermitted")}
    assert backend.hits == 0

    await mini.apply(GRANT)
    await wait_for(await answers(200), "the ReferenceGrant in effect")
    assert await _status(port) == (200, "echo")
    assert (await _route_parent(mini))["ResolvedRefs"] == ("True", "ResolvedRefs")

    # The namespace's labels change: the listener no longer admits the route.
    await mini.apply(_namespace("front", team="ads"))
    await wait_for(await answers(404), "the route detached")
    code, body = await _status(port)
    assert (code, body) == (404, "gossamer: gateway shop/edge has no route for this host\n")
    assert (await _route_parent(mini))["Accepted"] == ("False", "NotAllowedByListeners")
