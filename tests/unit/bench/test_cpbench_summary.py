"""The control-plane benchmark's summary (bench/controlplane/run.py): memory per
connected proxy and what the table shows of it."""

from __future__ import annotations

from typing import Any

from bench.controlplane.report import kib_per_proxy, summarize, table


def _scenario(**extra: Any) -> dict[str, Any]:
    spread = {"p50": 10.0, "p90": 20.0, "p99": 30.0, "p100": 40.0, "proxies": 12,
              "bytes_median": 900, "loadgen_lag": {"max_ms": 5.0}}
    return {"n": 5000, "s": 2000, "scoped": True, "route": [spread], "endpoint": [spread],
            "calibration_ms": 80.0, **extra}


def test_memory_per_proxy_is_the_rss_growth_over_n() -> None:
    assert kib_per_proxy(200.0, 450.0, 5000) == 51.2
    assert kib_per_proxy(200.0, 0.0, 5000) is None  # the control plane was gone


def test_summary_and_table_carry_memory_per_proxy_p90_and_calibration() -> None:
    row = summarize(_scenario(rss_before_proxies_mib=200.0, rss_synced_mib=450.0,
                              kib_per_proxy=51.2))
    assert (row["rss_0_mib"], row["rss_n_mib"], row["kib_per_proxy"]) == (200.0, 450.0, 51.2)
    assert (row["route_p90_ms"], row["ep_p90_ms"], row["calib_ms"]) == (20.0, 20.0, 80.0)
    lines = table([row]).splitlines()
    cells = dict(zip(lines[0].split(" | "), lines[2].split(" | "), strict=True))
    assert cells["KiB/proxy"] == "51.2"


def test_a_scenario_that_failed_before_sync_has_no_memory_per_proxy() -> None:
    row = summarize(_scenario(error="TimeoutError: initial sync"))
    assert row["kib_per_proxy"] is None
    assert "- |" in table([row])
