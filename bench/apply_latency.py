"""Time from `apply` of an HTTPRoute to every demo proxy ACKing the new routes.

Starts the demo mesh (control plane + 5 sidecars) in a temporary directory,
applies N route changes, reports each latency and the median, stops the mesh.

    .venv/bin/python bench/apply_latency.py [--runs 9]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from importlib import resources as pkg
from pathlib import Path

import httpx

from gossamer.local.spec import load_local_app
from gossamer.local.up import LocalRun

ROUTE = {
    "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
    "metadata": {"name": "catalog"},
    "spec": {"parentRefs": [{"name": "catalog", "port": 80}],
             "rules": [{"backendRefs": [{"name": "catalog-v1", "weight": 50},
                                        {"name": "catalog-v2", "weight": 50}]}]},
}


def _acked_routes(api: httpx.Client) -> dict[str, str | None]:
    return {p["node_id"]: p["types"].get("routes", {}).get("acked_version")
            for p in api.get("/api/v1/proxies").json() if p["connected"]}


def measure(api: httpx.Client, runs: int) -> list[float]:
    out = []
    for i in range(runs):
        before = _acked_routes(api)
        ROUTE["spec"]["rules"][0]["backendRefs"][0]["weight"] = 40 + i  # type: ignore[index]
        start = time.perf_counter()
        api.post("/api/v1/apply", json=ROUTE).raise_for_status()
        while time.perf_counter() - start < 10:
            now = _acked_routes(api)
            if all(v not in (None, before.get(n)) for n, v in now.items()):
                break
            time.sleep(0.002)
        out.append((time.perf_counter() - start) * 1000)
        time.sleep(0.3)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=9)
    args = p.parse_args()
    text = pkg.files("gossamer.demo").joinpath("demo.yaml").read_text()
    with tempfile.TemporaryDirectory(prefix="gossamer-bench-") as tmp:
        run = LocalRun(load_local_app(text), Path(tmp), quiet=True)
        try:
            run.start_control_plane()
            run.apply_resources()
            run.start_processes()
            api = run.api()
            times = measure(api, min(args.runs, 100))
        finally:
            run.stop()
    result = {"apply_to_all_acked_ms": [round(t, 1) for t in times],
              "median_ms": round(statistics.median(times), 1), "proxies": 5}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
