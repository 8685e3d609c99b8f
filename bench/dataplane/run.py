"""Data-plane benchmark: no mesh vs a hand-written Envoy pair vs Gossamer's sidecars.

    PYTHONPATH=$PWD/src .venv/bin/python bench/dataplane/run.py [--quick]
        [--rates 500,1000,2000] [--duration 10] [--runs 3] [--out FILE]

Topology for each configuration: load generator -> (caller sidecar -> mTLS,
HTTP/2 -> callee sidecar ->) nginx, all on 127.0.0.1; `--configs ...,captured`
(root) adds the same mesh with capture, each side in its own network namespace
(configs.py), for the captured path against the explicit one in the same run. The generator (our
open-loop loadgen.c, and wrk for throughput) runs on CPU 0; everything else
(nginx, Envoys, Gossamer's control plane and agents) on CPU 1.

Per run, for each rate, each configuration in turn (none, envoy, gossamer,
interleaved so that drifts hit all alike): a fixed count of requests at that
rate, latency timed from each request's scheduled send; Envoy CPU over that
fixed count; the CPU share of the mesh's own processes (control plane,
agents) on the proxies' core; hypervisor steal on both CPUs, and a repeat
(bounded) when it was above --max-steal. Then wrk's maximum throughput per
configuration. At the end, each Envoy's peak RSS. Every comparison is a ratio
within one run; the table shows medians over runs. Writes everything to --out
(JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[2])]

from configs import CONFIGS, HOST, Target
from procstat import CpuTimes, peak_rss_kib, process_cpu_seconds, tree_cpu_seconds
from report import summarize, table

from bench.smp.dataplane import run_document
from gossamer.envoy.binary import find_envoy

HERE = Path(__file__).resolve().parent
LOAD_CPU, PROXY_CPU = 0, 1
CONNECTIONS = 16  # generator connections (loadgen and wrk alike)
ORDER = ("none", "envoy", "gossamer")


def compile_loadgen(out: Path) -> Path:
    exe = out / "loadgen"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(exe), str(HERE / "loadgen.c")],
                   check=True)
    return exe


def _pinned(argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(LOAD_CPU), *argv]


def loadgen(exe: Path, request: Path, target: Target, rate: int, count: int) -> dict[str, Any]:
    argv = _pinned([*target.prefix, str(exe), target.address, str(target.port), str(rate),
                    str(count), str(CONNECTIONS), str(request)])
    out = subprocess.run(argv, check=True, capture_output=True, text=True,
                         timeout=count / rate + 30)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def envoy_cpu(target: Target) -> float:
    return sum(process_cpu_seconds(p) for p in target.envoy_pids)


def support_cpu(target: Target) -> float:
    return sum(process_cpu_seconds(p) for p in target.support_pids)


def _ours_cpu() -> float:
    """CPU seconds of this benchmark's processes: the living tree under us plus
    the exited children we waited for (the load generator)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return tree_cpu_seconds(os.getpid()) + ru.ru_utime + ru.ru_stime


def measure_rate(exe: Path, request: Path, target: Target, rate: int, count: int,
                 limits: argparse.Namespace) -> dict[str, Any]:
    """One fixed-count run at `rate`; repeated (at most `limits.max_repeats` times)
    while either CPU lost more than `limits.max_steal` to the hypervisor or other
    tenants' processes used more than `limits.max_foreign` of a CPU. Keeps the
    least disturbed attempt and records every attempt's disturbance."""
    attempts: list[dict[str, Any]] = []
    for _ in range(1 + limits.max_repeats):
        cpu0, ours0, stat0 = envoy_cpu(target), _ours_cpu(), CpuTimes.now()
        support0 = support_cpu(target)
        res = loadgen(exe, request, target, rate, count)
        stat1 = CpuTimes.now()
        cpu, ours = envoy_cpu(target) - cpu0, _ours_cpu() - ours0
        support = support_cpu(target) - support0
        steal = stat1.steal_since(stat0)
        res["steal"] = {f"cpu{k}": round(v, 4) for k, v in steal.items()}
        res["max_steal"] = max(steal.get(LOAD_CPU, 0), steal.get(PROXY_CPU, 0))
        res["foreign_cpu"] = max(0.0, stat1.busy_seconds_since(stat0) - ours) \
            / max(stat1.seconds_since(stat0), 1e-9)
        done = max(res["completed"], 1)
        res["proxy_cpu_ms_per_1k"] = cpu * 1000 / done * 1000 if target.envoy_pids else None
        res["support_cpu_share"] = (support / max(stat1.seconds_since(stat0), 1e-9)
                                    if target.support_pids else None)
        attempts.append(res)
        if res["max_steal"] <= limits.max_steal and res["foreign_cpu"] <= limits.max_foreign:
            break
    best = min(attempts, key=lambda a: a["max_steal"] + a["foreign_cpu"])
    best["attempts"] = len(attempts)
    best["attempt_disturbance"] = [{"steal": round(a["max_steal"], 4),
                                    "foreign_cpu": round(a["foreign_cpu"], 3)}
                                   for a in attempts]
    return best


def wrk(target: Target, seconds: int) -> dict[str, Any]:
    stat0 = CpuTimes.now()
    out = subprocess.run(
        _pinned([*target.prefix, "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "-H",
                 f"Host: {HOST}", f"http://{target.address}:{target.port}/"]),
        check=True, capture_output=True, text=True, timeout=seconds + 30).stdout
    steal = CpuTimes.now().steal_since(stat0)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": float(rps.group(1)) if rps else 0.0, "non_2xx": int(bad.group(1)) if bad
            else 0, "socket_errors": errors.group(1) if errors else None,
            "steal": {f"cpu{k}": round(v, 4) for k, v in steal.items()}}


