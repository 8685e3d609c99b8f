"""Tables of the instruction-count benchmark (instructions.py): medians over runs
per configuration, the spread of the runs, the ratio to the hand-written pair,
and the ablation as differences to the pair (`+X`) and to `all` (`all-X`)."""

from __future__ import annotations

import statistics
from typing import Any

ROLES = ("caller", "callee")


def _spread(values: list[float]) -> float:
    """(max - min) / median, as a fraction; 0 for one run."""
    return (max(values) - min(values)) / statistics.median(values) if len(values) > 1 else 0.0


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    by_config: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_config.setdefault(run["config"], []).append(run)
    out: dict[str, dict[str, Any]] = {}
    for name, rs in by_config.items():
        totals = [sum(r[role]["per_request"] for role in ROLES) for r in rs]
        entry: dict[str, Any] = {"runs": len(rs), "total": statistics.median(totals),
                                 "total_per_run": totals, "spread": _spread(totals)}
        for role in ROLES:
            values = [r[role]["per_request"] for r in rs]
            scrapes = [r[role]["scrape"] for r in rs if r[role]["scrape"] is not None]
            entry[role] = {
                "per_request": statistics.median(values), "per_run": values,
                "spread": _spread(values),
                "worker_per_request": statistics.median(
                    r[role]["worker_per_request"] for r in rs),
                "idle_per_s": statistics.median(r[role]["idle_per_s"] for r in rs),
                "scrape": statistics.median(scrapes) if scrapes else None,
            }
        out[name] = entry
    base = out.get("envoy")
    for entry in out.values():
        entry["x_envoy"] = entry["total"] / base["total"] if base else None
    return out


def _k(value: float) -> str:
    return f"{value / 1000:.1f}k"


def table(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [f"instructions per request per proxy (callgrind Ir, idle background subtracted): "
             f"{s['requests']} sequential keep-alive requests after {s['warmup']} warm-up, "
             f"medians of {s['repeats']} runs",
             f"{'config':<16} {'caller':>8} {'callee':>8} {'total':>8} {'x envoy':>8} "
             f"{'spread':>7}  {'idle Ir/s caller, callee':>24}  {'scrape Ir':>10}"]
    for name, e in result["summary"].items():
        ratio = f"{e['x_envoy']:.3f}" if e["x_envoy"] is not None else "-"
        scrape = e["caller"]["scrape"]
        lines.append(
            f"{name:<16} {_k(e['caller']['per_request']):>8} {_k(e['callee']['per_request']):>8}"
            f" {_k(e['total']):>8} {ratio:>8} {e['spread']:>7.2%}  "
            f"{_k(e['caller']['idle_per_s']) + ', ' + _k(e['callee']['idle_per_s']):>24}  "
            f"{_k(scrape) if scrape is not None else '-':>10}")
    lines.append("spread: (max - min) / median of the runs' totals; idle Ir/s: with no "
                 "stats scrape (scrape Ir: one scrape of the caller, as the control plane "
                 "makes it)")
    return "\n".join(lines)


def _delta(a: dict[str, Any], b: dict[str, Any]) -> str:
    parts = [a[role]["per_request"] - b[role]["per_request"] for role in ROLES]
    return (f"{parts[0] / 1000:>+8.2f}k {parts[1] / 1000:>+8.2f}k "
            f"{sum(parts) / 1000:>+8.2f}k")


def ablation_table(result: dict[str, Any]) -> str:
    s = result["summary"]
    lines = ["ablation: instructions per request, difference per proxy (caller, callee, both)",
             f"{'variant':<16} {'caller':>9} {'callee':>9} {'both':>9}   against"]
    for name, e in s.items():
        if (name.startswith("envoy+") and "envoy" in s) or (name == "all" and "envoy" in s):
            lines.append(f"{name:<16} {_delta(e, s['envoy'])}   envoy (the pair)")
    for name, e in s.items():
        if name.startswith("all-") and "all" in s:
            lines.append(f"{name:<16} {_delta(s['all'], e)}   {name} (what removing it saves)")
    for name, e in s.items():
        if (name.startswith("gw+") or name == "gwall") and "envoy" in s:
            lines.append(f"{name:<16} {_delta(e, s['envoy'])}   envoy (the pair)")
    for name, e in s.items():
        if name.startswith("gwall-") and "gwall" in s:
            lines.append(f"{name:<16} {_delta(s['gwall'], e)}   {name} (what removing it saves)")
    if "ingress" in s and "gwall" in s:
        lines.append(f"{'ingress':<16} {_delta(s['ingress'], s['gwall'])}   gwall (what the "
                     "static variants miss; the callee is Gossamer's sidecar in ingress)")
    if "gossamer" in s and "all" in s:
        lines.append(f"{'gossamer':<16} {_delta(s['gossamer'], s['all'])}   all (what the "
                     "static variants miss)")
    return "\n".join(lines)
