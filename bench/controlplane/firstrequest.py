"""What on-demand discovery costs a sidecar's first request to a Service (issue 18's
goal: it adds at most 50 ms at p99, once), with real Envoys.

    cd <repo> && PYTHONPATH=$PWD/src:$PWD .venv/bin/python -m bench.controlplane.firstrequest \
        [--services 200] [--calls 60] [--out FILE]

A control plane in this process (memory store; security off, as tests/envoy: mTLS
adds nothing a first request waits for here, the secrets are the sidecar's own),
S Services that all select one backend workload (one callee sidecar in front of a
loopback HTTP server), and a calling sidecar with VHDS on a delta stream, as the
agent's default. For each of K Services the client has never called, one request
through its outbound listener, timed at the client (connect to response), then a
second one to the same Service:

- on demand (the Mesh's `onDemand`): the first request waits for Envoy's VHDS
  lookup of its Host, the ODCDS lookup of the route's cluster and that cluster's
  endpoints (three round trips to the control plane), then opens a connection;
- up front (the same sidecar after `onDemand: false`, once it holds every Service's
  cluster warm and the old listener has drained, K other Services): the first
  request only opens the connection.

"Adds" is on demand's first request minus up front's, per percentile. Bounded:
K requests of each kind, each with a 10 s timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from bench.controlplane.report import percentile
from bench.smp.controlplane import firstrequest_document

from gossamer.agent.bootstrap import bootstrap
from gossamer.contract.node import NodeMetadata
from gossamer.contract.protocol import Protocol
from gossamer.controlplane.server import ControlPlane, ControlPlaneOptions
from gossamer.testing.envoy import EnvoyProcess, free_port

API = "mesh.gossamer.dev/v1alpha1"


class _Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _node(service: str, *, app_port: int = 0) -> NodeMetadata:
    return NodeMetadata(node_id=f"{service}-0.default", service=service, namespace="default",
                        workload=f"{service}-0", inbound_port=free_port() if app_port else 0,
                        inbound_address="127.0.0.1", app_port=app_port,
                        app_protocol=Protocol("http"), outbound_port=free_port(),
                        admin_port=free_port(), vhds=True)


def _stats(values: list[float]) -> dict[str, float]:
    return {"n": len(values), **{f"p{round(q * 100)}_ms": round(percentile(values, q), 1)
                                 for q in (0.5, 0.9, 0.99)}, "max_ms": round(max(values), 1)}


async def _timed(client: httpx.AsyncClient, url: str) -> float:
    t0 = time.perf_counter()
    try:
        resp = await client.get(url)
    except httpx.HTTPError as exc:
        raise RuntimeError(f"{url}: {type(exc).__name__} after "
                           f"{time.perf_counter() - t0:.1f} s") from exc
    took = (time.perf_counter() - t0) * 1000
    if resp.status_code != 200:
        raise RuntimeError(f"{url}: {resp.status_code} {resp.text[:200]}")
    return took


async def _round(outbound: int, services: range) -> tuple[list[float], list[float]]:
    """(first, second) request times (ms) to each Service; a new client connection
    per request, as an app that does not pool would, so both pay the same there."""
    first, second = [], []
    for i in services:
        for out in (first, second):
            async with httpx.AsyncClient(proxy=f"http://127.0.0.1:{outbound}",
                                         trust_env=False, timeout=10) as client:
                out.append(await _timed(client, f"http://svc-{i:04d}/"))
    return first, second


async def _synced(plane: ControlPlane, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entries = plane.proxies()
        if entries and all(e["connected"] and e["synced"] for e in entries):
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("proxies not in sync")


async def _settled(envoy: EnvoyProcess, services: int, timeout: float = 60.0) -> None:
    """Until the client's Envoy holds every Service's cluster warm and the listener
    with the on-demand filter has drained: up front's first requests then measure
    only what they pay, not the switch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = await envoy.astats("^(cluster_manager|listener_manager)\\.")
        if (stats.get("cluster_manager.warming_clusters", 1) == 0
                and stats.get("cluster_manager.active_clusters", 0) >= services
                and stats.get("listener_manager.total_listeners_draining", 1) == 0):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("the client's Envoy did not settle on every Service's cluster")


async def measure(services: int, calls: int) -> dict[str, Any]:
    backend = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    plane = ControlPlane(ControlPlaneOptions(state_dir=None, xds_port=0, api_port=0,
                                             debounce=0.01, secure=False))
    envoys: list[EnvoyProcess] = []
    await plane.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{plane.api_port}",
                                     trust_env=False, timeout=30) as api:
            async def apply(doc: dict[str, Any]) -> None:
                (await api.post("/api/v1/apply", json=doc)).raise_for_status()
            await apply({"apiVersion": API, "kind": "Mesh", "metadata": {"name": "default"},
                         "spec": {"onDemand": True}})
            callee = _node("backend", app_port=backend.server_address[1])
            for i in range(services):
                await apply({"apiVersion": API, "kind": "Service",
                             "metadata": {"name": f"svc-{i:04d}"},
                             "spec": {"selector": {"app": "backend"},
                                      "ports": [{"port": 80, "protocol": "http"}]}})
            await apply({"apiVersion": API, "kind": "Workload",
                         "metadata": {"name": callee.workload, "labels": {"app": "backend"}},
                         "spec": {"service": "backend", "address": "127.0.0.1",
                                  "port": callee.inbound_port}})
            client = _node("client")
            for node in (callee, client):
                envoy = EnvoyProcess(bootstrap(node, "127.0.0.1", plane.xds_port, delta=True))
                envoys.append(envoy)
                await asyncio.to_thread(envoy.start)
                await envoy.await_ready()
            await _synced(plane)
            demand_first, demand_second = await _round(client.outbound_port, range(calls))
            await apply({"apiVersion": API, "kind": "Mesh", "metadata": {"name": "default"},
                         "spec": {"onDemand": False}})
            await _synced(plane)
            await _settled(envoys[-1], services)
            eager_first, eager_second = await _round(client.outbound_port,
                                                     range(calls, 2 * calls))
    finally:
        for envoy in envoys:
            envoy.stop()
        await plane.stop()
        backend.shutdown()
    on_demand, up_front = _stats(demand_first), _stats(eager_first)
    adds = {k: round(on_demand[k] - up_front[k], 1) for k in ("p50_ms", "p90_ms", "p99_ms")}
    return {"services": services, "calls": calls, "on_demand_first": on_demand,
            "on_demand_second": _stats(demand_second), "up_front_first": up_front,
            "up_front_second": _stats(eager_second), "adds": adds,
            "goal": "adds p99 <= 50 ms", "met": adds["p99_ms"] <= 50.0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--services", type=int, default=200)
    p.add_argument("--calls", type=int, default=60, help="Services called in each mode")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if 2 * args.calls > args.services:
        p.error("--services must be at least twice --calls (each mode calls new Services)")
    started = time.time()
    res = {"kind": "firstrequest", "started": started,
           **asyncio.run(measure(args.services, args.calls)), "ended": time.time()}
    out = args.out or Path(__file__).parent / "results" / time.strftime(
        "firstrequest-%Y-%m-%d-%H%M.json", time.gmtime(started))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    smp = out.with_suffix(".smp.json")
    smp.write_text(json.dumps(firstrequest_document(res), indent=1) + "\n")
    print(json.dumps(res, indent=1))
    print(f"JSON: {out}, SMP: {smp}", file=sys.stderr)


if __name__ == "__main__":
    main()
