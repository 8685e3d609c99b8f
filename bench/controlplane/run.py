"""Control-plane benchmark: N simulated sidecars on delta ADS against S services.

    cd <repo> && PYTHONPATH=$PWD/src .venv/bin/python -m bench.controlplane.run [--quick]
        [--scenarios 100x100,1000x1000] [--runs 3] [--churn-seconds 60] [--out FILE]
        [--scoped | --policies | --on-demand] [--no-vhds]

For each scenario (N proxies x S services) it starts `gossamer control-plane` as
its own process on a fresh state dir, creates the services and registers their
workloads through the HTTP API (join tokens, the agent's documents), starts the
load generator (`loadgen.py`, its own process) with N sidecars, waits for all of
them to sync, then measures:

- route change: `apply` of an HTTPRoute -> each subscribed proxy has received the
  changed route configs (50/90/99/100 % of them), bytes per proxy;
- endpoint change: a workload's heartbeat turns it Unhealthy -> each proxy that
  subscribes to the service's endpoints has the new assignment; bytes to the
  affected proxies and to all the others;
- churn: 10 endpoint changes per second for --churn-seconds, latency over every
  (change, subscribed proxy) pair, control-plane CPU share;
- restart: SIGTERM the control plane, start it again on the same store and
  ports, time until the control plane reports every proxy connected and synced;
- control-plane CPU seconds and peak RSS (VmHWM) from /proc, and the load
  generator's own event-loop lag, so a saturated load generator is visible.

Route/endpoint/restart figures are medians over --runs runs (>= 3); each run's
percentiles are over proxies. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from bench.controlplane import mesh
from bench.controlplane.procs import ControlPlaneProcess, LoadGenProcess, LoadGens
from bench.controlplane.report import kib_per_proxy, spread, summarize, table
from bench.smp.controlplane import controlplane_document
from prometheus_client.parser import text_string_to_metric_families

from gossamer.xds.types import ENDPOINT

DEFAULT_SCENARIOS = "100x100,100x1000,1000x100,1000x1000"
WAIT_CHANGE = 15.0  # seconds a change may take to reach every proxy
QUIET = 0.5  # seconds after the last arrival that still count towards bytes


class Bench:
    def __init__(self, layout: mesh.Layout, workdir: Path, procs: int,
                 scoped: bool = False, policies: bool = False,
                 profile: Path | None = None, on_demand: bool = False) -> None:
        self.layout = layout
        self.profile = profile
        self.scoped, self.policies, self.on_demand = scoped, policies, on_demand
        self.workdir = workdir
        self.procs = procs
        self.cp = ControlPlaneProcess(workdir / "state")
        self.gens: LoadGens | None = None
        self.api: httpx.AsyncClient | None = None
        self.tokens: dict[int, str] = {}
        self.health: dict[int, str] = {}
        self.results: dict[str, Any] = {"n": layout.n, "s": layout.s,
                                        "workloads": layout.workloads,
                                        "upstreams_per_proxy": mesh.UPSTREAMS,
                                        "scoped": scoped, "policies": policies,
                                        "on_demand": on_demand,
                                        "vhds": layout.vhds}

    # -- setup ------------------------------------------------------------------------

    async def _call(self, method: str, path: str, body: Any = None,
                    token: str | None = None) -> Any:
        assert self.api is not None
        headers = {"Authorization": f"Bearer {token}"} if token else None
        resp = await self.api.request(method, path, json=body, headers=headers)
        resp.raise_for_status()
        return resp.json()

    async def _bounded(self, coros: list[Any], limit: int = 16) -> list[Any]:
        sem = asyncio.Semaphore(limit)

        async def one(c: Any) -> Any:
            async with sem:
                return await c
        return await asyncio.gather(*(one(c) for c in coros))

    async def start_control_plane(self) -> None:
        (self.workdir / "state").mkdir(parents=True, exist_ok=True)
        await self.cp.start()
        admin = (self.workdir / "state" / "admin-token").read_text().strip()
        self.api = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.cp.api_port}",
                                     headers={"Authorization": f"Bearer {admin}"},
                                     timeout=120.0, trust_env=False)

    async def populate(self) -> None:
        """Services, join tokens, workloads registered and reported healthy (agent path)."""
        lay = self.layout
        t0 = time.monotonic()
        await self._bounded([self._call("POST", "/api/v1/apply", mesh.service_doc(i))
                             for i in range(lay.s)])
        if self.scoped:
            await self._bounded([self._call("POST", "/api/v1/apply", mesh.sidecar_doc(i, lay.s))
                                 for i in range(lay.s)])
        if self.policies or self.on_demand:
            await self._call("POST", "/api/v1/apply",
                             mesh.mesh_doc(self.policies, self.on_demand))
        if self.policies:
            await self._bounded([self._call("POST", "/api/v1/apply", mesh.allow_doc(i, lay.s))
                                 for i in range(lay.s)])
        made = await self._bounded([self._call("POST", "/api/v1/tokens", {
            "scope": "join", "service": mesh.service_name(i), "namespace": mesh.NAMESPACE})
            for i in range(lay.s)])
        self.tokens = {i: m["token"] for i, m in enumerate(made)}
        await self._bounded([self._call("POST", "/api/v1/apply", lay.workload_doc(j),
                                        token=self.tokens[lay.service_of(j)])
                             for j in range(lay.workloads)])
        await self._bounded([self._heartbeat(j, "Healthy") for j in range(lay.workloads)])
        self.results["populate_s"] = round(time.monotonic() - t0, 2)

    async def _heartbeat(self, j: int, health: str) -> None:
        lay = self.layout
        name = lay.workload_name(j)
        await self._call("POST", f"/api/v1/workloads/{mesh.NAMESPACE}/{name}/heartbeat",
                         {"health": health}, token=self.tokens[lay.service_of(j)])
        self.health[j] = health

    async def start_proxies(self, timeout: float) -> None:
        lay = self.layout
        ca = await self._call("GET", "/api/v1/ca")
        ca_file = self.workdir / "ca.pem"
        ca_file.write_text(ca["bundle_pem"])
        gens = []
        for g in range(self.procs):
            proxies = [lay.proxy(j, self.tokens[lay.service_of(j)], self.on_demand)
                       for j in range(g, lay.n, self.procs)]
            pfile = self.workdir / f"proxies-{g}.json"
            pfile.write_text(json.dumps(proxies))
            gdir = self.workdir / f"loadgen-{g}"
            gdir.mkdir(exist_ok=True)
            gens.append(LoadGenProcess(pfile, f"127.0.0.1:{self.cp.xds_port}", ca_file, gdir))
        self.gens = LoadGens(gens)
        before = self.cp.usage()
        t0 = time.monotonic()
        await asyncio.gather(*(g.start() for g in gens))
        status = await self._wait(lambda s: s["synced"] >= lay.n, timeout, "initial sync")
        after = self.cp.usage()
        self.results["initial_sync"] = {
            "s": round(status["synced_last"] - t0, 2), "cp_cpu_s": round(
                after["cpu_s"] - before["cpu_s"], 2),
            "bytes_per_proxy": round(status["bytes"] / lay.n),
            "eds_names_per_proxy": round(status["eds_names"] / lay.n, 1)}
        self.results["rss_before_proxies_mib"] = round(before["rss_mib"], 1)
        self.results["rss_synced_mib"] = round(after["rss_mib"], 1)
        self.results["kib_per_proxy"] = kib_per_proxy(before["rss_mib"], after["rss_mib"],
                                                      lay.n)

    async def _wait(self, done: Any, timeout: float, what: str) -> dict[str, Any]:
        assert self.gens is not None
        deadline = time.monotonic() + timeout
        while True:
            status = await self.gens.status()
            if done(status):
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not done after {timeout}s: {status}")
            await asyncio.sleep(0.2)

    # -- one change ----------------------------------------------------------------------

    async def _settle(self, queries: list[list[Any]]) -> list[dict[int, float | None]]:
        """Poll until every subscribed proxy has an arrival for its query, or time out."""
        assert self.gens is not None
        deadline = time.monotonic() + WAIT_CHANGE
        while True:
            got = await self.gens.arrivals(queries)
            if all(t is not None for times in got for t in times.values()) or \
                    time.monotonic() > deadline:
                return got
            await asyncio.sleep(0.05)

    async def _measure(self, kind: str, queries_for: Any, act: Any) -> dict[str, Any]:
        """Start recording, act (at t0), wait for arrivals, then bytes and lag.

        A proxy is affected if it subscribes to any queried name; its latency is
        its first arrival of any of them. Bytes count every response in the
        window, so anything sent to an unaffected proxy shows up too.
        """
        assert self.gens is not None
        await self.gens.record(True)
        await asyncio.sleep(0.2)
        cpu0 = self.cp.usage()["cpu_s"]
        t0 = time.monotonic()
        await act()
        api_ms = (time.monotonic() - t0) * 1000
        arrivals = await self._settle(queries_for(t0))
        per_proxy: dict[int, float | None] = {}
        for times in arrivals:
            for j, t in times.items():
                old = per_proxy.get(j)
                per_proxy[j] = t if old is None else (old if t is None else min(old, t))
        await asyncio.sleep(QUIET)
        t1 = time.monotonic()
        sizes = await self.gens.bytes_between(t0, t1)
        affected = sorted(sizes[j] for j in per_proxy)
        others = [n for j, n in sizes.items() if j not in per_proxy]
        await self.gens.record(False)
        return {"kind": kind, "api_ms": round(api_ms, 1), **spread(list(per_proxy.values())),
                "bytes_median": statistics.median(affected) if affected else 0,
                "bytes_max": max(affected, default=0),
                "unaffected_proxies": len(others),
                "unaffected_receivers": sum(1 for n in others if n),
                "unaffected_bytes": sum(others),
                "cp_cpu_s": round(self.cp.usage()["cpu_s"] - cpu0, 3),
                "loadgen_lag": await self.gens.lag(t0, t1)}

    async def route_change(self, run: int) -> dict[str, Any]:
        lay = self.layout
        i = (run * 37 + 5) % lay.s

        only = [lay.callers_of(i)] if self.scoped or self.policies else []

        def queries(t0: float) -> list[list[Any]]:
            return [[type_url, name, t0, *only]
                    for type_url, name in mesh.route_names(i, lay.vhds)]

        async def act() -> None:
            await self._call("POST", "/api/v1/apply", mesh.route_doc(i, lay.s, 60 + run))
        return await self._measure("route", queries, act)

    async def endpoint_change(self, run: int) -> dict[str, Any]:
        lay = self.layout
        j = (run * 53 + 11) % lay.workloads  # a workload, hence one service's endpoints
        i = lay.service_of(j)
        health = "Unhealthy" if self.health.get(j) != "Unhealthy" else "Healthy"

        def queries(t0: float) -> list[list[Any]]:
            return [[ENDPOINT, mesh.eds_name(i), t0]]

        return await self._measure("endpoint", queries, lambda: self._heartbeat(j, health))

    # -- churn, restart ----------------------------------------------------------------------

    async def churn(self, seconds: float, rate: float = 10.0) -> dict[str, Any]:
        assert self.gens is not None
        lay = self.layout
        rng = random.Random(7)
        await self.gens.record(True)
        await asyncio.sleep(0.2)
        before = self.cp.usage()
        t_start = time.monotonic()
        changes: list[list[Any]] = []
        tasks: list[asyncio.Task[bool]] = []
        sem = asyncio.Semaphore(32)
        count = int(seconds * rate)

        async def flip(j: int, health: str) -> bool:
            """False if the API refused or dropped the heartbeat (counted, not measured)."""
            async with sem:
                try:
                    await self._heartbeat(j, health)
                except httpx.HTTPError:
                    self.health[j] = "Healthy" if health == "Unhealthy" else "Unhealthy"
                    return False
                return True

        # Workloads in a shuffled cycle: one is flipped again only after all others,
        # so a flip is never undone before it was pushed (that would push nothing).
        order = list(range(lay.workloads))
        rng.shuffle(order)
        for k in range(count):
            await asyncio.sleep(max(0.0, t_start + k / rate - time.monotonic()))
            j = order[k % len(order)]
            health = "Unhealthy" if self.health.get(j) != "Unhealthy" else "Healthy"
            self.health[j] = health
            changes.append([ENDPOINT, mesh.eds_name(lay.service_of(j)), time.monotonic()])
            tasks.append(asyncio.create_task(flip(j, health)))
        done = await asyncio.gather(*tasks)
        t_end = time.monotonic()
        after = self.cp.usage()
        await asyncio.sleep(3.0)
        arrivals = await self.gens.arrivals([c for c, ok in zip(changes, done, strict=True)
                                             if ok])
        flat = [t for ts in arrivals for t in ts.values()]
        sizes = list((await self.gens.bytes_between(t_start, time.monotonic())).values())
        lag = await self.gens.lag(t_start, t_end)
        await self.gens.record(False)
        wall = t_end - t_start
        return {"changes": count, "failed_requests": done.count(False),
                "seconds": round(wall, 1), **spread(flat),
                "cp_cpu_share": round((after["cpu_s"] - before["cpu_s"]) / wall, 3),
                "bytes_per_proxy_per_s": round(statistics.median(sizes) / wall, 1),
                "loadgen_lag": lag, "hwm_mib": round(after["hwm_mib"], 1)}

    async def restart(self) -> dict[str, Any]:
        """Stop the control plane (SIGTERM), start it on the same store and ports, and
        time until it reports every proxy connected and on its latest config."""
        lay = self.layout
        assert self.gens is not None
        # Envoy resets its retry backoff only when a message arrives, and after a
        # restart with unchanged config none does: without this, each restart
        # would start from the previous one's backoff.
        await self.gens.reset_backoff()
        await self.cp.stop()
        old = self.cp
        self.cp = ControlPlaneProcess(old.state_dir, old.xds_port, old.api_port)
        await self.cp.start()
        deadline = time.monotonic() + 60.0
        synced = 0
        while time.monotonic() < deadline:
            try:
                proxies = await self._call("GET", "/api/v1/proxies")
            except httpx.HTTPError:
                proxies = []
            synced = sum(1 for p in proxies if p["connected"] and p["synced"])
            if synced >= lay.n:
                break
            await asyncio.sleep(0.25)
        done = time.monotonic()
        return {"from_spawn_s": round(done - self.cp.spawned_at, 2),
                "from_ready_s": round(done - self.cp.ready_at, 2),
                "startup_s": round(self.cp.ready_at - self.cp.spawned_at, 2),
                "synced": synced, "rss_mib": round(self.cp.usage()["rss_mib"], 1)}

    async def gc_pauses(self) -> dict[str, dict[str, float]]:
        """The control plane's GC pauses so far, by generation (its /metrics): how
        many, their total, and how many took over 50 ms."""
        assert self.api is not None
        text = (await self.api.get("/metrics")).text
        out: dict[str, dict[str, float]] = {}
        for family in text_string_to_metric_families(text):
            if family.name != "gossamer_gc_pause_seconds":
                continue
            for sample in family.samples:
                row = out.setdefault(sample.labels["generation"], {})
                if sample.name.endswith("_bucket"):
                    if sample.labels.get("le") == "0.05":
                        row["le_50ms"] = sample.value
                elif sample.name.endswith(("_count", "_sum")):
                    row[sample.name.rsplit("_", 1)[1]] = round(sample.value, 3)
        for row in out.values():
            row["over_50ms"] = row.get("count", 0) - row.pop("le_50ms", 0)
        return out

    async def run(self, runs: int, churn_s: float) -> None:
        """Every measurement in order; results land in `self.results` as they come,
        so a failure part-way keeps what was measured."""
        res, n = self.results, self.layout.n
        await self.start_control_plane()
        await self.populate()
        await asyncio.sleep(1.0)  # let the last rebuild land before proxies connect
        await self.start_proxies(timeout=120 + n * 0.2)
        spy = await self._start_profile()
        try:
            for kind, measure in (("route", self.route_change),
                                  ("endpoint", self.endpoint_change)):
                res[kind] = []
                for r in range(runs):
                    res[kind].append(await measure(r))
        finally:
            await self._stop_profile(spy)
        if churn_s > 0:
            res["churn"] = await self.churn(churn_s)
        res["cp_before_restart"] = {k: round(v, 2) for k, v in self.cp.usage().items()}
        res["gc_pauses"] = await self.gc_pauses()
        assert self.gens is not None
        res["loadgen"] = {k: round(v, 1) for k, v in self.gens.usage().items()}
        res["restart"] = []
        for _ in range(runs):
            res["restart"].append(await self.restart())

    async def _start_profile(self) -> asyncio.subprocess.Process | None:
        """py-spy on the control plane during the route and endpoint changes only
        (not set-up, churn or restarts): where a push's CPU goes."""
        if self.profile is None:
            return None
        spy = Path(sys.executable).parent / "py-spy"
        proc = await asyncio.create_subprocess_exec(
            str(spy), "record", "--pid", str(self.cp.pid), "--rate", "250", "--nonblocking",
            "--format", "raw", "--output", str(self.profile),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        await asyncio.sleep(1.0)  # py-spy attaches
        return proc

    @staticmethod
    async def _stop_profile(proc: asyncio.subprocess.Process | None) -> None:
        if proc is None:
            return
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            await asyncio.wait_for(proc.wait(), 30.0)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def close(self) -> None:
        if self.gens is not None:
            await self.gens.stop()
        if self.api is not None:
            await self.api.aclose()
        await self.cp.stop()


def _calibrate() -> float:
    """A fixed CPU-bound loop (ms): how fast this noisy machine is right now."""
    t0 = time.perf_counter()
    sum(i * i for i in range(1_000_000))
    return round((time.perf_counter() - t0) * 1000, 1)


def _log_tail(path: Path, lines: int = 30) -> list[str]:
    """The end of a log that goes away with the scenario's temporary directory."""
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


async def scenario(n: int, s: int, runs: int, churn_s: float, procs: int,
                   scoped: bool = False, vhds: bool = True,
                   policies: bool = False, profile: Path | None = None,
                   on_demand: bool = False) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gossamer-cpbench-") as tmp:
        bench = Bench(mesh.Layout(n, s, vhds), Path(tmp), procs, scoped, policies,
                      profile.with_name(f"{profile.stem}-{n}x{s}{profile.suffix}")
                      if profile is not None else None, on_demand)
        res = bench.results
        res["calibration_ms"] = _calibrate()
        try:
            await bench.run(runs, churn_s)
        except Exception as exc:  # keep what was measured; say what failed
            res["error"] = f"{type(exc).__name__}: {exc}"[:300]
            res["control_plane_log_tail"] = _log_tail(Path(tmp) / "state" / "control-plane.log")
        finally:
            await bench.close()
    return res


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM like Ctrl-C: asyncio.run cancels the scenario and its finally blocks
    stop the control plane and load generators (their own process groups)."""
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenarios", default=DEFAULT_SCENARIOS,
                   help="comma-separated NxS (proxies x services)")
    p.add_argument("--runs", type=int, default=3, help="runs per measurement (>= 3)")
    p.add_argument("--churn-seconds", type=float, default=60.0)
    p.add_argument("--procs", type=int, default=1, help="load generator processes")
    p.add_argument("--quick", action="store_true", help="smoke run: 20x20, 5 s of churn")
    p.add_argument("--scoped", action="store_true",
                   help="a Sidecar per service scopes its proxies to their upstreams")
    p.add_argument("--policies", action="store_true",
                   help="no Sidecar: an ALLOW AuthorizationPolicy per service names its "
                        "callers, and the control plane infers the scopes from them")
    p.add_argument("--on-demand", action="store_true",
                   help="no Sidecar: the Mesh's onDemand, each sidecar asks for the "
                        "virtual hosts of the services it calls (translate/ondemand.py)")
    p.add_argument("--no-vhds", action="store_true",
                   help="sidecars as --xds-mode delta-rds: the whole outbound route config")
    p.add_argument("--out", type=Path, default=None, help="JSON output file")
    p.add_argument("--profile", type=Path, default=None,
                   help="py-spy raw (collapsed) stacks of the control plane during the "
                        "route and endpoint changes: FILE becomes FILE-NxS per scenario")
    args = p.parse_args()
    if args.quick:
        args.scenarios, args.churn_seconds = "20x20", 5.0
    runs = max(3, args.runs)
    scenarios = [tuple(int(x) for x in sc.lower().split("x")) for sc in args.scenarios.split(",")]
    results, rows = [], []
    t_started = time.time()
    started = time.strftime("%Y%m%d-%H%M%S", time.localtime(t_started))
    for n, s in scenarios:
        print(f"scenario N={n} S={s} ...", file=sys.stderr, flush=True)
        res = asyncio.run(scenario(n, s, runs, args.churn_seconds, args.procs, args.scoped,
                                   not args.no_vhds, args.policies, args.profile,
                                   args.on_demand))
        results.append(res)
        rows.append(summarize(res))
        print(table(rows[-1:]), file=sys.stderr, flush=True)
    out = args.out or Path(__file__).parent / "results" / time.strftime(
        "controlplane-%Y-%m-%d-%H%M.json", time.gmtime(t_started))
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {"started": started, "runs": runs, "summary": rows, "scenarios": results}
    out.write_text(json.dumps(document, indent=1))
    smp = out.with_name(out.stem + ".smp.json")  # the same, as SMP (bench/smp)
    smp.write_text(json.dumps(controlplane_document(document), indent=1) + "\n")
    print(table(rows))
    print(f"\nJSON: {out}, SMP: {smp}")


if __name__ == "__main__":
    main()
