"""The test harness itself: two instances share traffic, knobs misbehave as told."""

from __future__ import annotations

from typing import Any

import pytest

from tests.envoy.harness import MiniMesh, get, proxy_client

pytestmark = pytest.mark.slow


async def test_two_instances_share_traffic_and_knobs_work(mini: MiniMesh,
                                                          make_backend: Any) -> None:
    a, b = make_backend("A"), make_backend("B")
    await mini.serve("echo", [a, b])
    client = await mini.client()
    await mini.wait_synced()
    async with proxy_client(client) as http:
        bodies = [(await get(client, http=http)).text for _ in range(20)]
        assert set(bodies) == {"A", "B"}
        resp = await get(client, http=http, headers={"x-test-status": "418"})
        assert resp.status_code == 418
        a.fail = b.fail = 2
        codes = [(await get(client, http=http)).status_code for _ in range(4)]
        assert codes.count(503) == 4
    assert a.hits + b.hits == 25
