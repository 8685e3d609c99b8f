"""The control-plane benchmark's figures: propagation percentiles over proxies, memory
per connected proxy, and the summary table (medians over runs) `run.py` prints and
`replicas.py` reuses."""

from __future__ import annotations

import math
import statistics
from typing import Any


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def spread(times: list[float | None]) -> dict[str, Any]:
    """Propagation percentiles (ms) over proxies; a missing arrival counts as never."""
    got = [t for t in times if t is not None]
    out: dict[str, Any] = {"proxies": len(times), "missing": len(times) - len(got)}
    if not got:
        return out
    inf = [t if t is not None else math.inf for t in times]
    for label, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p100", 1.0)):
        v = percentile(inf, q)
        out[label] = None if v == math.inf else round(v * 1000, 1)
    return out


def kib_per_proxy(rss_0_mib: float, rss_n_mib: float, n: int) -> float | None:
    """Control-plane memory per connected proxy: RSS with every proxy connected and
    synced minus RSS with the mesh loaded and none connected, over N (KiB). What a
    proxy costs the control plane (its stream, its snapshot, its index entries),
    comparable with Kuma's ~1 MB and Istio's ~0.75 MB per proxy."""
    return round((rss_n_mib - rss_0_mib) * 1024 / n, 1) if n and rss_n_mib else None



def _median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(values), 1) if values else None


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    """Medians over runs of each per-run figure (what a failed scenario measured)."""
    route, ep, rs = res.get("route", []), res.get("endpoint", []), res.get("restart", [])
    out: dict[str, Any] = {"N": res["n"], "S": res["s"],
                           "scoped": "yes" if res.get("scoped") else
                           "policies" if res.get("policies") else
                           "on demand" if res.get("on_demand") else "no",
                           "vhds": "no" if res.get("vhds") is False else "yes"}
    for prefix, runs in (("route", route), ("ep", ep)):
        for p in ("p50", "p90", "p99", "p100"):
            out[f"{prefix}_{p}_ms"] = _median_of(runs, p)
        out[f"{prefix}_bytes_per_proxy"] = _median_of(runs, "bytes_median")
        out[f"{prefix}_affected"] = _median_of(runs, "proxies")
    out["ep_unaffected_bytes"] = _median_of(ep, "unaffected_bytes")
    usage = res.get("cp_before_restart", {})
    out["cp_cpu_s"], out["cp_peak_rss_mib"] = usage.get("cpu_s"), usage.get("hwm_mib")
    out["rss_goal_mib"] = round(100 + 100 * res["n"] / 1024, 1)
    out["rss_0_mib"], out["rss_n_mib"] = res.get("rss_before_proxies_mib"), \
        res.get("rss_synced_mib")
    out["kib_per_proxy"] = res.get("kib_per_proxy")
    out["resync_s"] = _median_of(rs, "from_ready_s")
    out["initial_sync_s"] = res.get("initial_sync", {}).get("s")
    out["calib_ms"] = res.get("calibration_ms")
    if "churn" in res:
        c = res["churn"]
        out["churn_p50_ms"], out["churn_p99_ms"] = c.get("p50"), c.get("p99")
        out["churn_cpu_share"] = c["cp_cpu_share"]
    lags = [r["loadgen_lag"]["max_ms"] for r in route + ep]
    out["lag_max_ms"] = max(lags) if lags else None
    if "error" in res:
        out["error"] = res["error"]
    return out


COLUMNS = [
    ("N", "N"), ("S", "S"), ("scoped", "scoped"), ("vhds", "VHDS"),
    ("route_p50_ms", "route p50"), ("route_p90_ms", "p90"), ("route_p99_ms", "p99"),
    ("route_p100_ms", "p100"), ("route_affected", "route subs"),
    ("route_bytes_per_proxy", "route B/proxy"),
    ("ep_p50_ms", "EDS p50"), ("ep_p90_ms", "p90"), ("ep_p99_ms", "p99"),
    ("ep_p100_ms", "p100"), ("ep_bytes_per_proxy", "EDS B/proxy"),
    ("ep_affected", "EDS subs"), ("ep_unaffected_bytes", "B to others"),
    ("cp_peak_rss_mib", "peak RSS MiB"), ("rss_goal_mib", "goal"),
    ("rss_0_mib", "RSS 0 MiB"), ("rss_n_mib", "RSS N MiB"), ("kib_per_proxy", "KiB/proxy"),
    ("cp_cpu_s", "CPU s"),
    ("initial_sync_s", "sync s"), ("resync_s", "resync s"),
    ("churn_p50_ms", "churn p50"), ("churn_p99_ms", "churn p99"),
    ("churn_cpu_share", "churn CPU"), ("lag_max_ms", "lg lag ms"), ("calib_ms", "calib ms"),
]


def table(rows: list[dict[str, Any]]) -> str:
    header = "| " + " | ".join(h for _, h in COLUMNS) + " |"
    sep = "|" + "|".join("---:" for _ in COLUMNS) + "|"
    lines = [header, sep]
    for row in rows:
        lines.append("| " + " | ".join("-" if row.get(k) is None else str(row[k])
                                       for k, _ in COLUMNS) + " |")
    failed = [f"N={r['N']} S={r['S']} failed: {r['error']}" for r in rows if "error" in r]
    return "\n".join(lines + failed)
