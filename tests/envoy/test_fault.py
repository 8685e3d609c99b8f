"""FaultPolicy reaching real sidecars: the caller's sidecar aborts or delays the share
of requests the policy says, only tagged requests when it matches headers, answers
gRPC aborts with a gRPC status, and a policy changes routes only (no listener)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import httpx
import pytest

from gossamer.testing.envoy import free_port
from tests.envoy.harness import API, MiniMesh, Sidecar, get, proxy_client, wait_for

# Envoy's timers run on libevent's default clock, CLOCK_MONOTONIC_COARSE (it creates its
# event_base without EVENT_BASE_FLAG_PRECISE_TIMER), which advances a kernel tick at a
# time (1-10 ms): a delay can end that much early by a precise clock.
COARSE_TICK = 0.01

pytestmark = pytest.mark.slow


def fault_policy(spec: dict[str, Any], name: str = "echo-chaos",
                 target: str = "echo") -> dict[str, Any]:
    return {"apiVersion": API, "kind": "FaultPolicy", "metadata": {"name": name},
            "spec": {"targetRef": {"kind": "Service", "name": target}, **spec}}


async def test_aborts_the_configured_share_and_never_forwards_them(
        mini: MiniMesh, make_backend: Any) -> None:
    backend = make_backend("A")
    await mini.serve("echo", [backend])
    await mini.apply(fault_policy({"abort": {"httpStatus": 418, "percent": 30}}))
    client = await mini.client()
    await mini.wait_synced()
    codes: list[int] = []
    deadline = time.monotonic() + 120
    async with proxy_client(client) as http:
        for _ in range(1000):
            codes.append((await get(client, http=http)).status_code)
            assert time.monotonic() < deadline, "1000 requests took too long"
    aborted, ok = codes.count(418), codes.count(200)
    assert aborted + ok == 1000, {c: codes.count(c) for c in set(codes)}
    assert 250 <= aborted <= 350, aborted  # 30 % +- 5 points
    assert backend.hits == ok  # an injected abort never reaches the Service
    stats = await client.stats()
    assert stats["http.outbound.fault.aborts_injected"] == aborted


async def test_only_header_tagged_requests_are_hit_and_aborts_are_not_retried(
        mini: MiniMesh, make_backend: Any) -> None:
    backend = make_backend("A")
    await mini.serve("echo", [backend])
    # Callers retry 503s from echo; an injected 503 is answered before the router.
    await mini.apply({"apiVersion": API, "kind": "ResiliencePolicy", "metadata": {"name": "r"},
                      "spec": {"targetRef": {"kind": "Service", "name": "echo"},
                               "retries": {"attempts": 2, "retryOn": ["5xx"]}}})
    await mini.apply(fault_policy({
        "abort": {"httpStatus": 503, "percent": 100},
        "delay": {"fixedDelay": "1ms", "percent": 100},
        "match": {"headers": [{"name": "x-chaos", "value": "on"},
                              {"name": "x-user", "type": "RegularExpression",
                               "value": "test-.*"}]}}))
    upstream_port = free_port()
    client = await mini.client(upstreams=({"service": "echo", "namespace": "default",
                                           "port": 80, "local_port": upstream_port},))
    await mini.wait_synced()
    tagged = {"x-chaos": "on", "x-user": "test-7"}
    async with proxy_client(client) as http:
        for _ in range(50):
            assert (await get(client, http=http, headers=tagged)).status_code == 503
            # One header of two is not enough, nor is no header.
            half = await get(client, http=http, headers={"x-chaos": "on", "x-user": "real"})
            assert half.status_code == 200
            assert (await get(client, http=http)).status_code == 200
    assert backend.hits == 100
    assert all(h.get("x-user") != "test-7" for _, _, h in backend.seen)
    stats = await client.stats()
    assert stats["http.outbound.fault.aborts_injected"] == 50
    assert stats["http.outbound.fault.delays_injected"] == 50
    assert stats.get("cluster.outbound|80||echo.default.upstream_rq_retry", 0) == 0
    # The per-upstream listener shares the routes, so the same fault.
    async with httpx.AsyncClient(trust_env=False, timeout=10) as direct:
        url = f"http://127.0.0.1:{upstream_port}/"
        assert (await direct.get(url, headers=tagged)).status_code == 503
        assert (await direct.get(url)).status_code == 200
    stats = await client.stats()
    assert stats["http.upstream|80||echo.default.fault.aborts_injected"] == 1
    backend.fail = 1  # the retry policy is in effect: a real 503 is retried
    async with proxy_client(client) as http:
        assert (await get(client, http=http)).status_code == 200
    assert (await client.stats())["cluster.outbound|80||echo.default.upstream_rq_retry"] == 1


async def test_fixed_delay_and_policy_changes_touch_routes_only(
        mini: MiniMesh, make_backend: Any) -> None:
    backend = make_backend("A")
    await mini.serve("echo", [backend])
    client = await mini.client()
    await mini.wait_synced()
    before = await client.stats()
    # The delay comes before the router, so the route's request timeout does not count it.
    # The timeout leaves room for a loaded machine: the backend answers from a thread of
    # this process, which also runs the control plane's builds (the GIL), so a 200 ms
    # timeout was seen to expire in CI with no delay in play.
    await mini.apply({"apiVersion": API, "kind": "ResiliencePolicy", "metadata": {"name": "r"},
                      "spec": {"targetRef": {"kind": "Service", "name": "echo"},
                               "timeouts": {"request": "1s"}}})
    await mini.apply(fault_policy({"delay": {"fixedDelay": "1200ms", "percent": 100}}))

    async def delayed() -> bool:
        return (await client.stats()).get("http.outbound.fault.delays_injected", 0) > 0

    async with proxy_client(client) as http:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while not await delayed():
            assert (await get(client, http=http)).status_code == 200
            assert loop.time() < deadline, "the policy never reached the caller"
            await asyncio.sleep(0.05)
        for _ in range(3):
            start = time.monotonic()
            resp = await get(client, http=http)
            took = time.monotonic() - start
            assert resp.status_code == 200, resp.text
            assert 1.2 - COARSE_TICK <= took < 5.0, took  # CI once measured 1.1993 s
        # ...while the app's own latency still is.
        slow_app = await get(client, http=http, headers={"x-test-delay-ms": "2000"})
        assert slow_app.status_code == 504
        after = await client.stats()
        # A route (RDS) update only: no listener was replaced or drained.
        assert after["listener_manager.listener_modified"] == \
            before["listener_manager.listener_modified"]
        assert after["listener_manager.total_listeners_draining"] == 0
        await mini.delete("FaultPolicy", "echo-chaos")
        await wait_for(lambda: _fast(client, http), "the delay to go with the policy")


async def _fast(client: Sidecar, http: Any) -> bool:
    start = time.monotonic()
    resp = await get(client, http=http)
    return bool(resp.status_code == 200 and time.monotonic() - start < 1.0)


async def test_grpc_abort_is_a_grpc_status(mini: MiniMesh, grpc_echo: int) -> None:
    await mini.apply({"apiVersion": API, "kind": "Service", "metadata": {"name": "rpc"},
                      "spec": {"ports": [{"port": 80, "protocol": "grpc"}]}})
    rpc = Sidecar(mini.plane, mini.make, "rpc", app_port=grpc_echo, protocol="grpc")
    await mini.apply({"apiVersion": API, "kind": "Workload", "metadata": {"name": rpc.workload},
                      "spec": {"service": "rpc", "address": "127.0.0.1",
                               "port": rpc.inbound}})
    mini.sidecars.append(rpc)
    await rpc.start()
    await mini.apply(fault_policy({"abort": {"grpcStatus": "RESOURCE_EXHAUSTED",
                                             "percent": 100},
                                   "match": {"headers": [{"name": "x-chaos",
                                                          "value": "on"}]}},
                                  target="rpc"))
    client = await mini.client()
    await mini.wait_synced()

    def call(metadata: tuple[tuple[str, str], ...]) -> bytes | grpc.StatusCode:
        with grpc.insecure_channel(f"127.0.0.1:{client.outbound}",
                                   options=[("grpc.default_authority", "rpc")]) as channel:
            say = channel.unary_unary("/test.Echo/Say")
            try:
                return bytes(say(b"gossamer", timeout=5, metadata=metadata))
            except grpc.RpcError as exc:
                return exc.code()  # type: ignore[no-any-return]

    assert await asyncio.to_thread(call, ()) == b"remassog"
    assert await asyncio.to_thread(call, (("x-chaos", "on"),)) == \
        grpc.StatusCode.RESOURCE_EXHAUSTED
