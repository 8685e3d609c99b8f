"""SMI TrafficMetrics from golden metrics: the pure shapes, and the API routes over a
scraper fed synthetic Envoy stats."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gossamer.api.app import create_app
from gossamer.api.auth import Authenticator
from gossamer.api.context import ApiContext
from gossamer.ca.tokens import Scope, Tokens
from gossamer.controlplane.leases import Leases
from gossamer.controlplane.reconcile import Reconciler
from gossamer.smi import metrics
from gossamer.store.sqlite import SqliteStore
from gossamer.telemetry import golden
from gossamer.telemetry.golden import Observed, Sample, Source
from gossamer.telemetry.scraper import ScrapeOptions, Scraper
from gossamer.xds.status import ProxyRegistry

NOW = "2026-04-08T22:25:55Z"
OUT = "cluster.outbound|80||catalog.shop."


def sample(at: float, inbound: tuple[int, int, int], out: tuple[int, int] = (0, 0),
           ) -> Sample:
    """`inbound`: (requests, 2xx, 5xx) served; `out`: (requests, 5xx) sent to catalog.
    Latency: every request 2 ms (in the bucket 1-5 ms)."""
    total, ok, failed = inbound
    counters = {"http.inbound.downstream_rq_total": total,
                "http.inbound.downstream_rq_2xx": ok, "http.inbound.downstream_rq_5xx": failed,
                OUT + "upstream_rq_total": out[0], OUT + "upstream_rq_2xx": out[0] - out[1],
                OUT + "upstream_rq_5xx": out[1]}
    hists = {"http.inbound.downstream_rq_time": ((1.0, 0), (5.0, total), (10.0, total)),
             OUT + "upstream_rq_time": ((1.0, 0), (5.0, out[0]), (10.0, out[0]))}
    return Sample(at, counters, hists)


WEB = Source("web-1.shop", "shop", "web", "web-1")
CATALOG = Source("catalog-1.shop", "shop", "catalog", "catalog-1")
SEEN = [Observed(WEB, sample(10.0, (0, 0, 0), out=(40, 4))),
        Observed(CATALOG, sample(10.0, (40, 36, 4)))]


def test_a_service_served_as_traffic_metrics() -> None:
    (row,) = [r for r in golden.by_service(SEEN) if r["name"] == "catalog"]
    assert metrics.traffic_metrics(row, 30.0, NOW) == {
        "kind": "TrafficMetrics", "apiVersion": "metrics.smi-spec.io/v1alpha1",
        "metadata": {"name": "catalog", "namespace": "shop", "creationTimestamp": NOW},
        "timestamp": NOW, "window": "30s",
        "resource": {"kind": "Service", "namespace": "shop", "name": "catalog"},
        "edge": {"direction": "from", "side": "server", "resource": {}},
        "metrics": [
            {"name": "p99_response_latency", "unit": "seconds", "value": "4960u"},
            {"name": "p95_response_latency", "unit": "seconds", "value": "4800u"},
            {"name": "p50_response_latency", "unit": "seconds", "value": "3m"},
            {"name": "success_count", "value": "36"},
            {"name": "failure_count", "value": "4"}]}


def test_edges_of_a_caller_and_of_the_called() -> None:
    rows = golden.by_edge(SEEN, per_workload=False, routed=False)
    web = metrics.edges(metrics.reference("Service", "shop", "web"), rows, 30.0, NOW)
    catalog = metrics.edges(metrics.reference("Service", "shop", "catalog"), rows, 30.0, NOW)
    assert [i["edge"] for i in web["items"]] == [{"direction": "to", "side": "client",
        "resource": {"kind": "Service", "namespace": "shop", "name": "catalog"}}]
    assert [i["edge"] for i in catalog["items"]] == [{"direction": "from", "side": "client",
        "resource": {"kind": "Service", "namespace": "shop", "name": "web"}}]
    counts = {m["name"]: m["value"] for m in web["items"][0]["metrics"]}
    assert (counts["success_count"], counts["failure_count"]) == ("36", "4")
    per_workload = golden.by_edge(SEEN, routed=False)
    wl = metrics.edges(metrics.reference("Workload", "shop", "web-1"), per_workload, 30, NOW)
    assert wl["kind"] == "TrafficMetricsList"
    assert [i["edge"]["resource"]["name"] for i in wl["items"]] == ["catalog"]


def test_no_traffic_has_counts_and_no_latency() -> None:
    (row,) = [r for r in golden.by_workload(SEEN) if r["name"] == "web-1"]
    assert [m["name"] for m in metrics.traffic_metrics(row, 5, NOW)["metrics"]] == [
        "success_count", "failure_count"]


def test_a_list_keeps_one_kind_and_namespace() -> None:
    rows = golden.by_service(SEEN) + golden.by_workload(SEEN)
    listed = metrics.traffic_metrics_list(rows, "Workload", "shop", 30, NOW)
    assert listed["resource"] == {"kind": "Workload", "namespace": "shop"}
    assert [i["resource"]["name"] for i in listed["items"]] == ["catalog-1", "web-1"]
    assert metrics.traffic_metrics_list(rows, "Service", "other", 30, NOW)["items"] == []


@pytest.mark.parametrize(("seconds", "text"), [
    (0.01, "10m"), (0.0025, "2500u"), (1.5, "1500m"), (2.0, "2"), (1e-9, "1n")])
def test_quantities(seconds: float, text: str) -> None:
    assert metrics.quantity(seconds) == text


@pytest.mark.parametrize(("seconds", "text"), [
    (30, "30s"), (60, "1m0s"), (90.5, "1m30.5s"), (0.25, "250ms"), (3661, "1h1m1s")])
def test_windows_as_go_durations(seconds: float, text: str) -> None:
    assert metrics.go_duration(seconds) == text


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    store = SqliteStore(str(tmp_path / "gossamer.db"))
    tokens = Tokens(store)
    reconciler = Reconciler(store, lambda node, snap: None, debounce=0.005)
    task = asyncio.create_task(reconciler.run())
    scraper = Scraper(ProxyRegistry(), ScrapeOptions(window=30))
    for src, (inbound, out) in ((WEB, ((0, 0, 0), (40, 4))), (CATALOG, ((40, 36, 4), (0, 0)))):
        scraper.add(src, sample(0.0, (0, 0, 0)))
        scraper.add(src, sample(10.0, inbound, out))
    try:
        await reconciler.wait_ready()
        admin, _ = await tokens.create(Scope.ADMIN)
        ctx = ApiContext(store, reconciler, Leases(store), lambda: [],
                         auth=Authenticator(tokens), tokens=tokens, telemetry=scraper)
        transport = httpx.ASGITransport(app=create_app(ctx))
        async with httpx.AsyncClient(transport=transport, base_url="http://cp") as http:
            yield http, {"Authorization": f"Bearer {admin}"}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()


async def test_the_api_serves_traffic_metrics(
        api: tuple[httpx.AsyncClient, dict[str, str]]) -> None:
    http, auth = api
    base = "/apis/metrics.smi-spec.io/v1alpha1/namespaces/shop"

    async def get(path: str, status: int = 200) -> Any:
        resp = await http.get(base + path, headers=auth)
        assert resp.status_code == status, resp.text
        return resp.json()

    listed = await get("/services")
    assert [i["resource"]["name"] for i in listed["items"]] == ["catalog", "web"]
    one = await get("/services/catalog")
    assert {m["name"]: m["value"] for m in one["metrics"]}["failure_count"] == "4"
    assert one["window"] == "30s"
    edges = await get("/services/catalog/edges")
    assert [(i["edge"]["direction"], i["edge"]["resource"]["name"]) for i in edges["items"]] \
        == [("from", "web")]
    assert (await get("/workloads/web-1/edges"))["items"][0]["edge"]["direction"] == "to"
    await get("/services/nope", status=404)
    await get("/pods", status=404)
    resp = await http.get(base + "/services")
    assert resp.status_code == 401