def run_all(targets: dict[str, Target], exe: Path, request: Path,
            args: argparse.Namespace) -> dict[str, Any]:
    for t in targets.values():  # connections up, TLS sessions made, pools warm
        loadgen(exe, request, t, 1000, 1000)
    runs: list[dict[str, Any]] = []
    for r in range(args.runs):
        run: dict[str, Any] = {"latency": {}, "throughput": {}}
        for rate in args.rates:
            row = run["latency"].setdefault(str(rate), {})
            for name in targets:
                row[name] = measure_rate(exe, request, targets[name], rate,
                                         rate * args.duration, args)
                _progress(r, f"{rate}/s", name, row[name])
        for name in targets:
            run["throughput"][name] = wrk(targets[name], args.wrk_duration)
            print(f"  run {r + 1} wrk {name}: {run['throughput'][name]['rps']:.0f} req/s",
                  file=sys.stderr, flush=True)
        runs.append(run)
    rss = {name: [peak_rss_kib(p) for p in t.envoy_pids] for name, t in targets.items()}
    return {"runs": runs, "peak_rss_kib": rss}


def _progress(r: int, what: str, name: str, res: dict[str, Any]) -> None:
    lat = res["latency_us"]
    print(f"  run {r + 1} {what} {name}: p50 {lat['p50']:.0f} us, p99 {lat['p99']:.0f} us, "
          f"steal {res['max_steal']:.1%}, foreign {res['foreign_cpu']:.2f} CPU "
          f"({res['attempts']} attempt(s))",
          file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip()
                  for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown")
    envoy = subprocess.run([find_envoy(), "--version"], capture_output=True,
                           text=True).stdout.strip()
    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    return {"cpus": os.cpu_count(), "model": model, "kernel": platform.release(),
            "envoy": envoy.split("version:")[-1].strip(), "nginx": nginx}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", default="500,1000,2000", help="request rates, comma-separated")
    p.add_argument("--duration", type=int, default=10, help="seconds per latency run")
    p.add_argument("--wrk-duration", type=int, default=10, help="seconds per wrk run")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--max-steal", type=float, default=0.05,
                   help="repeat a run in which either CPU lost more than this to steal")
    p.add_argument("--max-foreign", type=float, default=0.10,
                   help="repeat a run in which other tenants' processes used more than "
                        "this many CPUs (busy time not ours)")
    p.add_argument("--max-repeats", type=int, default=2)
    p.add_argument("--configs", default=",".join(ORDER))
    p.add_argument("--no-fifo", dest="fifo", action="store_false",
                   help="do not run the benchmark's processes SCHED_FIFO (default as root)")
    p.add_argument("--quick", action="store_true", help="3 runs of 3 s (a smoke test)")
    p.add_argument("--out", type=Path, default=None,
                   help="default: bench/dataplane/results/dataplane-<UTC date and time>.json")
    args = p.parse_args()
    args.rates = [int(x) for x in args.rates.split(",")]
    args.fifo = args.fifo and os.geteuid() == 0
    if args.quick:
        args.duration = args.wrk_duration = 3
        args.max_repeats = 1
    if args.runs < 1 or args.runs > 20 or args.duration > 120 or max(args.rates) > 20000:
        p.error("bounded: 1-20 runs, <= 120 s, <= 20000 req/s")
    if not {LOAD_CPU, PROXY_CPU} <= os.sched_getaffinity(0):
        p.error(f"needs CPUs {LOAD_CPU} and {PROXY_CPU}")
    # Everything started from here on (nginx, Envoys, Gossamer, the generator)
    # inherits CPU 1 and, as root, SCHED_FIFO: the machine is shared, and other
    # tenants' jobs would otherwise delay the wakeups we time by milliseconds.
    # The kernel still leaves them 5% of each CPU (sched_rt_runtime_us), and
    # below saturation we use far less than 95%.
    os.sched_setaffinity(0, {PROXY_CPU})
    if args.fifo:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))


    names = [n for n in args.configs.split(",") if n]
    with tempfile.TemporaryDirectory(prefix="gossamer-dpbench-") as tmp:
        work = Path(tmp)
        exe = compile_loadgen(work)
        request = work / "request"
        request.write_bytes(f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        started = [CONFIGS[n](work) for n in names]
        targets: dict[str, Target] = {}
        try:
            for c in started:
                print(f"starting {c.name}", file=sys.stderr, flush=True)
                targets[c.name] = c.start()
            t0 = time.time()
            data = run_all(targets, exe, request, args)
        finally:
            for c in reversed(started):
                c.stop()
    result = {"machine": machine(), "started": t0, "wall_s": round(time.time() - t0),
              "settings": {"rates": args.rates, "duration_s": args.duration,
                           "wrk_duration_s": args.wrk_duration, "runs": args.runs,
                           "connections": CONNECTIONS, "max_steal": args.max_steal,
                           "max_foreign_cpu": args.max_foreign,
                           "sched": "SCHED_FIFO 1" if args.fifo else "SCHED_OTHER",
                           "max_repeats": args.max_repeats, "envoy_concurrency": 1,
                           "cpus": {"load": LOAD_CPU, "proxies": PROXY_CPU}},
              **data}
    result["summary"] = summarize(result)
    if args.out is None:  # named for what it measured and when
        args.out = Path("bench/dataplane/results") / time.strftime(
            "dataplane-%Y-%m-%d-%H%M.json", time.gmtime(t0))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    smp = args.out.with_name(args.out.stem + ".smp.json")  # the same, as SMP (bench/smp)
    smp.write_text(json.dumps(run_document(result), indent=1) + "\n")
    print(table(result))
    print(f"\nwrote {args.out} and {smp}")


if __name__ == "__main__":
    main()
