"""A ResiliencePolicy reaching real sidecars: retries on 5xx only once applied."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gossamer.controlplane.server import ControlPlane
from tests.envoy.conftest import Backend
from tests.envoy.test_controlplane import _api, _get, _start_pair, cp  # noqa: F401

pytestmark = pytest.mark.slow


POLICY = {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "ResiliencePolicy",
          "metadata": {"name": "echo"},
          "spec": {"targetRef": {"kind": "Service", "name": "echo"},
                   "retries": {"attempts": 2, "retryOn": ["5xx"],
                               "backoff": {"baseInterval": "10ms"}},
                   "circuitBreaker": {"maxRequests": 100}}}


async def test_policy_retries_5xx_that_the_default_does_not(cp: ControlPlane,  # noqa: F811
                                                            envoys: Any) -> None:
    flaky = Backend("A")
    try:
        _, client = await _start_pair(cp, envoys, flaky, delta=True)
        flaky.fail = 1
        resp = await _get(client)
        assert resp.status_code == 503  # the default never retries an app's answer
        await _api(cp, "POST", "/api/v1/apply", POLICY)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while True:
            flaky.fail, flaky.hits = 1, 0
            resp = await _get(client)
            if resp.status_code == 200:
                break
            assert loop.time() < deadline, "the policy never reached the client sidecar"
            await asyncio.sleep(0.1)
        assert resp.text == "A"
        assert flaky.hits == 2  # the 503, then the retry
        stats = await client.envoy.astats()
        assert stats["cluster.outbound|80||echo.default.upstream_rq_retry"] >= 1
    finally:
        flaky.close()
