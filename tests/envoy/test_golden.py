"""Golden metrics from real sidecars: a known load, then the API's numbers and /metrics."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from gossamer.agent.ports import free_port
from gossamer.envoy.admin import fetch
from gossamer.telemetry.golden import parse_stats
from gossamer.telemetry.scraper import STATS_TARGET, ScrapeOptions
from tests.envoy.harness import API, MiniMesh, get, proxy_client, wait_for
from tests.envoy.test_metrics import prometheus, value

pytestmark = pytest.mark.slow

GATEWAY = "gateway.networking.k8s.io/v1"
OK, FAILED, SLOW = 18, 6, 6  # SLOW: 200 ms each, answered 200
# Envoy's default histogram bucket bounds (ms); a quantile is interpolated inside one.
BUCKETS_MS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


def _bucket_above(ms: float) -> float:
    return next(b for b in BUCKETS_MS if b >= ms)


async def _known_load(mini: MiniMesh, make_backend: Any) -> float:
    """Send the load; return the slowest slow request as the client timed it (ms)."""
    await mini.serve("echo", [make_backend("A"), make_backend("B")])
    client = await mini.client()
    await mini.wait_synced()
    scraper = mini.plane.telemetry
    scraper.options = ScrapeOptions(interval=0.5, window=60)
    rounds = scraper.rounds
    # A baseline sample of every sidecar before the load, so the window holds all of it.

    async def baseline() -> bool:
        return scraper.rounds >= rounds + 2 and len(scraper.observed()) == 3

    await wait_for(baseline, "two scrape rounds of every sidecar")
    async with proxy_client(client) as http:
        for _ in range(OK):
            assert (await get(client, http=http)).status_code == 200
        for _ in range(FAILED):
            resp = await get(client, http=http, headers={"x-test-status": "500"})
            assert resp.status_code == 500
        slowest = 0.0
        for _ in range(SLOW):
            started = time.monotonic()
            resp = await get(client, http=http, headers={"x-test-delay-ms": "200"})
            slowest = max(slowest, (time.monotonic() - started) * 1000)
            assert resp.status_code == 200
    return slowest


async def _stats(mini: MiniMesh, kind: str, name: str) -> list[dict[str, Any]]:
    body = await mini.api("GET", f"/api/v1/stats?kind={kind}&name={name}")
    assert body["kind"] == kind
    assert body["window_seconds"] == 60
    return body["items"]  # type: ignore[no-any-return]


async def test_known_load_gives_exact_counts_rates_and_latency(mini: MiniMesh,
                                                                make_backend: Any) -> None:
    slowest = await _known_load(mini, make_backend)
    total = OK + FAILED + SLOW

    async def settled() -> bool:
        # Counters are live; histograms arrive with the flush of a scrape, at the next.
        [svc] = await _stats(mini, "service", "echo")
        return bool(svc["requests"] == total == sum(svc["responses"].values())
                    and svc["latency_ms"]["p99"] is not None
                    and svc["latency_ms"]["p99"] > 100)

    await wait_for(settled, "golden metrics of the load", timeout=30)
    [svc] = await _stats(mini, "service", "echo")
    assert svc["workloads"] == 2
    assert svc["responses"]["2xx"] == OK + SLOW
    assert svc["responses"]["5xx"] == FAILED
    assert svc["success_rate"] == pytest.approx((OK + SLOW) / total)
    assert 0 < svc["rps"] < total
    lat = svc["latency_ms"]
    assert lat["p50"] < 50, lat  # the fast majority
    # The 200 ms requests' bucket is (100, 250]; on a loaded machine one of them can take
    # longer, and the client's own timing (which includes Envoy's) bounds how much.
    top = _bucket_above(max(slowest, 200))
    assert 100 < lat["p95"] <= top, (lat, slowest)
    assert 100 < lat["p99"] <= top, (lat, slowest)

    workloads = await _stats(mini, "workload", "echo-0") + await _stats(mini, "workload",
                                                                         "echo-1")
    assert sum(w["requests"] for w in workloads) == total
    assert all(w["requests"] > 0 for w in workloads)  # both instances served

    [edge] = await _stats(mini, "edge", "echo")
    assert edge["source"] == {"namespace": "default", "service": "client",
                              "workload": "client-0"}
    assert edge["destination"] == "echo.default"
    assert edge["requests"] == total
    assert edge["responses"]["5xx"] == FAILED
    assert edge["success_rate"] == pytest.approx((OK + SLOW) / total)

    graph = await mini.api("GET", "/api/v1/graph")
    [gedge] = graph["edges"]
    assert gedge["id"] == "client.default->echo.default"
    assert gedge["requests"] == total
    assert {n["id"] for n in graph["nodes"]} == {"client.default", "echo.default"}


async def test_a_scrape_carries_only_the_stats_a_sidecar_has_written(
        mini: MiniMesh, make_backend: Any) -> None:
    """Unused stats (zeros, empty histograms) are left out of the scrape: they cost the
    sidecar as much as used ones to filter, sort and encode, and golden metrics read a
    missing stat as zero. The caller's counters of the load are there, its timeouts
    (none happened) are not."""
    await _known_load(mini, make_backend)
    client = next(s for s in mini.sidecars if s.workload == "client-0")
    _, body = await fetch("127.0.0.1", client.node.admin_port, "GET", STATS_TARGET, timeout=5)
    stats = json.loads(body)["stats"]
    counters = {s["name"]: s["value"] for s in stats if "value" in s}
    assert counters["cluster.outbound|80||echo.default.upstream_rq_total"] == OK + FAILED + SLOW
    assert "cluster.outbound|80||echo.default.upstream_rq_timeout" not in counters
    assert all(v > 0 for v in counters.values()), counters


async def test_histograms_are_merged_when_the_admin_endpoint_is_read(
        mini: MiniMesh, make_backend: Any) -> None:
    """Sidecars have no 5 s stats flush timer (it cost an idle sidecar ~45 % of its
    instructions): each admin read merges the histograms, so the next read has the
    requests made before it, however soon it comes."""
    await mini.serve("echo", [make_backend("A")])
    client = await mini.client()
    await mini.wait_synced()
    async with proxy_client(client) as http:
        for _ in range(3):
            assert (await get(client, http=http)).status_code == 200
    port = client.node.admin_port
    await fetch("127.0.0.1", port, "GET", STATS_TARGET, timeout=5)  # merges them
    _, body = await fetch("127.0.0.1", port, "GET", STATS_TARGET, timeout=5)
    sample = parse_stats(json.loads(body), 0.0)
    buckets = sample.histograms.get("cluster.outbound|80||echo.default.upstream_rq_time", ())
    assert max((count for _, count in buckets), default=0) == 3, buckets


async def test_control_plane_metrics_count_proxies_pushes_and_revision(
        mini: MiniMesh, make_backend: Any) -> None:
    await mini.serve("echo", [make_backend("A")])
    await mini.client()
    await mini.wait_synced()
    async with httpx.AsyncClient(trust_env=False) as http:
        text = (await http.get(f"http://127.0.0.1:{mini.plane.api_port}/metrics")).text
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert values["gossamer_connected_proxies"] == 2
    assert values["gossamer_store_revision"] == mini.plane.reconciler.index.revision > 0
    acks = sum(v for k, v in values.items() if k.startswith("gossamer_xds_acks_total"))
    observed = sum(v for k, v in values.items()
                   if k.startswith("gossamer_xds_push_latency_seconds_count"))
    assert observed > 0
    assert observed <= acks
    assert values['gossamer_xds_push_latency_seconds_count{type="clusters"}'] >= 2
    bad = await mini.api("GET", "/api/v1/stats?kind=pod", expect=422)
    assert bad["fields"] == [{"path": "kind", "reason": "unknown kind"}]


async def test_edges_of_a_split_service_show_its_callers_and_the_split(
        mini: MiniMesh, make_backend: Any) -> None:
    """An HTTPRoute sends all of `catalog` (a Service without instances of its own) to
    two backends: `edges catalog` still answers with who called catalog, through the
    outbound listener and through an upstream listener, and where its requests went."""
    await mini.serve("catalog-v1", [make_backend("A")])
    await mini.serve("catalog-v2", [make_backend("B")])
    await mini.apply({"apiVersion": API, "kind": "Service", "metadata": {"name": "catalog"},
                      "spec": {"ports": [{"port": 80}]}},
                     {"apiVersion": GATEWAY, "kind": "HTTPRoute", "metadata": {"name": "split"},
                      "spec": {"parentRefs": [{"name": "catalog"}], "rules": [{"backendRefs": [
                          {"name": "catalog-v1", "weight": 50},
                          {"name": "catalog-v2", "weight": 50}]}]}})
    local = free_port()
    client = await mini.client(upstreams=({"service": "catalog", "namespace": "default",
                                           "port": 80, "local_port": local},))
    await mini.wait_synced()
    scraper = mini.plane.telemetry
    scraper.options = ScrapeOptions(interval=0.5, window=60)
    rounds = scraper.rounds

    async def baseline() -> bool:
        return scraper.rounds >= rounds + 2 and len(scraper.observed()) == 3

    await wait_for(baseline, "two scrape rounds of every sidecar")
    async with proxy_client(client) as http, httpx.AsyncClient(trust_env=False) as direct:
        for _ in range(8):
            assert (await get(client, "http://catalog/", http=http)).status_code == 200
        for _ in range(4):
            assert (await direct.get(f"http://127.0.0.1:{local}/")).status_code == 200
        failed = await get(client, "http://catalog/", http=http, headers={"x-test-status": "500"})
        assert failed.status_code == 500
    total = 13

    async def counted() -> bool:
        rows = await _stats(mini, "edge", "catalog")
        return bool(rows) and rows[0]["requests"] == total == sum(
            b["requests"] for b in rows[0]["backends"])

    await wait_for(counted, "the called Service's edge to count the load", timeout=20)
    [edge] = await _stats(mini, "edge", "catalog")
    assert edge["source"] == {"namespace": "default", "service": "client",
                              "workload": "client-0"}
    assert (edge["destination"], edge["routed"]) == ("catalog.default", True)
    assert edge["responses"]["5xx"] == 1
    assert [b["destination"] for b in edge["backends"]] == ["catalog-v1.default",
                                                            "catalog-v2.default"]
    went = {e["destination"]: e for e in (await mini.api(
        "GET", "/api/v1/stats?kind=edge"))["items"] if not e["routed"]}
    for backend in edge["backends"]:  # the split is what went to each backend
        assert backend["requests"] == went[backend["destination"]]["requests"]
    # The graph shows where requests went, not the Service they addressed.
    graph = await mini.api("GET", "/api/v1/graph")
    assert {e["id"] for e in graph["edges"]} <= {"client.default->catalog-v1.default",
                                                 "client.default->catalog-v2.default"}
    # Prometheus sees the called Service in labels, like a cluster's destination.
    samples = await prometheus(client)
    called = {"destination_service": "catalog", "destination_namespace": "default",
              "destination_port": "80", "envoy_route": "called"}
    assert value(samples, "envoy_vhost_route_upstream_rq_total", **called,
                 envoy_virtual_host="catalog.default:80") == 9
    assert value(samples, "envoy_vhost_route_upstream_rq_total", **called,
                 envoy_virtual_host="upstream|80||catalog.default") == 4
