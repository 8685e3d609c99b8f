"""SMP documents of bench/dataplane's results: run.py (latency at fixed rates and
maximum throughput), ablate.py (the pair with each default added, wall clock)
and instructions.py (instructions per request under callgrind).

The measured configurations are `none` (no mesh), `envoy` (the hand-written
pair) and `gossamer` (and the ablation's variants of the pair); each becomes a
ServiceMeshConfig whose `sidecar` holds the two proxies' CPU (millicores at
that rate) and peak memory."""

from __future__ import annotations

import statistics
from typing import Any

from bench.smp import (
    MESH,
    Message,
    client,
    document,
    environment,
    mesh_config,
    profile,
    result,
)

HOST = {"Host": "backend"}
LOADGEN = "loadgen.c (bench/dataplane: open loop, timed from each request's scheduled send)"
WORKLOADS = [("nginx (the app)", 1), ("load generator", 1)]


def _mesh_of(name: str) -> str:
    return MESH if name in ("gossamer", "captured", "ondemand") else "none" if name == "none" \
        else f"envoy (hand-written pair{', ' + name if name not in ('envoy', 'base') else ''})"


def _sidecars(name: str, cpu_ms_per_1k: float | None, rate: float, rss_kib: list[int]
              ) -> Message | None:
    if name == "none":
        return None
    out: Message = {"count": 2, "rps": int(rate)}
    if cpu_ms_per_1k is not None:  # ms of CPU per 1000 requests at `rate`/s = millicores
        out["cpu_mcores"] = round(cpu_ms_per_1k * rate / 1000)
    if rss_kib:
        out["mem_mb"] = round(sum(rss_kib) * 1024 / 1e6)  # SMP: MB
    return out


def run_document(res: dict[str, Any]) -> dict[str, Any]:
    """run.py's JSON (with its `summary`) as SMP."""
    s, summary, machine = res["settings"], res["summary"], res["machine"]
    start, end = res["started"], res["started"] + res.get("wall_s", 0)
    meshes, tests, results = [], [], []
    for rate in s["rates"]:
        tid = f"latency-{rate}"
        tests.append(profile(tid, f"fixed rate {rate}/s", f"{s['duration_s']}s",
                                 [client(LOADGEN, connections=s["connections"], rps=rate,
                                         endpoint="http://127.0.0.1/", headers=HOST)],
                                 {"runs": s["runs"], "sched": s.get("sched"),
                                  "max_steal": s.get("max_steal")}))
        row = summary["latency"][str(rate)]
        for name, fig in row.items():
            if name in ("gossamer_vs_envoy", "captured_vs_gossamer"):
                continue
            mid = f"{name}-{rate}"
            support = fig.get("support_cpu_share")
            meshes.append(mesh_config(
                mid, _mesh_of(name), proxy_build=None if name == "none" else machine["envoy"],
                mtls=name != "none",
                sidecar=_sidecars(name, fig["cpu_ms_per_1k"], rate,
                                  res.get("peak_rss_kib", {}).get(name, [])),
                control_plane={"count": 1, "cpu_mcores": round(support * 1000)}
                if support is not None else None))
            # gossamer against the hand-written pair; the captured path against gossamer
            against = {"gossamer": "gossamer_vs_envoy", "captured": "captured_vs_gossamer"}
            ratios = {f"{against[name]}_{k}": v for k, v in
                      row.get(against[name], {}).items()} if name in against else {}
            qps = [r["latency"][str(rate)][name]["completed"]
                   / r["latency"][str(rate)][name]["elapsed_s"] for r in res["runs"]]
            results.append(result(
                f"{name}-{rate}", tid, mid, start=start, end=end,
                latencies_ms={q: fig[q] / 1000 for q in ("p50", "p90", "p99", "max")},
                actual_qps=statistics.median(qps),
                extra={"added_p50_ms": _ms(fig.get("added_p50")),
                       "added_p99_ms": _ms(fig.get("added_p99")),
                       "proxy_cpu_ms_per_1k_requests": fig["cpu_ms_per_1k"],
                       "steal": fig["steal"], "repeats": fig["repeats"],
                       "errors": fig["errors"],
                       **ratios}))
    tests.append(profile("throughput", "maximum throughput (wrk)",
                             f"{s['wrk_duration_s']}s",
                             [client("wrk -t1", connections=s["connections"], rps=0,
                                     endpoint="http://127.0.0.1/", headers=HOST)],
                             {"runs": s["runs"]}))
    for name, rps in summary.get("throughput_rps", {}).items():
        ratio = summary.get("throughput_ratio") if name == "gossamer" else None
        results.append(result(f"{name}-throughput", "throughput",
                              f"{name}-{s['rates'][-1]}", start=start, end=end,
                              actual_qps=rps, extra={"gossamer_vs_envoy": ratio}))
    return document(environment(machine, WORKLOADS), meshes, tests, results)


