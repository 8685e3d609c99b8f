"""The stat/top tables: aligned columns, readable units, the busiest edges first."""

from __future__ import annotations

from typing import Any

from gossamer.cli.golden import render, stat_table, top_table


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


def test_top_orders_by_rate_and_limits() -> None:
    rows = [_row(1.0, "a", "x.shop"), _row(9.0, "b", "y.shop"), _row(5.0, "c", "z.shop")]
    lines = top_table(rows, 2).splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["b.shop", "c.shop"]
    assert lines[1].split()[-2:] == ["2xx=199", "5xx=1"]
