"""Propagation with two control-plane replicas on PostgreSQL against one on SQLite.

    cd <repo> && PYTHONPATH=$PWD/src .venv/bin/python -m bench.controlplane.replicas \\
        [--n 1000] [--s 100] [--runs 5] [--scoped] [--out FILE]

Needs root and Debian's PostgreSQL 15 (the tests' throwaway server, tests/postgres_server.py).
In one invocation it runs the same mesh (N simulated sidecars, S services; mesh.py) twice:

- `sqlite-1`: one `gossamer control-plane` on SQLite, every sidecar on it;
- `postgres-2`: two replicas on one PostgreSQL database, sidecar j on replica j mod 2.

Each run applies an HTTPRoute through the first replica's API and times, per sidecar,
the arrival of the changed route configs (as run.py's route change). Percentiles are
over the sidecars, overall and per replica; the figure per replica is the median over
--runs runs. The second replica learns of the apply through the store (NOTIFY, then its
watch), so its p99 minus the first replica's is what a second replica adds. Each
replica's CPU seconds and peak RSS are read from /proc, and its memory per connected
sidecar: (RSS once its sidecars synced - RSS before they connected) / its sidecars, KiB.
`store_delivery_ms` isolates the store's own share: from a put on one PostgresStore
to the event at a watcher of another.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from bench.controlplane import mesh
from bench.controlplane.procs import ControlPlaneProcess, LoadGenProcess, LoadGens
from bench.controlplane.report import kib_per_proxy, spread
from bench.controlplane.run import Bench
from bench.smp.controlplane import replicas_document
from tests.postgres_server import PostgresServer


class ReplicaBench(Bench):
    """run.py's Bench with `replicas` control planes on `store` (None: SQLite, one)."""

    def __init__(self, layout: mesh.Layout, workdir: Path, store: str | None,
                 replicas: int, scoped: bool = False) -> None:
        super().__init__(layout, workdir, replicas, scoped)
        extra = ["--store", store] if store else []
        self.cps = [ControlPlaneProcess(workdir / f"state-{r}", extra=extra)
                    for r in range(replicas)]
        self.cp = self.cps[0]

    async def start_control_plane(self) -> None:
        for cp in self.cps:  # one after another: the first creates the CA and the token
            cp.state_dir.mkdir(parents=True, exist_ok=True)
            await cp.start()
        admin = (self.cps[0].state_dir / "admin-token").read_text().strip()
        self.api = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.cp.api_port}",
                                     headers={"Authorization": f"Bearer {admin}"},
                                     timeout=120.0, trust_env=False)

    async def start_proxies(self, timeout: float) -> None:
        """Sidecar j on replica j mod R: one load generator per replica."""
        lay = self.layout
        ca = await self._call("GET", "/api/v1/ca")
        ca_file = self.workdir / "ca.pem"
        ca_file.write_text(ca["bundle_pem"])
        gens = []
        for r, cp in enumerate(self.cps):
            proxies = [lay.proxy(j, self.tokens[lay.service_of(j)])
                       for j in range(r, lay.n, len(self.cps))]
            pfile = self.workdir / f"proxies-{r}.json"
            pfile.write_text(json.dumps(proxies))
            gdir = self.workdir / f"loadgen-{r}"
            gdir.mkdir(exist_ok=True)
            gens.append(LoadGenProcess(pfile, f"127.0.0.1:{cp.xds_port}", ca_file, gdir))
        self.gens = LoadGens(gens)
        before = [cp.usage()["rss_mib"] for cp in self.cps]
        await asyncio.gather(*(g.start() for g in gens))
        await self._wait(lambda s: s["synced"] >= lay.n, timeout, "initial sync")
        after = [cp.usage()["rss_mib"] for cp in self.cps]
        # Each replica streams to its own share of the sidecars (j mod R).
        self.results["kib_per_proxy"] = [
            kib_per_proxy(b, a, len(range(r, lay.n, len(self.cps))))
            for r, (b, a) in enumerate(zip(before, after, strict=True))]

    async def propagation(self, run: int) -> dict[str, Any]:
        """An HTTPRoute applied on the first replica; arrivals per sidecar, by replica."""
        assert self.gens is not None
        lay = self.layout
        i = (run * 37 + 5) % lay.s
        await self.gens.record(True)
        await asyncio.sleep(0.2)
        only = [lay.callers_of(i)] if self.scoped else []
        t0 = time.monotonic()
        await self._call("POST", "/api/v1/apply", mesh.route_doc(i, lay.s, 60 + run))
        arrivals = await self._settle([[type_url, name, t0, *only]
                                       for type_url, name in mesh.route_names(i, lay.vhds)])
        await self.gens.record(False)
        first: dict[int, float | None] = {}
        for times in arrivals:
            for j, t in times.items():
                old = first.get(j)
                first[j] = t if old is None else (old if t is None else min(old, t))
        replicas = len(self.cps)
        return {"all": spread(list(first.values())),
                **{f"replica-{r}": spread([t for j, t in first.items() if j % replicas == r])
                   for r in range(replicas)}}

    async def close(self) -> None:
        await super().close()
        for cp in self.cps[1:]:
            await cp.stop()


