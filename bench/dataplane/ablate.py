"""Why Gossamer's sidecars cost what they cost: the hand-written Envoy pair with
one Gossamer default added at a time, measured side by side (interleaved).

    PYTHONPATH=$PWD/src .venv/bin/python bench/dataplane/ablate.py \
        [--variants base,h1,retry,filters,hcm,stats,all,gossamer] [--rate 1000] [--runs 10]

Each variant is envoy-client.yaml + envoy-server.yaml (as run.py's `envoy`) with
one change taken from Gossamer's own translation code (so it stays in step):

- h1:      HTTP/1.1 between the sidecars (ALPN http/1.1), Gossamer's choice for
           `protocol: http` ports;
- retry:   the default retry policy of every mesh route (translate/routes.py);
- filters: outbound cors + fault filters, inbound tap filter;
- hcm:     HCM options: absolute URLs, path normalisation, websocket upgrades;
           inbound XFCC (caller identity) and the local-reply mappers;
- stats:   the sidecar stats config (tags, inclusion list; agent/stats.py);
- all:     every change above at once;
- gossamer: the real thing (control plane, agents, xDS, SDS).

Prints, per variant, the medians over runs of proxy CPU per 1000 requests at
--rate, p50 latency there, and wrk's maximum throughput, each also as a ratio
to `base` measured in the same run.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[2])]

from configs import (
    CONFIGS,
    HOST,
    Target,
    pair_values,
    start_nginx,
    start_pair,
    write_certs,
)
from run import PROXY_CPU, compile_loadgen, machine, measure_rate, wrk

from bench.smp.dataplane import ablate_document

from gossamer.agent.stats import stats_config
from gossamer.translate.fault import FAULT_FILTER
from gossamer.translate.listeners import (
    CALLER_IDENTITY,
    CORS_HTTP_FILTER,
    INBOUND_REPLY,
    TAP_FILTER,
)
from gossamer.translate.routes import DEFAULT_RETRY, UNREACHABLE_HEADER

HERE = Path(__file__).resolve().parent
Config = dict[str, Any]


def _hcm(config: Config) -> Config:
    hcm: Config = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    typed: Config = hcm["typed_config"]
    return typed


def h1(client: Config, server: Config) -> None:
    cluster = client["static_resources"]["clusters"][0]
    del cluster["typed_extension_protocol_options"]
    cluster["transport_socket"]["typed_config"]["common_tls_context"]["alpn_protocols"] = [
        "http/1.1"]


def retry(client: Config, server: Config) -> None:
    route_config = _hcm(client)["route_config"]
    route_config["virtual_hosts"][0]["routes"][0]["route"]["retryPolicy"] = DEFAULT_RETRY
    route_config["response_headers_to_remove"] = [UNREACHABLE_HEADER]


def filters(client: Config, server: Config) -> None:
    _hcm(client)["http_filters"][:0] = [CORS_HTTP_FILTER, FAULT_FILTER]
    _hcm(server)["http_filters"][:0] = [TAP_FILTER]


def hcm(client: Config, server: Config) -> None:
    for config in (client, server):
        _hcm(config).update({"httpProtocolOptions": {"allowAbsoluteUrl": True},
                             "normalizePath": True, "mergeSlashes": True,
                             "upgradeConfigs": [{"upgradeType": "websocket"}]})
    _hcm(server).update({**CALLER_IDENTITY, "localReplyConfig": INBOUND_REPLY})


def stats(client: Config, server: Config) -> None:
    client["statsConfig"] = stats_config("client", "default", "client-0")
    server["statsConfig"] = stats_config("backend", "default", "backend-0")


CHANGES: dict[str, Callable[[Config, Config], None]] = {
    "h1": h1, "retry": retry, "filters": filters, "hcm": hcm, "stats": stats}


class Variant:
    """The hand-written pair with `changes` applied, in front of a shared nginx."""

    def __init__(self, name: str, changes: list[str], work: Path, app_port: int,
                 certs: dict[str, str]) -> None:
        self.name, self.changes, self.app_port, self.certs = name, changes, app_port, certs
        self.work = work / name
        self.work.mkdir(parents=True, exist_ok=True)
        self.procs: list[Any] = []

    def _load(self, template: str, **values: object) -> Config:
        import string
        text = string.Template((HERE / template).read_text()).substitute(values)
        loaded: Config = yaml.safe_load(text)
        return loaded

    def start(self) -> Target:
        client_port, server_values, client_values = pair_values(self.certs, self.app_port)
        server = self._load("envoy-server.yaml", **server_values)
        client = self._load("envoy-client.yaml", **client_values)
        for change in self.changes:
            CHANGES[change](client, server)
        paths = []
        for side, config in (("client", client), ("server", server)):
            path = self.work / f"{side}.json"
            path.write_text(json.dumps(copy.deepcopy(config), indent=1))
            paths.append(path)
        return start_pair(self.name, self.work, self.procs, paths, client_port)

    def stop(self) -> None:
        from configs import _stop
        _stop(self.procs)


def _median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="base,h1,retry,filters,hcm,stats,all,gossamer")
    p.add_argument("--rate", type=int, default=1000)
    p.add_argument("--duration", type=int, default=3, help="seconds per fixed-rate run")
    p.add_argument("--wrk-duration", type=int, default=3)
    p.add_argument("--runs", type=int, default=10, help="rounds")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("bench/dataplane/results") / time.strftime(
        "ablate-%Y-%m-%d-%H%M.json", time.gmtime()))
    args = p.parse_args()
    if not 1 <= args.runs <= 20 or args.duration > 60 or args.rate > 10000:
        p.error("bounded: 1-20 runs, <= 60 s, <= 10000 req/s")
    limits = argparse.Namespace(max_steal=0.05, max_foreign=0.10, max_repeats=1)
    os.sched_setaffinity(0, {PROXY_CPU})
    if os.geteuid() == 0:  # as run.py: see there
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    names = args.variants.split(",")
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="gossamer-ablate-") as tmp:
        work = Path(tmp)
        exe = compile_loadgen(work)
        request = work / "request"
        request.write_bytes(f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        nginx: list[Any] = []
        variants: list[Any] = []
        try:
            app = start_nginx(work, nginx)
            certs = write_certs(work)
            for n in names:
                changes = list(CHANGES) if n == "all" else [] if n == "base" else [n]
                variants.append(CONFIGS["gossamer"](work) if n == "gossamer"
                                else Variant(n, changes, work, app, certs))
            targets = {v.name: v.start() for v in variants}
            results = measure(targets, exe, request, args, limits)
        finally:
            for v in reversed(variants):
                v.stop()
            from configs import _stop
            _stop(nginx)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    smp = args.out.with_name(args.out.stem + ".smp.json")  # the same, as SMP (bench/smp)
    smp.write_text(json.dumps(ablate_document(results, vars(args), machine(), started,
                                              time.time()), indent=1, default=str) + "\n")
    print(render(results, args))


def measure(targets: dict[str, Target], exe: Path, request: Path, args: argparse.Namespace,
            limits: argparse.Namespace) -> list[dict[str, Any]]:
    """Short rounds, each variant once per round in a fresh random order, so that
    drifts and the position in a round hit every variant alike."""
    from run import loadgen
    for t in targets.values():
        loadgen(exe, request, t, 1000, 1000)
    rng = random.Random(args.seed)
    runs = []
    for r in range(args.runs):
        run: dict[str, Any] = {name: {} for name in targets}
        order = list(targets)
        rng.shuffle(order)
        for name in order:
            res = measure_rate(exe, request, targets[name], args.rate,
                               args.rate * args.duration, limits)
            run[name].update({"cpu_ms_per_1k": res["proxy_cpu_ms_per_1k"],
                              "p50_us": res["latency_us"]["p50"], "steal": res["max_steal"],
                              "foreign_cpu": res["foreign_cpu"]})
        rng.shuffle(order)
        for name in order:
            run[name]["rps"] = wrk(targets[name], args.wrk_duration)["rps"]
        print(f"round {r + 1}: " + ", ".join(f"{n} {v['cpu_ms_per_1k']:.0f} ms/1k "
                                             f"{v['rps']:.0f}/s" for n, v in run.items()),
              file=sys.stderr, flush=True)
        runs.append(run)
    return runs


def render(runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [f"ablation: {args.runs} rounds; CPU of both proxies per 1000 requests at "
             f"{args.rate}/s, p50 there, wrk max req/s; ratios to base within each round, "
             "medians",
             f"{'variant':<10} {'cpu ms/1k':>9} {'x base':>7} {'p50 us':>7} {'x base':>7} "
             f"{'max rps':>8} {'x base':>7}"]
    for name in runs[0]:
        def med(key: str, ratio: bool, n: str = name) -> float:
            vals = [r[n][key] / r["base"][key] if ratio else r[n][key] for r in runs]
            return _median(vals)
        base = "base" in runs[0]
        lines.append(
            f"{name:<10} {med('cpu_ms_per_1k', False):>9.1f} "
            f"{med('cpu_ms_per_1k', True) if base else 0:>7.2f} {med('p50_us', False):>7.0f} "
            f"{med('p50_us', True) if base else 0:>7.2f} {med('rps', False):>8.0f} "
            f"{med('rps', True) if base else 0:>7.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
