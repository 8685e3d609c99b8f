"""RateLimitPolicy against real Envoy: a local token bucket per sidecar, and a global
limit the control plane keeps for every sidecar of a Service (in memory, and in Redis
across a control-plane restart)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gossamer.controlplane.server import ControlPlane, ControlPlaneOptions
from gossamer.testing.envoy import EnvoyProcess, free_port
from tests.envoy.harness import API, MiniMesh, Sidecar, proxy_client
from tests.redis_server import RedisServer, redis_server

__all__ = ["redis_server"]

pytestmark = pytest.mark.slow


def policy(spec: dict[str, Any], name: str = "echo-limits") -> dict[str, Any]:
    return {"apiVersion": API, "kind": "RateLimitPolicy", "metadata": {"name": name},
            "spec": {"targetRef": {"kind": "Service", "name": "echo"}, **spec}}


async def at_window_start(per: float, margin: float = 0.05) -> None:
    """Sleep until just after the next multiple of `per` seconds since the epoch."""
    now = time.time()
    await asyncio.sleep(per - now % per + margin)


async def burst(client: Sidecar, count: int, headers: dict[str, str] | None = None,
                url: str = "http://echo/") -> list[httpx.Response]:
    async with proxy_client(client) as http:
        return [await http.get(url, headers=headers or {}) for _ in range(count)]


def codes(responses: list[httpx.Response]) -> list[int]:
    return [r.status_code for r in responses]


async def windowed_burst(client: Sidecar, count: int, per: float,
                         headers: dict[str, str] | None = None,
                         url: str = "http://echo/") -> list[httpx.Response]:
    """`count` requests right after a window boundary, all inside that window."""
    await at_window_start(per)
    started = time.time()
    out = await burst(client, count, headers, url)
    assert int(time.time() // per) == int(started // per), "the burst outlived its window"
    return out


async def test_local_bucket_passes_exactly_n_then_429_with_headers_then_refills(
        mini: MiniMesh, make_backend: Any) -> None:
    backend = make_backend("A")
    await mini.serve("echo", [backend])
    client = await mini.client()
    await mini.apply(policy({"local": {"requests": 3, "per": "6s"}}))
    await mini.wait_synced()
    started = time.monotonic()
    first = await burst(client, 7)
    # The bucket refills continuously, one token per 2s here: the burst must be quicker.
    assert time.monotonic() - started < 1.9, "the burst was too slow to count tokens"
    assert codes(first) == [200] * 3 + [429] * 4
    assert backend.hits == 3
    limited = first[3]
    assert limited.headers["x-ratelimit-limit"] == "3"
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert int(limited.headers["x-ratelimit-reset"]) <= 6
    assert first[0].headers["x-ratelimit-remaining"] == "2"
    await asyncio.sleep(6.5)
    assert codes(await burst(client, 5)) == [200] * 3 + [429] * 2
    assert backend.hits == 6


async def test_global_limit_is_shared_by_every_sidecar_of_the_service(
        mini: MiniMesh, make_backend: Any) -> None:
    a, b = make_backend("A"), make_backend("B")
    await mini.serve("echo", [a, b])
    client = await mini.client()
    await mini.apply(policy({"global": {"rules": [{"requests": 4, "per": "5s"}]}}))
    await mini.wait_synced()
    first = await windowed_burst(client, 10, 5)
    assert codes(first) == [200] * 4 + [429] * 6
    # Both sidecars served, and together they let exactly 4 through.
    assert a.hits + b.hits == 4
    assert a.hits > 0
    assert b.hits > 0
    limited = first[-1]
    assert limited.headers["x-ratelimit-limit"] == "4"
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert 0 <= int(limited.headers["x-ratelimit-reset"]) <= 5
    assert first[0].headers["x-ratelimit-remaining"] == "3"
    assert codes(await windowed_burst(client, 6, 5)) == [200] * 4 + [429] * 2
    assert a.hits + b.hits == 8


async def clear_of_boundary(per: float, need: float = 30.0) -> None:
    """Make sure the current window of `per` seconds has `need` seconds left."""
    left = per - time.time() % per
    if left < need:
        await asyncio.sleep(left + 0.05)


async def acked_versions(mini: MiniMesh, node_id: str) -> dict[str, str]:
    proxies = await mini.api("GET", "/api/v1/proxies")
    entry = next(p for p in proxies if p["node_id"] == node_id)
    return {t: v["acked_version"] for t, v in entry["types"].items()}


async def test_a_new_limit_applies_without_new_envoy_config(mini: MiniMesh,
                                                            make_backend: Any) -> None:
    await mini.serve("echo", [make_backend("A")])
    client = await mini.client()
    await mini.apply(policy({"global": {"rules": [{"requests": 2, "per": "1h"}]}}))
    await mini.wait_synced()
    await clear_of_boundary(3600)
    assert codes(await burst(client, 3)) == [200, 200, 429]
    before = await acked_versions(mini, "echo-0.default")
    await mini.apply(policy({"global": {"rules": [{"requests": 5, "per": "1h"}]}}))
    await mini.wait_synced()
    # The same counter (same rule, same window) holds 3: rejected requests count too.
    assert codes(await burst(client, 4)) == [200, 200, 429, 429]
    assert await acked_versions(mini, "echo-0.default") == before


async def test_header_key_counts_each_value_apart_and_match_gates_the_rule(
        mini: MiniMesh, make_backend: Any) -> None:
    await mini.serve("echo", [make_backend("A"), make_backend("B")])
    client = await mini.client()
    await mini.apply(policy({"global": {"rules": [
        {"match": {"path": {"type": "PathPrefix", "value": "/api"}},
         "key": {"type": "header", "header": "x-user"}, "requests": 2, "per": "1h"},
        {"match": {"path": {"type": "PathPrefix", "value": "/files"}},
         "key": {"type": "path"}, "requests": 1, "per": "1h"},
    ]}}))
    await mini.wait_synced()
    await clear_of_boundary(3600)
    alice, bob = {"x-user": "alice"}, {"x-user": "bob"}
    assert codes(await burst(client, 3, alice, "http://echo/api/x")) == [200, 200, 429]
    assert codes(await burst(client, 3, bob, "http://echo/api/y?q=1")) == [200, 200, 429]
    assert codes(await burst(client, 1, alice, "http://echo/api")) == [429]
    # Not under /api: the rule does not count it.
    assert codes(await burst(client, 4, alice, "http://echo/apix")) == [200] * 4
    # Without the header there is no key: the rule does not count it either.
    assert codes(await burst(client, 3, {}, "http://echo/api/x")) == [200] * 3
    # Keyed by path (without the query): one per path.
    assert codes(await burst(client, 2, {}, "http://echo/files/a?v=1")) == [200, 429]
    assert codes(await burst(client, 2, {}, "http://echo/files/b")) == [200, 429]
    assert codes(await burst(client, 1, {}, "http://echo/files/a?v=2")) == [429]


async def test_caller_key_puts_plaintext_callers_in_one_anonymous_bucket(
        mini: MiniMesh, make_backend: Any) -> None:
    """The mini mesh runs without mTLS; tests/e2e covers callers with identities."""
    await mini.serve("echo", [make_backend("A")])
    first, second = await mini.client(), await mini.client(index=1)
    await mini.apply(policy({"global": {"rules": [
        {"key": {"type": "caller"}, "requests": 2, "per": "1h"}]}}))
    await mini.wait_synced()
    await clear_of_boundary(3600)
    assert codes(await burst(first, 2)) == [200, 200]
    assert codes(await burst(second, 2)) == [429, 429]


async def test_requests_denied_by_authorization_consume_no_quota(
        mini: MiniMesh, make_backend: Any) -> None:
    backend = make_backend("A")
    await mini.serve("echo", [backend])
    client = await mini.client()
    await mini.apply(
        {"apiVersion": API, "kind": "AuthorizationPolicy", "metadata": {"name": "no-admin"},
         "spec": {"targetRef": {"kind": "Service", "name": "echo"}, "action": "DENY",
                  "rules": [{"to": [{"operation": {"paths": ["/admin/*"]}}]}]}},
        policy({"local": {"requests": 2, "per": "1h"},
                "global": {"rules": [{"requests": 2, "per": "1h"}]}}))
    await mini.wait_synced()
    await clear_of_boundary(3600)
    assert codes(await burst(client, 5, url="http://echo/admin/x")) == [403] * 5
    assert codes(await burst(client, 3)) == [200, 200, 429]
    assert backend.hits == 2


async def test_control_plane_metrics_count_decisions(mini: MiniMesh,
                                                     make_backend: Any) -> None:
    await mini.serve("echo", [make_backend("A")])
    client = await mini.client()
    await mini.apply(policy({"global": {"rules": [{"requests": 1, "per": "1h"}]}}))
    await mini.wait_synced()
    await clear_of_boundary(3600)
    assert codes(await burst(client, 3)) == [200, 429, 429]
    metrics = mini.plane.metrics
    assert metrics.get_sample_value("gossamer_ratelimit_decisions_total",
                                    {"result": "ok"}) == 1
    assert metrics.get_sample_value("gossamer_ratelimit_decisions_total",
                                    {"result": "over_limit"}) == 2


async def test_global_counters_in_redis_survive_a_control_plane_restart(
        redis_server: RedisServer, envoys: Callable[[dict[str, Any]], EnvoyProcess],
        make_backend: Any, tmp_path: Path) -> None:
    options = ControlPlaneOptions(state_dir=tmp_path, xds_port=free_port(), api_port=0,
                                  debounce=0.01, secure=False,
                                  ratelimit_redis=redis_server.url)
    plane = ControlPlane(options)
    await plane.start()
    try:
        mini = MiniMesh(plane, envoys)
        a, b = make_backend("A"), make_backend("B")
        await mini.serve("echo", [a, b])
        client = await mini.client()
        await mini.apply(policy({"global": {"rules": [{"requests": 5, "per": "1h"}]}}))
        await mini.wait_synced()
        await clear_of_boundary(3600, need=120)
        assert codes(await burst(client, 3)) == [200] * 3
        await plane.stop()
        # Same store, same xDS port, same Redis: the sidecars reconnect to a new process.
        plane = ControlPlane(options)
        await plane.start()
        mini.plane = plane
        await mini.wait_synced(timeout=40)
        assert codes(await burst(client, 4)) == [200, 200, 429, 429]
        assert a.hits + b.hits == 5
        assert plane.metrics.get_sample_value("gossamer_ratelimit_backend_errors_total") == 0
    finally:
        await plane.stop()


async def test_global_limits_fail_open_when_the_control_plane_is_gone(
        mini: MiniMesh, make_backend: Any) -> None:
    backend = make_backend("A")
    await mini.serve("echo", [backend])
    client = await mini.client()
    await mini.apply(policy({"global": {"rules": [{"requests": 1, "per": "1h"}]}}))
    await mini.wait_synced()
    await clear_of_boundary(3600)
    assert codes(await burst(client, 2)) == [200, 429]
    await mini.plane.stop()
    # Envoy keeps its config; the rate-limit call fails and the request passes.
    assert codes(await burst(client, 3)) == [200] * 3
    assert backend.hits == 4
    stats = await mini.sidecars[0].stats()
    assert sum(v for k, v in stats.items() if k.endswith("ratelimit.error")) >= 3
    assert sum(v for k, v in stats.items()
               if k.endswith("ratelimit.failure_mode_allowed")) >= 3