def _median(runs: list[dict[str, Any]], part: str, key: str) -> float | None:
    values = [r[part][key] for r in runs if r[part].get(key) is not None]
    return round(statistics.median(values), 1) if values else None


async def setup(n: int, s: int, runs: int, store: str | None,
                replicas: int, scoped: bool = False) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gossamer-cpbench-ha-") as tmp:
        bench = ReplicaBench(mesh.Layout(n, s), Path(tmp), store, replicas, scoped)
        out: dict[str, Any] = {"replicas": replicas, "store": "postgresql" if store
                               else "sqlite", "n": n, "s": s, "scoped": scoped, "runs": []}
        try:
            await bench.start_control_plane()
            await bench.populate()
            await asyncio.sleep(1.0)
            await bench.start_proxies(timeout=120 + n * 0.2)
            for r in range(runs):
                out["runs"].append(await bench.propagation(r))
            parts = ["all", *(f"replica-{r}" for r in range(replicas))]
            out["median"] = {part: {q: _median(out["runs"], part, q)
                                    for q in ("p50", "p90", "p99", "p100")} for part in parts}
            out["usage"] = [{k: round(v, 2) for k, v in cp.usage().items()}
                            for cp in bench.cps]
            out["kib_per_proxy"] = bench.results.get("kib_per_proxy")
        finally:
            await bench.close()
    return out


async def store_delivery(url: str, writes: int = 200) -> dict[str, Any]:
    """What the shared store adds by itself: from a put's return on one store (one
    replica) to the event reaching a watcher on another store (the other replica),
    through NOTIFY and the events table, with nothing else running."""
    from gossamer.store.postgres import PostgresStore

    writer, reader = PostgresStore(url), PostgresStore(url)
    delays: list[float] = []
    try:
        start = await reader.revision()
        done: dict[int, float] = {}

        async def follow() -> None:
            async for event in reader.watch(start):
                done[event.revision] = time.monotonic()
                if len(done) >= writes:
                    return
        watcher = asyncio.create_task(follow())
        await asyncio.sleep(0.5)  # the listener is up
        for i in range(writes):
            body = {"spec": {"n": i}}
            stored = await writer.put("Bench", "default", f"w{i % 10}", body)
            sent = time.monotonic()
            while stored.revision not in done:
                await asyncio.sleep(0.0005)
            delays.append(done[stored.revision] - sent)
            await asyncio.sleep(0.02)
        await asyncio.wait_for(watcher, 10)
    finally:
        await writer.close()
        await reader.close()
    ms = sorted(d * 1000 for d in delays)
    return {"writes": writes, **{label: round(ms[min(len(ms) - 1, int(q * len(ms)))], 2)
                                 for label, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}}


async def main_async(n: int, s: int, runs: int, scoped: bool = False) -> dict[str, Any]:
    results: dict[str, Any] = {"started": time.time()}
    results["sqlite-1"] = await setup(n, s, runs, None, 1, scoped)
    server = PostgresServer()
    try:
        url = server.url(server.create_database())
        results["postgres-2"] = await setup(n, s, runs, url, 2, scoped)
        results["store_delivery_ms"] = await store_delivery(server.url(server.create_database()))
    finally:
        server.destroy()
    one = results["sqlite-1"]["median"]["all"]["p99"]
    two = results["postgres-2"]["median"]
    results["second_replica_adds_p99_ms"] = (
        None if one is None or two["replica-1"]["p99"] is None
        else round(two["replica-1"]["p99"] - one, 1))
    # Within one run: the replica that did not take the apply against the one that did.
    gaps = [r["replica-1"]["p99"] - r["replica-0"]["p99"] for r in results["postgres-2"]["runs"]
            if r["replica-1"].get("p99") is not None and r["replica-0"].get("p99") is not None]
    results["replica_gap_p99_ms_median"] = round(statistics.median(gaps), 1) if gaps else None
    results["ended"] = time.time()
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="simulated sidecars")
    p.add_argument("--s", type=int, default=100, help="services")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--scoped", action="store_true",
                   help="a Sidecar per service scopes its proxies to their upstreams")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    results = asyncio.run(main_async(args.n, args.s, args.runs, args.scoped))
    text = json.dumps(results, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
        smp = args.out.with_name(args.out.stem + ".smp.json")  # the same, as SMP (bench/smp)
        smp.write_text(json.dumps(replicas_document(results), indent=1) + "\n")


if __name__ == "__main__":
    main()
