"""What a sidecar's Envoy spends with no request to serve: the background work
(stats flushes, xDS and SDS, admin scrapes) that a fixed-rate run counts in its
CPU per request, and that weighs most at the lowest rate.

    PYTHONPATH=$PWD/src .venv/bin/python bench/dataplane/background.py \
        [--seconds 30] [--scrapes 50]

For the hand-written pair (`envoy`) and Gossamer, each started as run.py starts
it: both Envoys' CPU over --seconds with no traffic, as ms of CPU a second,
and the CPU of the mesh's own processes beside them. Then, for Gossamer, after
3000 requests so that the histograms hold data, the Envoy CPU of one stats
scrape as the control plane makes it (`telemetry/scraper.py`), averaged over
--scrapes back-to-back scrapes of each sidecar's admin endpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from configs import CONFIGS, HOST, Gossamer, Target
from procstat import process_cpu_seconds
from run import compile_loadgen, loadgen

from gossamer.envoy.admin import fetch
from gossamer.telemetry.scraper import STATS_TARGET


def idle_cpu(target: Target, seconds: float) -> tuple[list[float], list[float]]:
    """ms of CPU a second of each Envoy, and of each of the mesh's own processes."""
    pids = target.envoy_pids + target.support_pids
    before = [process_cpu_seconds(p) for p in pids]
    time.sleep(seconds)
    rates = [round(1000 * (process_cpu_seconds(p) - b) / seconds, 2)
             for p, b in zip(pids, before, strict=True)]
    return rates[:len(target.envoy_pids)], rates[len(target.envoy_pids):]


async def scrape_cost(pid: int, port: int, scrapes: int) -> tuple[int, float]:
    """(body bytes, Envoy CPU ms a scrape) of the Envoy `pid` with admin on `port`."""
    _, body = await fetch("127.0.0.1", port, "GET", STATS_TARGET, timeout=5)
    before = process_cpu_seconds(pid)
    for _ in range(scrapes):
        await fetch("127.0.0.1", port, "GET", STATS_TARGET, timeout=5)
    return len(body), 1000 * (process_cpu_seconds(pid) - before) / scrapes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--scrapes", type=int, default=50)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="gossamer-background-") as tmp:
        work = Path(tmp)
        for name in ("envoy", "gossamer"):
            config = CONFIGS[name](work)
            try:
                target = config.start()
                time.sleep(10)  # past start-up: first config, certificates, first scrape
                envoys, mesh = idle_cpu(target, args.seconds)
                print(f"{name:9s} idle Envoy CPU (caller, callee): "
                      f"{', '.join(f'{v} ms/s' for v in envoys)}; mesh processes: "
                      f"{statistics.fsum(mesh):.2f} ms/s", flush=True)
                if isinstance(config, Gossamer):
                    request = work / "request"
                    request.write_bytes(f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
                    loadgen(compile_loadgen(work), request, target, 500, 3000)
                    for pid, port in config.admin_ports().items():
                        size, ms = asyncio.run(scrape_cost(pid, port, args.scrapes))
                        print(f"{'':9s} stats scrape of Envoy {pid}: {size} B, "
                              f"{ms:.2f} ms of its CPU", flush=True)
            finally:
                config.stop()


if __name__ == "__main__":
    main()
