"""SMP documents of bench/controlplane's results (run.py): per scenario (N simulated
sidecars x S services), the propagation of a route change, of an endpoint change
and under churn as SMP results (latencies in ms by percentile: 50/90/99 % of the
subscribed proxies, and the last one as `max`), the control plane's peak RSS and
CPU in the scenario's ServiceMeshConfig."""

from __future__ import annotations

import time
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
    this_machine,
)

LOADGEN = "loadgen.py (bench/controlplane: simulated sidecars on delta ADS)"
CHANGES = (("route", "route change: apply an HTTPRoute"),
           ("ep", "endpoint change: a workload turns Unhealthy"))


def _started(text: str) -> float:
    """run.py's `started` (YYYYmmdd-HHMMSS, local time) as epoch seconds."""
    try:
        return time.mktime(time.strptime(text, "%Y%m%d-%H%M%S"))
    except (TypeError, ValueError):
        return time.time()


def controlplane_document(res: dict[str, Any], machine: dict[str, Any] | None = None
                          ) -> dict[str, Any]:
    start = _started(res.get("started", ""))
    end = start + sum(s.get("wall_s", 0) for s in res.get("scenarios", []))
    meshes, tests, results = [], [], []
    for row in res["summary"]:
        scoped = {"yes": "-scoped", "policies": "-policies"}.get(row.get("scoped", ""), "")
        sid = f"{row['N']}x{row['S']}{scoped}"
        cp: Message = {"count": 1, "services": int(row["S"]), "sidecars": int(row["N"]),
                       "endpoints": int(row["N"])}
        if row.get("cp_peak_rss_mib") is not None:
            cp["mem_mb"] = round(row["cp_peak_rss_mib"] * 1.048576)
        if row.get("churn_cpu_share") is not None:
            cp["cpu_mcores"] = round(row["churn_cpu_share"] * 1000)
        meshes.append(mesh_config(sid, MESH, proxy_build=None, mtls=True, control_plane=cp,
                                  sidecar={"count": int(row["N"])},
                                  extra={"scoped": row.get("scoped"),
                                         "cpu_mcores_is": "control plane during churn"}))
        tests.append(profile(sid, f"{row['N']} proxies x {row['S']} services",
                                 f"{res.get('runs', 3)} runs",
                                 [client(LOADGEN, connections=int(row["N"]), rps=0,
                                         protocol="PROTOCOL_GRPC")],
                                 {"runs": res.get("runs")}))
        for key, what in CHANGES:
            lat = {"p50": row.get(f"{key}_p50_ms"), "p90": row.get(f"{key}_p90_ms"),
                   "p99": row.get(f"{key}_p99_ms"), "max": row.get(f"{key}_p100_ms")}
            results.append(result(f"{sid}-{key}", sid, sid, start=start, end=end,
                                  latencies_ms=lat,
                                  extra={"change": what,
                                         "bytes_per_proxy": row.get(f"{key}_bytes_per_proxy"),
                                         "affected_proxies": row.get(f"{key}_affected"),
                                         "bytes_to_unaffected": row.get("ep_unaffected_bytes")
                                         if key == "ep" else None}))
        if row.get("churn_p50_ms") is not None:
            results.append(result(f"{sid}-churn", sid, sid, start=start, end=end,
                                  latencies_ms={"p50": row["churn_p50_ms"],
                                                "p99": row["churn_p99_ms"]},
                                  extra={"change": "churn: 10 endpoint changes a second"}))
        results.append(result(f"{sid}-sync", sid, sid, start=start, end=end,
                              extra={"initial_sync_s": row.get("initial_sync_s"),
                                     "resync_after_restart_s": row.get("resync_s"),
                                     "control_plane_cpu_s": row.get("cp_cpu_s"),
                                     "control_plane_peak_rss_mib": row.get("cp_peak_rss_mib"),
                                     "loadgen_lag_max_ms": row.get("lag_max_ms"),
                                     "error": row.get("error")}))
    env = environment(machine or this_machine(), [("loadgen.py", 1)])
    return document(env, meshes, tests, results)
