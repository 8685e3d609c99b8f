"""SMP documents of bench/controlplane's results (run.py): per scenario (N simulated
sidecars x S services), the propagation of a route change, of an endpoint change
and under churn as SMP results (latencies in ms by percentile: 50/90/99 % of the
subscribed proxies, and the last one as `max`), the control plane's peak RSS and
CPU in the scenario's ServiceMeshConfig, and the control plane's memory per connected
proxy ((RSS at N - RSS at 0) / N, KiB) as a label of the `sync` result."""

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
        scoped = {"yes": "-scoped", "policies": "-policies",
                  "on demand": "-on-demand"}.get(row.get("scoped", ""), "")
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
                                     "control_plane_rss_0_proxies_mib": row.get("rss_0_mib"),
                                     "control_plane_rss_n_proxies_mib": row.get("rss_n_mib"),
                                     "control_plane_kib_per_proxy": row.get("kib_per_proxy"),
                                     "loadgen_lag_max_ms": row.get("lag_max_ms"),
                                     "error": row.get("error")}))
    env = environment(machine or this_machine(), [("loadgen.py", 1)])
    return document(env, meshes, tests, results)


def replicas_document(res: dict[str, Any], machine: dict[str, Any] | None = None
                      ) -> dict[str, Any]:
    """replicas.py's result: per setup (one control plane on SQLite, two replicas on
    PostgreSQL) a ServiceMeshConfig with its replica count, peak RSS and CPU of the
    largest replica, and per part (all sidecars, each replica's) the route change's
    propagation as a result, with that replica's memory per connected sidecar."""
    start = res.get("started") or time.time()
    end = res.get("ended") or start
    meshes, tests, results = [], [], []
    for sid, setup in ((k, v) for k, v in res.items() if k in ("sqlite-1", "postgres-2")):
        usage = setup.get("usage") or []
        cp: Message = {"count": int(setup["replicas"]), "services": int(setup["s"]),
                       "sidecars": int(setup["n"]), "endpoints": int(setup["n"])}
        if usage:
            cp["mem_mb"] = round(max(u["hwm_mib"] for u in usage) * 1.048576)
        meshes.append(mesh_config(sid, MESH, proxy_build=None, mtls=True, control_plane=cp,
                                  sidecar={"count": int(setup["n"])},
                                  extra={"store": setup.get("store"),
                                         "scoped": setup.get("scoped", False),
                                         "mem_mb_is": "peak RSS of the largest replica"}))
        tests.append(profile(sid, f"{setup['n']} proxies x {setup['s']} services, "
                             f"{setup['replicas']} replica(s)", f"{len(setup['runs'])} runs",
                             [client(LOADGEN, connections=int(setup["n"]), rps=0,
                                     protocol="PROTOCOL_GRPC")], {"store": setup.get("store")}))
        kib = setup.get("kib_per_proxy") or []
        for part, lat in (setup.get("median") or {}).items():
            r = int(part.rsplit("-", 1)[1]) if part.startswith("replica-") else None
            extra: dict[str, Any] = {"change": "route change: apply an HTTPRoute on replica 0",
                                     "sidecars": part}
            if r is not None and r < len(usage):
                extra |= {"cpu_s": usage[r]["cpu_s"], "peak_rss_mib": usage[r]["hwm_mib"],
                          "kib_per_proxy": kib[r] if r < len(kib) else None}
            results.append(result(f"{sid}-{part}", sid, sid, start=start, end=end,
                                  latencies_ms={"p50": lat.get("p50"), "p90": lat.get("p90"),
                                                "p99": lat.get("p99"), "max": lat.get("p100")},
                                  extra=extra))
    env = environment(machine or this_machine(), [("loadgen.py", len(meshes))])
    return document(env, meshes, tests, results)


def firstrequest_document(res: dict[str, Any], machine: dict[str, Any] | None = None
                          ) -> dict[str, Any]:
    """firstrequest.py's result: one ServiceMeshConfig per mode (on demand, up front),
    and per mode the first and the second request to each Service as results."""
    start = res.get("started") or time.time()
    end = res.get("ended") or start
    meshes, tests, results = [], [], []
    for sid, label in (("on-demand", "on_demand"), ("up-front", "up_front")):
        meshes.append(mesh_config(sid, MESH, proxy_build=None, mtls=False,
                                  sidecar={"count": 2},
                                  extra={"on_demand": sid == "on-demand"}))
        tests.append(profile(sid, f"a sidecar's first request to each of {res['calls']} "
                             f"Services ({res['services']} in the mesh)",
                             f"{res['calls']} Services",
                             [client("httpx through the outbound listener", connections=1,
                                     rps=0)], {"services": res["services"]}))
        for which in ("first", "second"):
            lat = res[f"{label}_{which}"]
            results.append(result(f"{sid}-{which}", sid, sid, start=start, end=end,
                                  latencies_ms={"p50": lat["p50_ms"], "p90": lat["p90_ms"],
                                                "p99": lat["p99_ms"], "max": lat["max_ms"]},
                                  extra={"request": which,
                                         "adds_p99_ms": res["adds"]["p99_ms"]
                                         if sid == "on-demand" and which == "first" else None}))
    env = environment(machine or this_machine(), [("envoy", 2)])
    return document(env, meshes, tests, results)
