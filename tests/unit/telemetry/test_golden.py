"""Golden metrics from synthetic Envoy stats: deltas, rates, success, percentiles, grouping."""

from __future__ import annotations

from typing import Any

import pytest

from gossamer.telemetry import golden
from gossamer.telemetry.golden import BadStats, Observed, Sample, Source
from gossamer.telemetry.scraper import ScrapeOptions, Scraper
from gossamer.xds.status import ProxyRegistry

BOUNDS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000)


def hist(name: str, samples_ms: list[float]) -> dict[str, Any]:
    return {"name": name, "buckets": [
        {"upper_bound": b, "interval": 0, "cumulative": sum(1 for s in samples_ms if s <= b)}
        for b in BOUNDS]}


def doc(counters: dict[str, int], hists: dict[str, list[float]]) -> dict[str, Any]:
    stats: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in counters.items()]
    stats.append({"histograms": [hist(k, v) for k, v in hists.items()]})
    return {"stats": stats}


EDGE = "cluster.outbound|80||catalog.shop."


def sidecar(total: int, ok: int, failed: int, times: list[float],
            out_total: int = 0, out_5xx: int = 0) -> dict[str, Any]:
    counters = {"http.inbound.downstream_rq_total": total,
                "http.inbound.downstream_rq_2xx": ok,
                "http.inbound.downstream_rq_5xx": failed,
                "http.inbound.downstream_rq_200": ok,
                EDGE + "upstream_rq_total": out_total,
                EDGE + "upstream_rq_2xx": out_total - out_5xx,
                EDGE + "upstream_rq_5xx": out_5xx,
                EDGE + "external.upstream_rq_5xx": 999,
                "cluster.outbound|81||catalog.shop.upstream_rq_total": 2,
                "cluster.outbound|81||catalog.shop.upstream_rq_2xx": 2}
    return doc(counters, {"http.inbound.downstream_rq_time": times,
                          EDGE + "upstream_rq_time": times[:out_total]})


def test_parse_reads_counters_and_cumulative_buckets() -> None:
    s = golden.parse_stats(sidecar(3, 2, 1, [0.7, 3, 30]), at=10.0)
    assert s.counters["http.inbound.downstream_rq_total"] == 3
    assert s.histograms["http.inbound.downstream_rq_time"][:3] == ((0.5, 0), (1.0, 1), (5.0, 2))


@pytest.mark.parametrize("bad", [{}, {"stats": [{"histograms": [{"name": "x"}]}]},
                                 {"stats": None}])
def test_parse_refuses_what_is_not_envoy_stats(bad: dict[str, Any]) -> None:
    with pytest.raises(BadStats):
        golden.parse_stats(bad, at=0.0)


def test_rate_success_and_percentiles_over_a_window() -> None:
    before = golden.parse_stats(sidecar(100, 100, 0, [2.0] * 100), at=0.0)
    # 40 more requests in 20 s: 30 ok at 20 ms, 10 failed at 200 ms.
    after = golden.parse_stats(sidecar(140, 130, 10, [2.0] * 100 + [20.0] * 30 + [200.0] * 10),
                               at=20.0)
    t = golden.inbound(golden.delta(before, after))
    assert t.requests == 40
    assert t.rps == pytest.approx(2.0)
    assert t.success_rate == pytest.approx(0.75)
    p50 = golden.quantile(t.latency, 0.5)
    p95 = golden.quantile(t.latency, 0.95)
    assert p50 is not None
    assert 10 < p50 <= 25
    assert p95 is not None
    assert 100 < p95 <= 250


def test_quantile_interpolates_inside_the_bucket() -> None:
    buckets = ((10.0, 0), (20.0, 100))
    assert golden.quantile(buckets, 0.5) == pytest.approx(15.0)
    assert golden.quantile(buckets, 0.99) == pytest.approx(19.9)
    assert golden.quantile(((10.0, 0),), 0.5) is None
    assert golden.quantile((), 0.5) is None


