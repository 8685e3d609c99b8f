"""The demo topology under real traffic: splits, header routing, live changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from tests.e2e.conftest import Mesh

pytestmark = pytest.mark.slow

SPLIT = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: catalog}}
spec:
  parentRefs: [{{name: catalog, port: 80}}]
  rules:
  - backendRefs:
    - {{name: catalog-v1, port: 80, weight: {v1}}}
    - {{name: catalog-v2, port: 80, weight: {v2}}}
"""
HEADER = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: catalog}
spec:
  parentRefs: [{name: catalog, port: 80}]
  rules:
  - matches: [{headers: [{name: x-canary, value: "true"}]}]
    backendRefs: [{name: catalog-v2, port: 80}]
  - backendRefs: [{name: catalog-v1, port: 80}]
"""


def _versions(mesh: Mesh, n: int, headers: dict[str, str] | None = None) -> Counter[str]:
    seen: Counter[str] = Counter()
    with mesh.client_via("frontend") as client:
        for _ in range(n):
            resp = client.get("http://catalog/items", headers=headers or {})
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert body["upstreams"]["http://inventory/stock"]["status"] == 200
            seen[body["version"]] += 1
    return seen


def test_weighted_split_80_20_lands_within_5_points(mesh: Mesh) -> None:
    mesh.apply(SPLIT.format(v1=80, v2=20))
    mesh.wait_synced()
    seen = _versions(mesh, 2000)
    share = seen["v2"] / 2000
    assert 0.15 <= share <= 0.25, seen


def test_header_match_routes_only_matching_requests(mesh: Mesh) -> None:
    mesh.apply(HEADER)
    mesh.wait_synced()
    assert _versions(mesh, 100, {"x-canary": "true"}) == Counter({"v2": 100})
    assert _versions(mesh, 100, {"x-canary": "false"}) == Counter({"v1": 100})
    assert _versions(mesh, 100) == Counter({"v1": 100})


def test_apply_under_load_fails_no_request(mesh: Mesh) -> None:
    mesh.apply(SPLIT.format(v1=100, v2=0))
    mesh.wait_synced()
    failures: list[str] = []
    seen: Counter[str] = Counter()
    stop = threading.Event()

    def load() -> None:
        deadline = time.monotonic() + 60  # bounded even if the test body hangs
        with mesh.client_via("frontend") as client:
            for _ in range(20_000):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                try:
                    resp = client.get("http://frontend/")
                except Exception as exc:  # a transport error is a failed request
                    failures.append(repr(exc))
                    continue
                if resp.status_code != 200:
                    failures.append(f"{resp.status_code} {resp.text[:200]}")
                    continue
                catalog = resp.json()["upstreams"]["http://catalog/items"]["body"]
                seen[catalog["version"]] += 1

    workers = [threading.Thread(target=load) for _ in range(2)]
    for w in workers:
        w.start()
    try:
        for v1, v2 in ((50, 50), (0, 100), (90, 10), (100, 0)):
            time.sleep(1.0)
            mesh.apply(SPLIT.format(v1=v1, v2=v2))
            mesh.wait_synced()
        mesh.apply(HEADER)
        mesh.wait_synced()
        time.sleep(1.0)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=30)
    assert not failures, failures[:5]
    assert seen["v1"] > 0
    assert seen["v2"] > 0


def _cli(mesh: Mesh, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GOSSAMER_TOKEN": mesh.run.admin_token_file.read_text().strip()}
    return subprocess.run([sys.executable, "-m", "gossamer", *args, "--server", mesh.run.server],
                          capture_output=True, text=True, timeout=60, check=False, env=env)


def test_check_and_proxy_config_show_the_running_mesh(mesh: Mesh) -> None:
    mesh.wait_synced()
    check = _cli(mesh, "check")
    assert check.returncode == 0, check.stderr
    lines = [x for x in check.stdout.splitlines() if x.startswith("proxy ")]
    assert len(lines) == 5
    assert all(x.endswith("connected, in sync") for x in lines), lines
    # "In sync" does not mean connections already open follow a new policy: it says so.
    assert check.stdout.splitlines()[-1].startswith("note: in sync means the proxies run "
                                                    "the latest config; connections opened "
                                                    "before a security policy change")

    routes = json.loads(_cli(mesh, "proxy-config", "frontend-0", "routes").stdout)
    configs = {r["route_config"]["name"]: r for r in routes["dynamic_route_configs"]}
    # By VHDS (no Sidecar scopes the demo), each arrived as `outbound/NAME`.
    vhosts = {v["name"] for v in configs["outbound"]["route_config"]["virtual_hosts"]}
    assert {"outbound/catalog.default:80", "outbound/inventory.default:80",
            "outbound/frontend.default:80"} <= vhosts

    clusters = json.loads(_cli(mesh, "proxy-config", "catalog-v1-0", "clusters").stdout)
    names = {c["cluster"]["name"] for c in clusters["dynamic_active_clusters"]}
    assert "outbound|80||inventory.default" in names
    assert any(n.startswith("inbound|") for n in names)

    missing = _cli(mesh, "proxy-config", "nobody", "routes")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: no connected proxy for workload default/nobody"


def test_curl_through_the_outbound_proxy_reaches_the_service(mesh: Mesh) -> None:
    """The usage the docs promise: any HTTP client, pointed at the sidecar as a proxy."""
    out = mesh.instance("frontend").outbound_port
    done = subprocess.run(["curl", "-sS", "-x", f"http://127.0.0.1:{out}",
                           "http://inventory/stock"], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["service"] == "inventory"
    assert body["path"] == "/stock"
    unknown = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-x",
                              f"http://127.0.0.1:{out}", "http://nosuch/"],
                             capture_output=True, text=True, timeout=30, check=False)
    assert unknown.stdout == "404"
