"""Medians over runs, ratios within a run, and the printed table of bench/dataplane."""

from __future__ import annotations

import statistics
from typing import Any

QUANTILES = ("p50", "p90", "p99", "max")
GOALS = {"added_p50": 1.10, "added_p99": 1.10, "cpu_per_req": 1.05, "rss": 1.10}


def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _ratio(a: float | None, b: float | None) -> float | None:
    """a / b; None when b is not positive (a ratio of added latencies means
    nothing when the baseline's addition drowned in noise)."""
    return a / b if a is not None and b is not None and b > 0 else None


def _latency(runs: list[dict[str, Any]], rate: str, names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        rows = [r["latency"][rate][name] for r in runs]
        added = {q: [row["latency_us"][q] - r["latency"][rate]["none"]["latency_us"][q]
                     for row, r in zip(rows, runs, strict=True)]
                 for q in ("p50", "p99")} if "none" in names else {}
        out[name] = {
            **{q: _median([row["latency_us"][q] for row in rows]) for q in QUANTILES},
            **{f"added_{q}": _median(v) for q, v in added.items()},
            "cpu_ms_per_1k": _median([row["proxy_cpu_ms_per_1k"] for row in rows]),
            # Older results have no support CPU; None prints as "-".
            "support_cpu_share": _median([row.get("support_cpu_share") for row in rows]),
            "send_lag_p50": _median([row["send_lag_us"]["p50"] for row in rows]),
            "send_lag_p99": _median([row["send_lag_us"]["p99"] for row in rows]),
            "steal": _median([row["max_steal"] for row in rows]),
            "foreign_cpu": _median([row["foreign_cpu"] for row in rows]),
            "repeats": sum(row["attempts"] - 1 for row in rows),
            "errors": sum(row["errors"] + row["non_200"] + row["unfinished"] for row in rows),
        }
    if {"none", "envoy", "gossamer"} <= set(names):
        ratios: dict[str, list[float | None]] = {"added_p50": [], "added_p99": [],
                                                 "cpu_per_req": []}
        for r in runs:
            row = r["latency"][rate]
            base = row["none"]["latency_us"]
            for q in ("p50", "p99"):
                ratios[f"added_{q}"].append(_ratio(
                    row["gossamer"]["latency_us"][q] - base[q],
                    row["envoy"]["latency_us"][q] - base[q]))
            ratios["cpu_per_req"].append(_ratio(row["gossamer"]["proxy_cpu_ms_per_1k"],
                                                row["envoy"]["proxy_cpu_ms_per_1k"]))
        out["gossamer_vs_envoy"] = {k: _median(v) for k, v in ratios.items()}
    if {"gossamer", "captured"} <= set(names):  # the captured path against the explicit
        out["captured_vs_gossamer"] = {"cpu_per_req": _median([_ratio(
            r["latency"][rate]["captured"]["proxy_cpu_ms_per_1k"],
            r["latency"][rate]["gossamer"]["proxy_cpu_ms_per_1k"]) for r in runs])}
    return out


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    runs = result["runs"]
    names = list(runs[0]["throughput"])
    latency = {rate: _latency(runs, rate, names) for rate in runs[0]["latency"]}
    tput = {n: _median([r["throughput"][n]["rps"] for r in runs]) for n in names}
    summary: dict[str, Any] = {"latency": latency, "throughput_rps": tput}
    rss = result["peak_rss_kib"]
    if {"envoy", "gossamer"} <= set(names):
        summary["throughput_ratio"] = _median([_ratio(r["throughput"]["gossamer"]["rps"],
                                                      r["throughput"]["envoy"]["rps"])
                                               for r in runs])
        summary["rss_ratio"] = {
            side: _ratio(rss["gossamer"][i], rss["envoy"][i])
            for i, side in enumerate(("caller", "callee"))}
    return summary


def _f(v: float | None, fmt: str = "{:.0f}") -> str:
    return "-" if v is None else fmt.format(v)


def table(result: dict[str, Any]) -> str:
    s, settings = result["summary"], result["settings"]
    lines = [f"bench/dataplane: {settings['runs']} runs x {settings['duration_s']} s per rate, "
             f"{settings['connections']} connections, medians over runs (us)",
             f"{'rate':>6} {'config':<9} {'p50':>7} {'p90':>7} {'p99':>8} {'max':>8} "
             f"{'+p50':>7} {'+p99':>8} {'cpu ms/1k':>9} {'mesh cpu':>8} {'lag p99':>8} "
             f"{'steal':>6} {'other':>5} {'rep':>3}"]
    for rate, rows in s["latency"].items():
        for name, row in rows.items():
            if name in ("gossamer_vs_envoy", "captured_vs_gossamer"):
                continue
            lines.append(
                f"{rate:>6} {name:<9} {_f(row['p50']):>7} {_f(row['p90']):>7} "
                f"{_f(row['p99']):>8} {_f(row['max']):>8} {_f(row.get('added_p50')):>7} "
                f"{_f(row.get('added_p99')):>8} {_f(row['cpu_ms_per_1k'], '{:.1f}'):>9} "
                f"{_f(row['support_cpu_share'], '{:.2%}'):>8} "
                f"{_f(row['send_lag_p99']):>8} {_f(row['steal'], '{:.1%}'):>6} "
                f"{_f(row['foreign_cpu'], '{:.2f}'):>5} "
                f"{row['repeats']:>3}" + (f"  ERRORS {row['errors']}" if row["errors"] else ""))
        ratio = rows.get("gossamer_vs_envoy")
        if ratio:
            x = {k: "n/a" if v is None else f"{v:.2f}x" for k, v in ratio.items()}
            lines.append(f"{'':>6} gossamer/envoy (median of per-run ratios): added p50 "
                         f"{x['added_p50']}, added p99 {x['added_p99']}, cpu/request "
                         f"{x['cpu_per_req']}")
        captured = rows.get("captured_vs_gossamer")
        if captured and captured["cpu_per_req"] is not None:
            lines.append(f"{'':>6} captured/gossamer (median of per-run ratios): cpu/request "
                         f"{captured['cpu_per_req']:.3f}x")
    lines.append("max throughput (wrk, req/s, median): " + ", ".join(
        f"{n} {v:.0f}" for n, v in s["throughput_rps"].items() if v is not None)
        + (f"; gossamer/envoy {s['throughput_ratio']:.2f}x" if s.get("throughput_ratio")
           else ""))
    rss = result["peak_rss_kib"]
    lines.append("peak RSS (VmHWM, MiB; caller, callee sidecar): " + ", ".join(
        f"{n} {' + '.join(f'{v / 1024:.1f}' for v in vals)}" for n, vals in rss.items() if vals)
        + ("; gossamer/envoy " + ", ".join(f"{k} {v:.2f}x" for k, v in s["rss_ratio"].items()
                                           if v is not None) if s.get("rss_ratio") else ""))
    return "\n".join(lines)