def test_a_restarted_envoy_counts_from_zero() -> None:
    before = golden.parse_stats(sidecar(500, 500, 0, [1.0] * 50), at=0.0)
    after = golden.parse_stats(sidecar(7, 7, 0, [1.0] * 7), at=5.0)
    t = golden.inbound(golden.delta(before, after))
    assert t.requests == 7
    assert t.latency[-1][1] == 7


def test_no_traffic_has_no_success_rate_nor_latency() -> None:
    s = golden.parse_stats(sidecar(5, 5, 0, [1.0] * 5), at=0.0)
    t = golden.inbound(golden.delta(s, Sample(5.0, s.counters, s.histograms)))
    assert t.requests == 0
    assert t.success_rate is None
    assert t.to_json()["latency_ms"] == {"p50": None, "p95": None, "p99": None}


def _observed(workload: str, service: str, before: dict[str, Any],
              after: dict[str, Any]) -> Observed:
    d = golden.delta(golden.parse_stats(before, 0.0), golden.parse_stats(after, 10.0))
    return Observed(Source(f"{workload}.shop", "shop", service, workload), d)


def test_outbound_edges_sum_ports_and_skip_other_stats() -> None:
    d = golden.delta(golden.parse_stats(sidecar(0, 0, 0, [], 0, 0), 0.0),
                     golden.parse_stats(sidecar(0, 0, 0, [1.0] * 20, 20, 5), 10.0))
    [(dest, t)] = golden.outbound(d).items()
    assert dest == "catalog.shop"
    assert t.requests == 20  # port 81 did not move
    assert t.classes["5xx"] == 5
    assert t.success_rate == pytest.approx(0.75)


def test_grouping_by_service_workload_edge_and_graph() -> None:
    zero = sidecar(0, 0, 0, [], 0, 0)
    seen = [
        _observed("front-0", "front", zero, sidecar(0, 0, 0, [1.0] * 30, 30, 3)),
        _observed("front-1", "front", zero, sidecar(0, 0, 0, [1.0] * 10, 10, 1)),
        _observed("catalog-0", "catalog", zero, sidecar(20, 20, 0, [3.0] * 20)),
        _observed("catalog-1", "catalog", zero, sidecar(20, 16, 4, [3.0] * 20)),
    ]
    services = {s["name"]: s for s in golden.by_service(seen)}
    assert services["catalog"]["requests"] == 40
    assert services["catalog"]["workloads"] == 2
    assert services["catalog"]["rps"] == pytest.approx(4.0)
    assert services["catalog"]["success_rate"] == pytest.approx(0.9)
    workloads = {w["name"]: w for w in golden.by_workload(seen)}
    assert workloads["catalog-1"]["success_rate"] == pytest.approx(0.8)
    edges = golden.by_edge(seen)
    assert [(e["source"]["workload"], e["destination"], e["requests"]) for e in edges] == [
        ("front-0", "catalog.shop", 30), ("front-1", "catalog.shop", 10)]
    g = golden.graph(seen)
    [edge] = g["edges"]
    assert edge["id"] == "front.shop->catalog.shop"
    assert edge["requests"] == 40
    assert edge["success_rate"] == pytest.approx(0.9)
    assert {n["id"] for n in g["nodes"]} == {"front.shop", "catalog.shop"}


def _split_caller(called: int, v1: int, v2: int, *, upstream: int = 0,
                  vhds: bool = False) -> dict[str, Any]:
    """A caller of `catalog`, whose HTTPRoute sends its requests to catalog-v1 and -v2
    (`vhds`: its outbound virtual host came by VHDS, translate/vhds.py)."""
    vhost = f"vhost.{'outbound/' if vhds else ''}catalog.shop:80.route.called."
    listener = "vhost.upstream|80||catalog.shop.route.called."
    counters = {vhost + "upstream_rq_total": called, vhost + "upstream_rq_2xx": called - 1,
                vhost + "upstream_rq_5xx": 1 if called else 0,
                listener + "upstream_rq_total": upstream, listener + "upstream_rq_2xx": upstream,
                "cluster.outbound|80||catalog-v1.shop.upstream_rq_total": v1,
                "cluster.outbound|80||catalog-v1.shop.upstream_rq_2xx": v1,
                "cluster.outbound|80||catalog-v2.shop.upstream_rq_total": v2,
                "cluster.outbound|80||catalog-v2.shop.upstream_rq_2xx": v2,
                "cluster.outbound|80||catalog.shop.upstream_rq_total": 0}
    return doc(counters, {vhost + "upstream_rq_time": [2.0] * called})


