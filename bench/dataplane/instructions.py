"""Instructions per request per proxy: the data-plane benchmark that resolves 1 %.

    PYTHONPATH=$PWD/src .venv/bin/python bench/dataplane/instructions.py \
        [--configs envoy,gossamer] [--requests 2000] [--warmup 500] [--repeats 3]
        [--ablation] [--captured] [--out FILE]

Each configuration's two Envoys (caller and callee sidecar; irconfigs.py) run
under valgrind's callgrind, which counts the instructions they execute (`Ir`):
the same for the same binary, config and requests, whatever else the machine
does, where CPU time here varies by 10-30 % from run to run. Per run (a fresh
start of the configuration):

1. instrumentation on, `--warmup` requests (connections, TLS, pools, lazily
   made stats and tables);
2. counters zeroed, `--requests` sequential requests on one keep-alive
   connection (sequential.py), counters dumped: Ir over the window, T seconds;
3. counters zeroed, T seconds with no request, dumped: the background (timers:
   stats flushes, watchdogs, xDS keepalives) that runs per second of wall time,
   which under valgrind is ~50x longer per request than natively;
4. per proxy: (Ir of the window - background Ir scaled to T) / requests;
5. the Ir of one stats scrape as the control plane makes it (`--scrapes`).

Gossamer's control plane scrapes every sidecar's stats every 5 s by default;
here its interval is stretched (`--scrape-interval`, default 3600 s) so no
scrape falls in a window: a scrape is work per second, not per request, and is
counted on its own (step 5; idle Ir/s = background + scrape / 5 s).

Prints the table (medians of --repeats runs, the spread max-min over median),
with --ablation the pair with each of Gossamer's defaults added and all of them
less each one, and writes the JSON (every dump, per thread) and its SMP
document (bench/smp) beside it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent.parent)]

import callgrind  # noqa: E402
from bench.smp.dataplane import instructions_document  # noqa: E402
from irconfigs import Gossamer, Ingress, OnDemandGossamer, Pair, Started  # noqa: E402
from irgateway import GW_ADDED, GW_REMOVED  # noqa: E402
from irreport import ablation_table, summarize, table  # noqa: E402
from irvariants import ADDED, REMOVED  # noqa: E402

from gossamer.envoy.binary import find_envoy  # noqa: E402
from gossamer.telemetry.scraper import STATS_TARGET  # noqa: E402


class Client:
    """sequential.py, running (in the configuration's network namespace) for one start."""

    def __init__(self, started: Started) -> None:
        self.proc = subprocess.Popen(
            [*started.client_prefix, sys.executable, str(HERE / "sequential.py"),
             started.host, str(started.port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)

    def send(self, count: int) -> float:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{count}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "ok":
            raise RuntimeError(f"client: {' '.join(line) or 'exited'}")
        return float(line[2])

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _window(started: Started, action: Any) -> tuple[dict[str, callgrind.Dump], dict[str, float]]:
    """Zero both Envoys, run `action`, dump both: their counts and, per Envoy, the
    seconds between its zeroing and its dump."""
    zeroed = {}
    for role, pid in started.pids.items():
        callgrind.zero(pid)
        zeroed[role] = time.monotonic()
    action()
    dumps, seconds = {}, {}
    for role, pid in started.pids.items():
        seconds[role] = time.monotonic() - zeroed[role]
        dumps[role] = callgrind.dump(pid, started.out_dir)
    return dumps, seconds


def _scrape(started: Started, role: str) -> None:
    url = f"http://127.0.0.1:{started.admin_ports[role]}{STATS_TARGET}"
    subprocess.run([*started.admin_prefix.get(role, []), "curl", "-sS", "-o", "/dev/null",
                    "--max-time", "120", url], check=True, timeout=150)


def measure(started: Started, args: argparse.Namespace) -> dict[str, Any]:
    for pid in started.pids.values():
        callgrind.instrument(pid)
    client = Client(started)
    try:
        client.send(args.warmup)
        box: dict[str, float] = {}
        busy, busy_s = _window(started, lambda: box.update(s=client.send(args.requests)))
        idle, idle_s = _window(started, lambda: time.sleep(max(busy_s.values())))
    finally:
        client.close()
    out: dict[str, Any] = {"requests": args.requests, "client_seconds": round(box["s"], 3)}
    for role in started.pids:
        scale = busy_s[role] / idle_s[role]
        per_request = (busy[role].total - idle[role].total * scale) / args.requests
        worker = max(busy[role].per_thread, key=lambda t: busy[role].per_thread[t])
        worker_rq = (busy[role].per_thread[worker]
                     - idle[role].per_thread.get(worker, 0) * scale) / args.requests
        scrapes = []
        for _ in range(args.scrapes):
            dump, secs = _window(started, lambda r=role: _scrape(started, r))
            scrapes.append(dump[role].total - idle[role].total * secs[role] / idle_s[role])
        out[role] = {
            "per_request": round(per_request, 1),
            "worker_per_request": round(worker_rq, 1),
            "idle_per_s": round(idle[role].total / idle_s[role]),
            "scrape": round(statistics.median(scrapes)) if scrapes else None,
            "window": {"seconds": round(busy_s[role], 3), "threads": busy[role].per_thread},
            "idle": {"seconds": round(idle_s[role], 3), "threads": idle[role].per_thread},
        }
    return out


def machine() -> dict[str, Any]:
    """What the counts depend on: the Envoy binary and valgrind (not the CPU's speed)."""
    model = next((line.split(":", 1)[1].strip()
                  for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown")
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])

    def out(argv: list[str]) -> str:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        return (done.stdout or done.stderr).strip()
    envoy = out([find_envoy(), "--version"]).split("version:")[-1].strip()
    commit = out(["git", "-C", str(HERE), "rev-parse", "HEAD"])
    return {"cpus": os.cpu_count(), "model": model, "kernel": platform.release(),
            "mem_mb": mem_kib * 1024 // 10**6, "envoy": envoy,
            "valgrind": out(["valgrind", "--version"]),
            "gossamer": importlib.metadata.version("gossamer-mesh"), "commit": commit}


def make(name: str, work: Path, args: argparse.Namespace) -> Any:
    if name == "gossamer":
        return Gossamer(work, args.scrape_interval)
    if name == "ondemand":
        return OnDemandGossamer(work, args.scrape_interval)
    if name == "captured":
        from ircaptured import Captured
        return Captured(work, args.scrape_interval)
    if name == "ingress":
        return Ingress(work, args.scrape_interval)
    if name == "envoy":
        return Pair("base", work)
    return Pair(name.removeprefix("envoy"), work)


def run_all(names: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    runs = []
    with tempfile.TemporaryDirectory(prefix="gossamer-ir-") as tmp:
        Path(tmp).chmod(0o755)  # the captured path's Envoys run as another uid
        for repeat in range(args.repeats):
            for name in names:
                config = make(name, Path(tmp) / f"r{repeat}", args)
                began = time.time()
                try:
                    result = measure(config.start(), args)
                finally:
                    config.stop()
                result.update(config=name, repeat=repeat, started=began,
                              ended=time.time())
                runs.append(result)
                print(f"  {name} run {repeat + 1}: caller "
                      f"{result['caller']['per_request'] / 1000:.2f}k, callee "
                      f"{result['callee']['per_request'] / 1000:.2f}k Ir/request",
                      file=sys.stderr, flush=True)
    return runs


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM as Ctrl-C, so the running configuration is stopped (finally blocks)."""
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="envoy,gossamer",
                   help="envoy, gossamer, captured, ingress, all, +X, all-X (irvariants.py), "
                        "gwall, gw+X, gwall-X (irgateway.py)")
    p.add_argument("--ablation", action="store_true",
                   help="add base, every +X, all and every all-X to --configs")
    p.add_argument("--ablation-gateway", action="store_true",
                   help="add base, every gw+X, gwall, every gwall-X and ingress (irgateway.py)")
    p.add_argument("--captured", action="store_true", help="add `captured` (needs root)")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--scrapes", type=int, default=3, help="stats scrapes measured per proxy")
    p.add_argument("--scrape-interval", type=float, default=3600.0,
                   help="Gossamer's control-plane stats scrape interval, seconds")
    p.add_argument("--out", type=Path, default=None,
                   help="default: bench/dataplane/results/instructions-<UTC date and time>.json")
    args = p.parse_args()
    if not (1 <= args.repeats <= 10 and 100 <= args.requests <= 20000
            and 0 <= args.warmup <= 5000 and 0 <= args.scrapes <= 10):
        p.error("bounded: 1-10 repeats, 100-20000 requests, <= 5000 warm-up, <= 10 scrapes")
    names = [n for n in args.configs.split(",") if n]
    if args.ablation:
        names += [n for n in ["envoy", *(f"envoy{a}" for a in ADDED), "all", *REMOVED,
                              "gossamer"] if n not in names]
    if args.ablation_gateway:
        names += [n for n in ["envoy", *GW_ADDED, "gwall", *GW_REMOVED, "ingress"]
                  if n not in names]
    if args.captured and "captured" not in names:
        names.append("captured")
    t0 = time.time()
    runs = run_all(names, args)
    result = {"kind": "dataplane-instructions", "machine": machine(), "started": t0,
              "wall_s": round(time.time() - t0),
              "settings": {"requests": args.requests, "warmup": args.warmup,
                           "repeats": args.repeats, "scrapes": args.scrapes,
                           "scrape_interval_s": args.scrape_interval,
                           "tool": "valgrind --tool=callgrind (Ir)", "envoy_concurrency": 1},
              "runs": runs}
    if not runs:
        sys.exit("nothing measured")
    result["summary"] = summarize(runs)
    if args.out is None:  # named for what it measured and when, as run.py's records
        args.out = Path("bench/dataplane/results") / time.strftime(
            "instructions-%Y-%m-%d-%H%M.json", time.gmtime())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    smp = args.out.with_name(args.out.stem + ".smp.json")
    smp.write_text(json.dumps(instructions_document(result), indent=1) + "\n")
    print(table(result))
    if any(n.startswith(("+", "all", "envoy+", "gw")) for n in names):
        print()
        print(ablation_table(result))
    print(f"\nwrote {args.out} and {smp}")


if __name__ == "__main__":
    main()
