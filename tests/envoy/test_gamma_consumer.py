"""GAMMA consumer routes (conformance test MeshConsumerRoute) on real sidecars.

`echo` (answered by echo-v1) and `echo-v2` live in `default`, with a producer route
there on `echo`. A consumer route in namespace `consumer` on `echo` sends to echo-v2
and sets X-Header-Set. A caller in `consumer` follows the consumer route (and not
the producer's: consumer routes replace them); a caller in `other` follows the
producer route. Both through the outbound listener (by Host) and a dedicated
upstream listener, with the outbound routes by VHDS and by RDS on a delta stream."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gossamer.testing.envoy import free_port
from tests.envoy.harness import Backend, MiniMesh, Sidecar, get, wait_for

pytestmark = pytest.mark.slow

GATEWAY = "gateway.networking.k8s.io/v1"
API = "mesh.gossamer.dev/v1alpha1"
URL = "http://echo.default/"


def _route(name: str, namespace: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": GATEWAY, "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"parentRefs": [{"kind": "Service", "name": "echo",
                                     "namespace": "default"}], "rules": rules}}


def _response_header(name: str, value: str) -> list[dict[str, Any]]:
    return [{"type": "ResponseHeaderModifier",
             "responseHeaderModifier": {"set": [{"name": name, "value": value}]}}]


PRODUCER = _route("echo-producer", "default", [{
    "backendRefs": [{"name": "echo-v1", "port": 80}],
    "filters": _response_header("X-Route", "producer")}])
CONSUMER = _route("echo-consumer", "consumer", [{
    "backendRefs": [{"name": "echo-v2", "namespace": "default", "port": 80}],
    "filters": _response_header("X-Header-Set", "set")}])


def _followed(resp: httpx.Response) -> tuple[int, str, str | None, str | None]:
    return (resp.status_code, resp.text, resp.headers.get("x-header-set"),
            resp.headers.get("x-route"))


AS_CONSUMER = (200, "echo-v2", "set", None)
AS_PRODUCER = (200, "echo-v1", None, "producer")


async def _callers(mini: MiniMesh, make_backend: Callable[[str], Backend],
                   vhds: bool) -> dict[str, tuple[Sidecar, int]]:
    """Each caller's sidecar and its dedicated listener's port for echo.default:80."""
    v1 = make_backend("echo-v1")
    await mini.serve("echo", [v1])
    await mini.serve("echo-v1", [v1])
    await mini.serve("echo-v2", [make_backend("echo-v2")])
    out = {}
    for ns in ("consumer", "other"):
        port = free_port()
        side = await mini.client(namespace=ns, vhds=vhds, upstreams=(
            {"service": "echo", "namespace": "default", "port": 80, "local_port": port},))
        out[ns] = side, port
    await mini.wait_synced()
    return out


async def _upstream(port: int) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        return await http.get(f"http://127.0.0.1:{port}/")


@pytest.mark.parametrize("vhds", [True, False], ids=["vhds", "delta-rds"])
async def test_a_consumer_route_applies_to_its_namespaces_callers_only(
        mini: MiniMesh, make_backend: Callable[[str], Backend], vhds: bool) -> None:
    callers = await _callers(mini, make_backend, vhds)
    assert all(side.node.vhds is vhds for side, _ in callers.values())
    await mini.apply(PRODUCER, CONSUMER)
    await mini.wait_synced()
    consumer, consumer_port = callers["consumer"]
    other, other_port = callers["other"]

    async def in_effect() -> bool:
        return _followed(await get(consumer, URL)) == AS_CONSUMER and \
            _followed(await get(other, URL)) == AS_PRODUCER
    await wait_for(in_effect, "the consumer and producer routes")
    for _ in range(5):  # every request, not a share of them
        assert _followed(await get(consumer, URL)) == AS_CONSUMER
        assert _followed(await get(other, URL)) == AS_PRODUCER
        assert _followed(await _upstream(consumer_port)) == AS_CONSUMER
        assert _followed(await _upstream(other_port)) == AS_PRODUCER
    status = await mini.api("GET", "/api/v1/resources/HTTPRoute/consumer/echo-consumer")
    accepted = [c for c in status["status"]["conditions"] if c["type"] == "Accepted"]
    assert [c["status"] for c in accepted] == ["True"], status

    # Without the consumer route, its namespace's callers follow the producer's again.
    await mini.delete("HTTPRoute", "echo-consumer", "consumer")
    await mini.wait_synced()

    async def producer_again() -> bool:
        return _followed(await get(consumer, URL)) == AS_PRODUCER and \
            _followed(await _upstream(consumer_port)) == AS_PRODUCER
    await wait_for(producer_again, "the producer route for the consumer namespace")