def test_a_vhds_virtual_host_counts_as_the_service_called() -> None:
    seen = _observed("front-0", "front", _split_caller(0, 0, 0, vhds=True),
                     _split_caller(10, 6, 7, vhds=True))
    assert {k: t.requests for k, t in golden.called(seen.window).items()} == {
        "catalog.shop": 10}


def test_edges_to_a_split_service_count_its_callers_and_the_split() -> None:
    """Stats of a Service whose routes send elsewhere: the edge to the Service the caller
    addressed (both listeners' virtual hosts), with the split by backend under it."""
    seen = [_observed("front-0", "front", _split_caller(0, 0, 0),
                      _split_caller(10, 6, 7, upstream=3))]
    assert {k: t.requests for k, t in golden.called(seen[0].window).items()} == {
        "catalog.shop": 13}
    backends = {"catalog.shop": ("catalog-v1.shop", "catalog-v2.shop")}
    rows = golden.by_edge(seen, backends=backends)
    assert [(r["destination"], r["routed"], r["requests"]) for r in rows] == [
        ("catalog-v1.shop", False, 6), ("catalog-v2.shop", False, 7),
        ("catalog.shop", True, 13)]
    routed = rows[-1]
    assert routed["responses"]["5xx"] == 1
    assert routed["latency_ms"]["p50"] is not None
    assert [(b["destination"], b["requests"]) for b in routed["backends"]] == [
        ("catalog-v1.shop", 6), ("catalog-v2.shop", 7)]
    # Where requests went, once: the graph leaves out the Service they addressed.
    assert {e["id"] for e in golden.graph(seen)["edges"]} == {
        "front.shop->catalog-v1.shop", "front.shop->catalog-v2.shop"}
    # No longer split (the route changed since): the called edge stays, without a split.
    [*_, stale] = golden.by_edge(seen)
    assert (stale["destination"], stale["backends"]) == ("catalog.shop", [])


def test_scraper_window_uses_the_oldest_sample_inside_it() -> None:
    scraper = Scraper(ProxyRegistry(), ScrapeOptions(interval=5, window=20))
    src = Source("c-0.shop", "shop", "c", "c-0")
    for i in range(10):  # one request a second, sampled every 5 s
        scraper.add(src, golden.parse_stats(sidecar(5 * i, 5 * i, 0, [1.0] * 5 * i), 5.0 * i))
    assert len(scraper._samples["c-0.shop"]) <= 6
    [o] = scraper.observed()
    t = golden.inbound(o.window)
    assert o.window.at == pytest.approx(20.0)
    assert t.requests == 20
    assert t.rps == pytest.approx(1.0)


def test_scrape_filter_keeps_exactly_what_golden_metrics_read() -> None:
    import re

    from gossamer.telemetry.scraper import STATS_FILTER

    keep = re.compile(STATS_FILTER)
    for name in ("http.inbound.downstream_rq_total", "http.inbound.downstream_rq_time",
                 "cluster.outbound|80||catalog.shop.upstream_rq_5xx",
                 "cluster.outbound|8080|v1|catalog.shop.upstream_rq_time",
                 "vhost.catalog.shop:80.route.called.upstream_rq_5xx",
                 "vhost.upstream|80||catalog.shop.route.called.upstream_rq_time",
                 "cluster.external|80|api.pay.example|payments.shop.upstream_rq_2xx",
                 "cluster.external|5432||ledger.bank.upstream_rq_time"):
        assert keep.search(name), name
    for name in ("cluster.outbound|80||catalog.shop.external.upstream_rq_5xx",
                 "cluster.inbound|80.upstream_rq_total", "http.outbound.downstream_rq_total",
                 "cluster.outbound|80||catalog.shop.upstream_cx_total",
                 "vhost.catalog.shop:80.route.other.upstream_rq_total"):
        assert not keep.search(name), name


