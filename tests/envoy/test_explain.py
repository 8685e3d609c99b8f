"""`gossamer explain` against real sidecars: each request is made to fail by one known
cause (the app, a timeout, a fault, no route, a circuit breaker, no healthy endpoint,
a rate limit, an authorization policy), and the explanation names that cause, the
policy that decided it, the route and the cluster."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import httpx
import pytest

from gossamer.testing.envoy import free_port
from tests.envoy.harness import API, MiniMesh, Sidecar, explained, get, proxy_client, wait_for

pytestmark = pytest.mark.slow
CLUSTER = "outbound|80||echo.default"


def targeted(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": kind, "metadata": {"name": name},
            "spec": {"targetRef": {"kind": "Service", "name": "echo"}, **spec}}


async def _mesh(mini: MiniMesh, make_backend: Any, *docs: dict[str, Any]) -> Sidecar:
    await mini.serve("echo", [make_backend("A")])
    client = await mini.client()
    await mini.apply(*docs)
    await mini.wait_synced()
    return client


async def test_an_app_error_is_the_apps_and_both_hops_join_on_one_request_id(
        mini: MiniMesh, make_backend: Any) -> None:
    client = await _mesh(mini, make_backend)
    resp = await get(client, "http://echo/orders", headers={"x-test-status": "500"})
    assert resp.status_code == 500
    exp = await explained(mini, hops=2, path="/orders")
    assert exp["failed_at"] == "the app (echo-0)"
    assert "answered 500 itself" in exp["cause"]
    assert exp["policy"] is None
    assert exp["route"] == "the Service's default route (no HTTPRoute attached)"
    assert exp["cluster"] == CLUSTER
    assert exp["summary"] == "client-0 -> echo.default: GET /orders answered 500 after " \
        f"{exp['hops'][0]['duration_ms']:.0f} ms"
    hops = {(h["direction"], h["reporter"]["workload"]) for h in exp["hops"]}
    assert hops == {("outbound", "client-0"), ("inbound", "echo-0")}
    assert len({h["request_id"] for h in exp["hops"]}) == 1
    # Successful requests are not logged.
    assert (await get(client, "http://echo/fine")).status_code == 200
    await asyncio.sleep(0.8)
    assert (await mini.api("GET", "/api/v1/failures?path=/fine"))["items"] == []


async def test_caller_side_causes_name_their_policy(mini: MiniMesh,
                                                    make_backend: Any) -> None:
    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
             "metadata": {"name": "echo"},
             "spec": {"parentRefs": [{"name": "echo", "port": 80}], "rules": [
                 {"name": "api", "matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                  "backendRefs": [{"name": "echo", "port": 80}]}]}}
    client = await _mesh(
        mini, make_backend, route,
        targeted("ResiliencePolicy", "echo-timeouts", {"timeouts": {"request": "300ms"}}),
        targeted("FaultPolicy", "echo-chaos", {
            "abort": {"httpStatus": 503, "percent": 100},
            "match": {"headers": [{"name": "x-chaos", "value": "on"}]}}))

    resp = await get(client, "http://echo/api/slow", headers={"x-test-delay-ms": "2000"})
    assert resp.status_code == 504
    exp = await explained(mini, status=504)
    assert exp["policy"] == "ResiliencePolicy default/echo-timeouts"
    assert "request 300ms" in exp["cause"]
    assert "did not answer in time" in exp["cause"]
    assert exp["route"] == "HTTPRoute default/echo, rule 'api', match 0"
    assert exp["cluster"] == CLUSTER
    assert "UT: the upstream request timed out" in exp["flags"]

    resp = await get(client, "http://echo/api/x", headers={"x-chaos": "on"})
    assert resp.status_code == 503
    exp = await explained(mini, path="/api/x")
    assert exp["policy"] == "FaultPolicy default/echo-chaos"
    assert exp["failed_at"] == "the caller's sidecar (client-0)"
    assert "aborts 100% of requests carrying x-chaos" in exp["cause"]

    resp = await get(client, "http://echo/elsewhere")
    assert resp.status_code == 404
    exp = await explained(mini, path="/elsewhere")
    assert exp["policy"] == "HTTPRoute default/echo"
    assert exp["route"] == "no route matched"
    assert "no rule of the routes attached to echo.default (default/echo) matches " \
        "GET /elsewhere" in exp["cause"]


async def test_a_fault_on_a_call_through_an_upstream_port_is_found_and_explained(
        mini: MiniMesh, make_backend: Any) -> None:
    """The request's host is `127.0.0.1:LOCALPORT` and an injected abort leaves no
    cluster: the upstream listener's name says which Service the caller called."""
    await mini.serve("echo", [make_backend("A")])
    local = free_port()
    await mini.client(upstreams=({"service": "echo", "namespace": "default",
                                  "port": 80, "local_port": local},))
    await mini.apply(targeted("FaultPolicy", "echo-chaos",
                              {"abort": {"httpStatus": 503, "percent": 100}}))
    await mini.wait_synced()
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        assert (await http.get(f"http://127.0.0.1:{local}/local")).status_code == 503
    exp = await explained(mini, service="echo")  # `gossamer explain echo`
    assert exp["summary"].startswith("client-0 -> echo.default: GET /local answered 503")
    assert exp["policy"] == "FaultPolicy default/echo-chaos"
    assert exp["failed_at"] == "the caller's sidecar (client-0)"
    assert "aborts 100% of calls to echo.default with HTTP 503" in exp["cause"]
    [hop] = exp["hops"]
    assert (hop["authority"], hop["listener"]) == (f"127.0.0.1:{local}",
                                                   "upstream|80||echo.default")
    # Asked from the caller's end (`gossamer explain client`), the same answer.
    assert (await explained(mini, service="client"))["policy"] == "FaultPolicy default/echo-chaos"


