"""The stat/top tables: aligned columns, readable units, the busiest edges first."""

from __future__ import annotations

from typing import Any

from gossamer.cli.metrics import render, stat_table, top_table


def _row(rps: float, workload: str, dest: str, p50: float | None = 3.0) -> dict[str, Any]:
    return {"kind": "edge", "source": {"namespace": "shop", "service": "front",
                                       "workload": workload},
            "destination": dest, "requests": int(rps * 60), "rps": rps,
            "success_rate": None if p50 is None else 0.995,
            "responses": {"2xx": 199, "5xx": 1},
            "latency_ms": {"p50": p50, "p95": 40.0 if p50 else None,
                           "p99": 240.0 if p50 else None}}


def test_render_pads_columns_to_the_widest_cell() -> None:
    assert render(["A", "BB"], [["xxx", "y"]]).splitlines() == ["A     BB", "xxx   y"]


def test_stat_table_units() -> None:
    [_, line] = stat_table("edge", [_row(2.5, "front-0", "catalog.shop")]).splitlines()
    assert line.split() == ["front-0.shop", "catalog.shop", "99.50%", "2.50", "3.0ms", "40ms",
                            "240ms", "150"]
    [_, idle] = stat_table("edge", [_row(0.0, "front-1", "x.shop", None)]).splitlines()
    assert idle.split()[2:7] == ["-", "0.00", "-", "-", "-"]


def test_an_edge_to_a_split_service_lists_its_backends_under_it() -> None:
    routed = dict(_row(3.0, "front-0", "catalog.shop"), routed=True,
                  backends=[_row(1.0, "front-0", "catalog-v1.shop"),
                            _row(2.0, "front-0", "catalog-v2.shop")])
    lines = stat_table("edge", [routed]).splitlines()
    assert [line.split()[:3] for line in lines[1:]] == [
        ["front-0.shop", "catalog.shop", "99.50%"], ["->", "catalog-v1.shop", "99.50%"],
        ["->", "catalog-v2.shop", "99.50%"]]
    assert [line.split()[3] for line in lines[1:]] == ["3.00", "1.00", "2.00"]
    # `top --edges` is where requests went: the backends' own edges, not the split again.
    went = [_row(1.0, "front-0", "catalog-v1.shop"), _row(2.0, "front-0", "catalog-v2.shop")]
    assert [line.split()[1] for line in top_table([routed, *went], 5).splitlines()[1:]] == [
        "catalog-v2.shop", "catalog-v1.shop"]


def test_top_orders_by_rate_and_limits() -> None:
    rows = [_row(1.0, "a", "x.shop"), _row(9.0, "b", "y.shop"), _row(5.0, "c", "z.shop")]
    lines = top_table(rows, 2).splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["b.shop", "c.shop"]
    assert lines[1].split()[-2:] == ["2xx=199", "5xx=1"]


def test_path_top_counts_the_window_and_orders_by_count() -> None:
    from gossamer.cli.top import PathTop, short_source

    agg = PathTop(window=10)
    src = "gossamer.local/ns/default/sa/frontend"
    for i in range(6):
        agg.add("catalog", {"source": src, "method": "GET", "path": f"/a?i={i}", "status": 200,
                            "latency_ms": 1.0 + i}, now=100.0 + i)
    agg.add("catalog", {"source": src, "method": "POST", "path": "/b", "status": 503,
                        "latency_ms": 9.0}, now=101.0)
    agg.add("catalog", {"source": "10.0.0.9:4000 (no mTLS)", "method": "GET", "path": "/old",
                        "status": 200}, now=80.0)  # outside the window by the time of drawing
    header, *rows = agg.table(now=105.0, limit=10).splitlines()
    assert header.split()[:5] == ["SOURCE", "DESTINATION", "METHOD", "PATH", "COUNT"]
    assert [r.split()[:8] for r in rows] == [
        ["frontend.default", "catalog", "GET", "/a", "6", "0.60", "100.00%", "1.0ms"],
        ["frontend.default", "catalog", "POST", "/b", "1", "0.10", "0.00%", "9.0ms"]]
    assert rows[0].split()[8:] == ["6.0ms", "6.0ms"]  # worst, last
    assert agg.table(now=200.0, limit=10).splitlines()[1:] == []  # all aged out
    assert short_source("10.0.0.9:4000 (no mTLS)") == "10.0.0.9:4000 (no mTLS)"
