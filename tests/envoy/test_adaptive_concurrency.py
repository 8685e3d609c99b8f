"""Adaptive concurrency reaching a real sidecar: the target's inbound sidecar sheds
load with 503 when its app's latency climbs, and lets traffic through again once
latency is back to normal.

The policy pins the ideal latency (`minRtt: 100ms`) and recalculates the limit every
100 ms, so each phase takes about two seconds; the bounds are generous because a
2-core machine shared with other work makes latency noisy, and a "normal" phase is
measured again (up to three times) when a stall made it shed.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.envoy.harness import API, Backend, MiniMesh, Sidecar, proxy_client

pytestmark = pytest.mark.slow

BLOCKED = "http.inbound.adaptive_concurrency.gradient_controller.rq_blocked"
LIMIT = "http.inbound.adaptive_concurrency.gradient_controller.concurrency_limit"
WORKERS = 8
POLICY = {"apiVersion": API, "kind": "ResiliencePolicy", "metadata": {"name": "echo"},
          "spec": {"targetRef": {"kind": "Service", "name": "echo"},
                   "adaptiveConcurrency": {
                       "minRtt": "100ms",
                       "concurrencyLimitParams": {"concurrencyUpdateInterval": "100ms",
                                                  "maxConcurrencyLimit": 10}}}}


async def _load(http: httpx.AsyncClient, seconds: float) -> Counter[int]:
    """WORKERS callers in a loop for `seconds` (at most 2000 requests each); a caller
    that was shed waits 20 ms before trying again."""
    codes: Counter[int] = Counter()
    stop = time.monotonic() + seconds

    async def worker() -> None:
        for _ in range(2000):
            if time.monotonic() >= stop:
                return
            status = (await http.get("http://echo/")).status_code
            codes[status] += 1
            if status != 200:
                await asyncio.sleep(0.02)

    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    return codes


async def _settled(http: httpx.AsyncClient) -> Counter[int]:
    """Two-second phases until one sheds at most 5 % (at most three). A stall of this
    shared machine raises every latency, and the controller rightly sheds during it;
    a limit that never comes back sheds in all three."""
    codes: Counter[int] = Counter()
    for _ in range(3):
        codes = await _load(http, 2.0)
        if codes[200] >= 20 and codes[503] <= 0.05 * sum(codes.values()):
            break
    return codes


async def _blocked(side: Sidecar) -> int:
    return (await side.stats()).get(BLOCKED, 0)


async def test_sheds_load_when_latency_climbs_and_recovers(mini: MiniMesh,
                                                           make_backend: Any) -> None:
    backend: Backend = make_backend("A")
    backend.capacity, backend.delay = 4, 0.01
    await mini.apply(POLICY)
    (server,) = await mini.serve("echo", [backend])
    client = await mini.client()
    await mini.wait_synced()
    stats = await server.stats()
    assert stats[LIMIT] >= 1, "no adaptive concurrency filter on the inbound side"

    async with proxy_client(client) as http:
        await _load(http, 1.5)  # the limit starts low (3) and grows with fast replies
        normal = await _settled(http)
        assert normal[200] >= 20, normal
        assert normal[503] <= 0.05 * sum(normal.values()), normal
        blocked_before, hits_before = await _blocked(server), backend.hits

        backend.delay = 0.6  # the app slows down: the limit falls, the rest is shed
        slow = await _load(http, 4.0)
        shed = await _blocked(server) - blocked_before
        assert slow[503] >= 10, (slow, await server.stats())
        assert shed >= slow[503], (shed, slow)
        assert set(slow) <= {200, 503}, slow
        # The app never saw the shed requests, and callers' default retries left them.
        assert backend.hits - hits_before == slow[200], (backend.hits - hits_before, slow)
        assert (await client.stats()).get(
            "cluster.outbound|80||echo.default.upstream_rq_retry", 0) == 0

        backend.delay = 0.01  # back to normal: the limit climbs again
        await _load(http, 2.0)
        recovered = await _settled(http)
        assert recovered[200] >= 20, recovered
        assert recovered[503] <= 0.05 * sum(recovered.values()), (recovered,
                                                                   await server.stats())