def _ms(us: float | None) -> float | None:
    return None if us is None else us / 1000


def ablate_document(rounds: list[dict[str, Any]], settings: dict[str, Any],
                    machine: dict[str, Any], start: float, end: float) -> dict[str, Any]:
    """ablate.py's rounds as SMP: medians over rounds, ratios to `base` per round."""
    rate = settings["rate"]
    tests = [profile("ablation", f"ablation at {rate}/s, then wrk",
                         f"{settings['duration']}s",
                         [client(LOADGEN, connections=16, rps=rate,
                                 endpoint="http://127.0.0.1/", headers=HOST),
                          client("wrk -t1", connections=16, rps=0,
                                 endpoint="http://127.0.0.1/", headers=HOST)],
                         {"rounds": len(rounds), "wrk_duration_s": settings["wrk_duration"]})]
    meshes, results = [], []
    for name in rounds[0]:
        def med(key: str, n: str = name) -> float:
            return statistics.median(r[n][key] for r in rounds)

        def vs_base(key: str, n: str = name) -> float | None:
            if "base" not in rounds[0]:
                return None
            return statistics.median(r[n][key] / r["base"][key] for r in rounds)
        mesh = MESH if name == "gossamer" else _mesh_of("envoy" if name == "base" else name)
        meshes.append(mesh_config(name, mesh, proxy_build=machine.get("envoy"), mtls=True,
                                  sidecar=_sidecars(name, med("cpu_ms_per_1k"), rate, [])))
        results.append(result(name, "ablation", name, start=start, end=end,
                              latencies_ms={"p50": med("p50_us") / 1000},
                              actual_qps=med("rps"),
                              extra={"proxy_cpu_ms_per_1k_requests": med("cpu_ms_per_1k"),
                                     "cpu_x_base": vs_base("cpu_ms_per_1k"),
                                     "p50_x_base": vs_base("p50_us"),
                                     "max_rps_x_base": vs_base("rps")}))
    return document(environment(machine, WORKLOADS), meshes, tests, results)


def instructions_document(res: dict[str, Any]) -> dict[str, Any]:
    """instructions.py's JSON as SMP: a result per configuration, the instruction
    counts in its labels (SMP has no field for them), no latencies (under valgrind
    they measure valgrind)."""
    s, machine = res["settings"], res["machine"]
    tests = [profile(
        "instructions", f"{s['requests']} sequential keep-alive requests after "
        f"{s['warmup']} warm-up, both sidecars under callgrind",
        f"{s['requests']} requests",
        [client("sequential.py (bench/dataplane: one keep-alive connection, one request "
                "at a time)", connections=1, rps=0, endpoint="http://127.0.0.1/",
                headers=HOST, options=s["tool"])],
        {"repeats": s["repeats"], "scrape_interval_s": s["scrape_interval_s"]})]
    meshes, results = [], []
    for name, fig in res["summary"].items():
        runs = [r for r in res["runs"] if r["config"] == name]
        meshes.append(mesh_config(name, _mesh_of(name), proxy_build=machine["envoy"],
                                  mtls=True, sidecar={"count": 2}))
        seconds = statistics.median(r["caller"]["window"]["seconds"] for r in runs)
        extra: dict[str, Any] = {"instructions_per_request": fig["total"],
                                 "x_envoy": fig["x_envoy"], "spread": fig["spread"],
                                 "runs": fig["runs"], "valgrind": machine.get("valgrind")}
        for role in ("caller", "callee"):
            for key in ("per_request", "worker_per_request", "idle_per_s", "scrape"):
                extra[f"{role}_{key if key != 'scrape' else 'scrape_instructions'}"] = \
                    fig[role][key]
        results.append(result(name, "instructions", name, start=min(r["started"] for r in runs),
                              end=max(r["ended"] for r in runs),
                              actual_qps=s["requests"] / seconds, extra=extra))
    env = environment(machine, [("staticapp.py (the app)", 1), ("sequential.py", 1)],
                      {"gossamer_commit": machine.get("commit")})
    return document(env, meshes, tests, results)