async def test_scrape_round_skips_a_dead_admin_and_forgets_gone_proxies() -> None:
    import socket

    from gossamer.xds.status import NodeInfo

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    registry = ProxyRegistry()
    meta = {"namespace": "shop", "service": "c", "workload": "c-0", "admin_port": float(dead)}
    stream = registry.connect(NodeInfo("c-0.shop", "c", meta), "ads")
    registry.connect(NodeInfo("x-0.shop", "x", {"service": "x"}), "ads")  # no admin port
    scraper = Scraper(registry, ScrapeOptions(timeout=0.5))
    stale = Source("old-0.shop", "shop", "old", "old-0")
    scraper.add(stale, golden.parse_stats(sidecar(1, 1, 0, [1.0]), 0.0))
    await scraper.scrape_once()
    assert scraper.failures == 1
    assert scraper.rounds == 1
    assert scraper.observed() == []
    assert "old-0.shop" not in scraper._samples  # not connected any more: forgotten
    registry.disconnect("c-0.shop", stream)
    await scraper.scrape_once()
    assert scraper.failures == 1  # a disconnected proxy is not asked


def test_calls_to_an_external_service_are_an_edge_to_it() -> None:
    name = "cluster.external|80|api.pay.example|payments.shop.upstream_rq_"
    before = {"stats": [{"name": name + "total", "value": 0},
                        {"name": name + "2xx", "value": 0}]}
    after = {"stats": [{"name": name + "total", "value": 4},
                       {"name": name + "2xx", "value": 3},
                       {"name": name + "5xx", "value": 1}]}
    d = golden.delta(golden.parse_stats(before, 0.0), golden.parse_stats(after, 10.0))
    [(dest, t)] = golden.outbound(d).items()
    assert (dest, t.requests, t.classes["5xx"]) == ("payments.shop", 4, 1)


def test_an_ingress_gateway_is_a_caller_node_of_its_own_kind() -> None:
    """`gossamer gateway` serves no Service: the graph draws it as a gateway that calls
    the Services its routes send to, not as a Service named after its account."""
    zero = sidecar(0, 0, 0, [], 0, 0)
    d = golden.delta(golden.parse_stats(zero, 0.0),
                     golden.parse_stats(sidecar(0, 0, 0, [1.0] * 12, 12, 0), 10.0))
    seen = [Observed(Source("edge-0.shop", "shop", "edge", "edge-0", "edge"), d),
            _observed("catalog-0", "catalog", zero, sidecar(12, 12, 0, [3.0] * 12))]
    [edge] = golden.by_edge(seen)
    assert edge["source"] == {"namespace": "shop", "service": "edge", "gateway": "edge",
                              "workload": "edge-0"}
    assert (edge["destination"], edge["requests"]) == ("catalog.shop", 12)
    g = golden.graph(seen)
    nodes = {n["id"]: n for n in g["nodes"]}
    assert (nodes["edge.shop"]["kind"], nodes["edge.shop"]["gateway"]) == ("gateway", "edge")
    assert nodes["catalog.shop"]["kind"] == "service"
    assert [e["id"] for e in g["edges"]] == ["edge.shop->catalog.shop"]


def test_the_source_of_a_gateway_names_its_gateway_and_an_egress_one_is_a_service() -> None:
    from gossamer.telemetry.scraper import source_of
    from gossamer.xds.status import NodeInfo

    registry = ProxyRegistry()
    for node, meta in (("edge-0.shop", {"namespace": "shop", "service": "edge",
                                        "gateway": "edge", "inbound_port": 0}),
                       ("out-0.shop", {"namespace": "shop", "service": "out",
                                       "gateway": "out", "inbound_port": 15006})):
        registry.connect(NodeInfo(node, "c", meta), "ads")
    by_node = {p.node.id: source_of(p) for p in registry.proxies()}
    assert by_node["edge-0.shop"].gateway == "edge"
    assert by_node["out-0.shop"].gateway == ""