async def test_overflow_and_no_healthy_endpoint(mini: MiniMesh, make_backend: Any) -> None:
    slow = make_backend("slow")
    await mini.serve("echo", [slow])
    client = await mini.client()
    await mini.apply(targeted("ResiliencePolicy", "echo-breaker", {"circuitBreaker": {
        "maxRequests": 1, "maxPendingRequests": 1, "maxConnections": 1}}))
    await mini.wait_synced()
    slow.delay = 1.5
    async with proxy_client(client) as h1, proxy_client(client) as h2, \
            proxy_client(client) as h3:
        first = asyncio.create_task(get(client, http=h1))
        await wait_for(lambda: _true(slow.hits >= 1), "the first request to arrive")
        queued = asyncio.create_task(get(client, http=h2))
        await asyncio.sleep(0.3)
        assert (await get(client, "http://echo/third", http=h3)).status_code == 503
        await first
        await queued
    exp = await explained(mini, path="/third")
    assert exp["policy"] == "ResiliencePolicy default/echo-breaker"
    assert "circuit breaker of echo.default was full" in exp["cause"]
    assert "maxPendingRequests 1" in exp["cause"]
    assert "UO: a circuit breaker was full (upstream overflow)" in exp["flags"]

    slow.delay = 0
    await mini.set_health("echo-0", "Unhealthy")
    await mini.wait_synced()
    assert (await get(client, "http://echo/nobody")).status_code == 503
    exp = await explained(mini, path="/nobody")
    assert "echo.default had no ready endpoint (1 workload(s) registered" in exp["cause"]
    assert exp["failed_at"] == "the caller's sidecar (client-0)"


async def _true(value: bool) -> bool:
    return value


async def test_callee_side_causes_name_their_policy_and_the_cli_prints_them(
        mini: MiniMesh, make_backend: Any) -> None:
    client = await _mesh(
        mini, make_backend,
        targeted("RateLimitPolicy", "echo-limits",
                 {"local": {"requests": 1, "per": "1m"}}),
        targeted("AuthorizationPolicy", "no-admin", {
            "action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin/*"]}}]}]}))
    assert (await get(client, "http://echo/admin/x")).status_code == 403
    exp = await explained(mini, hops=2, path="/admin/x")
    assert exp["failed_at"] == "the callee's sidecar (echo-0)"
    assert exp["policy"] == "AuthorizationPolicy default/no-admin"
    assert "the DENY rule matched" in exp["cause"]

    codes = [(await get(client, "http://echo/limited")).status_code for _ in range(3)]
    assert 429 in codes, codes
    exp = await explained(mini, hops=2, status=429)
    assert exp["policy"] == "RateLimitPolicy default/echo-limits"
    assert "local 1 per 1m on each sidecar" in exp["cause"]
    assert "RL: rate limited" in exp["flags"]

    env = dict(os.environ, GOSSAMER_SERVER=f"http://127.0.0.1:{mini.plane.api_port}")
    out = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "gossamer", "explain", "echo", "--status", "429"],
        capture_output=True, text=True, env=env, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert "Policy:    RateLimitPolicy default/echo-limits" in out.stdout
    assert "Failed at: the callee's sidecar (echo-0)" in out.stdout
    listed = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "gossamer", "explain", "--list"],
        capture_output=True, text=True, env=env, timeout=60, check=False)
    assert listed.returncode == 0, listed.stderr
    assert "/admin/x" in listed.stdout
    assert "/limited" in listed.stdout
    none = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "gossamer", "explain", "--path", "/never",
                         "--wait", "0"],
        capture_output=True, text=True, env=env, timeout=60, check=False)
    assert none.returncode == 1
    assert none.stderr.startswith("error: no failed request matches")
