"""Route and policy changes under load fail no request: clusters and routes are updated
in place, and connections are drained, not cut."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from tests.envoy.harness import API, MiniMesh, get, proxy_client

pytestmark = pytest.mark.slow


def _route(weights: tuple[int, int]) -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "echo"},
            "spec": {"parentRefs": [{"kind": "Service", "name": "echo", "port": 80}],
                     "rules": [{"backendRefs": [
                         {"kind": "Service", "name": "echo-v1", "port": 80,
                          "weight": weights[0]},
                         {"kind": "Service", "name": "echo-v2", "port": 80,
                          "weight": weights[1]}]}]}}


def _policy(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "ResiliencePolicy", "metadata": {"name": name},
            "spec": {"targetRef": {"kind": "Service", "name": name}, **spec}}


# Changes the callee sidecars' inbound listener: its filter chain is replaced, and
# connections on the old one drain.
DENY_ADMIN = {"apiVersion": API, "kind": "AuthorizationPolicy", "metadata": {"name": "no-admin"},
              "spec": {"targetRef": {"kind": "Service", "name": "echo-v1"}, "action": "DENY",
                       "rules": [{"to": [{"operation": {"paths": ["/admin/*"]}}]}]}}

CHANGES: list[dict[str, Any]] = [
    _route((90, 10)),
    DENY_ADMIN,
    _policy("echo-v1", timeouts={"request": "5s", "connect": "1s"},
            loadBalancer={"policy": "LeastRequest"}),
    _policy("echo-v2", retries={"attempts": 3, "retryOn": ["5xx"]},
            circuitBreaker={"maxRequests": 500, "maxConnections": 500}),
    _route((50, 50)),
    _policy("echo-v1", outlierDetection={"consecutive5xx": 5},
            loadBalancer={"policy": "RingHash", "hashOn": {"header": "x-user"}}),
    _policy("echo-v2", healthCheck={"http": {"path": "/healthz"}, "interval": "1s"},
            loadBalancer={"policy": "Random"}),
    _route((0, 100)),
    _policy("echo-v1", loadBalancer={"policy": "RoundRobin", "slowStart": {"window": "1s"}}),
    _route((100, 0)),
]


async def test_route_and_policy_changes_under_load_fail_no_request(
        mini: MiniMesh, make_backend: Any) -> None:
    v1 = [make_backend("v1-a"), make_backend("v1-b")]
    v2 = [make_backend("v2-a"), make_backend("v2-b")]
    await mini.serve("echo-v1", v1)
    await mini.serve("echo-v2", v2)
    await mini.apply({"apiVersion": API, "kind": "Service", "metadata": {"name": "echo"},
                      "spec": {"ports": [{"port": 80}]}})
    await mini.apply(_route((100, 0)))
    client = await mini.client()
    await mini.wait_synced()
    outcomes: Counter[str] = Counter()
    stop = asyncio.Event()

    async def load(worker: int) -> None:
        async with proxy_client(client) as http:
            for i in range(5000):  # bounded in count, and by `stop` in time
                if stop.is_set():
                    return
                resp = await get(client, headers={"x-user": f"u{worker}-{i % 7}"}, http=http)
                outcomes[str(resp.status_code) if resp.status_code != 200 else resp.text] += 1

    workers = [asyncio.create_task(load(w)) for w in range(4)]
    try:
        for change in CHANGES:
            await asyncio.sleep(0.4)
            await mini.apply(change)
            await mini.wait_synced()
        await mini.delete("AuthorizationPolicy", "no-admin")
        await mini.wait_synced()
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.gather(*workers)
    failures = {k: n for k, n in outcomes.items() if not k.startswith("v")}
    assert failures == {}, outcomes
    assert sum(outcomes.values()) >= 200, outcomes
    assert outcomes["v2-a"] + outcomes["v2-b"] > 0  # the splits really changed traffic
    stats = await client.stats()
    assert stats["cluster_manager.cds.update_success"] >= 5  # clusters were replaced
    callee = mini.sidecars[0]
    assert (await callee.stats())["listener_manager.lds.update_success"] >= 3  # and listeners
