"""Two control-plane replicas on two namespace hosts sharing one PostgreSQL store
(issue 19), with the mesh's sidecars on two other hosts.

Replicas r1 and r2 serve the API (TLS) and xDS on their own hosts and share the
store (the test's PostgreSQL 15, reached over its Unix socket) and a secrets key.
Hosts b (web, calling catalog) and c (catalog) join with both replicas' URLs, so
each Envoy's xDS cluster holds both replicas. Load is b's app calling catalog
through both sidecars, bounded in time and count."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gossamer.secrets import generate_key
from tests.e2e.universe import API_PORT, APP_PORT, GOSSAMER, INBOUND_PORT, SERVICES, wait
from tests.hosts import Host, HostNetwork
from tests.postgres_server import PostgresServer, started_server

pytestmark = pytest.mark.slow
XDS_PORT = 15010
# What the tests allow for proxies to reach the surviving replica after a kill -9;
# measured (docs/operations.md) well under it, so load on CI cannot fail it.
RECONNECT_BOUND_S = 30.0

LOAD = """
import json, os, sys, time, urllib.request, urllib.error
stop, limit, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
ok, failed = 0, []
while ok + len(failed) < limit and time.monotonic() < deadline and not os.path.exists(stop):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%s/" % sys.argv[4], timeout=10) as r:
            r.read()
            ok += 1
    except (urllib.error.URLError, OSError) as exc:
        failed.append(f"{time.time():.3f} {exc}")
    time.sleep(0.01)
print(json.dumps({"ok": ok, "failed": failed}))
"""


@dataclass
class Mesh:
    net: HostNetwork
    pg: PostgresServer
    store_url: str
    root: Path
    replicas: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def bundle(self) -> Path:
        return self.root / "r1" / "ca-bundle.pem"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def url(self, name: str) -> str:
        return f"https://{self.net[name].address}:{API_PORT}"

    def api(self, name: str, timeout: float = 10) -> httpx.Client:
        token = (self.root / "r1" / "admin-token").read_text().strip()
        return httpx.Client(base_url=self.url(name), trust_env=False, timeout=timeout,
                            verify=ssl.create_default_context(cafile=self.bundle),
                            headers={"Authorization": f"Bearer {token}"})

    def start_replica(self, name: str) -> None:
        host = self.net[name]
        state = self.root / name
        state.mkdir(exist_ok=True)
        self.replicas[name] = host.popen(
            [*GOSSAMER, "control-plane", "--store", self.store_url, "--state-dir", str(state),
             "--host", host.address, "--advertise-address", name, "--api-port", str(API_PORT),
             "--xds-port", str(XDS_PORT), "--secrets-key-file", str(self.root / "secrets.key")],
            log=self.logs / f"{name}.log")

        def up() -> bool:
            with self.api(name) as api:
                return api.get("/healthz").is_success
        wait(f"replica {name} is not up", lambda: self.bundle.exists() and up(), 60, self.logs)

    def kill(self, name: str) -> None:
        proc = self.replicas.pop(name)
        os.kill(proc.pid, signal.SIGKILL)  # `ip netns exec` execs: this is the replica
        proc.wait(timeout=30)

    def health(self, name: str) -> dict[str, Any]:
        with self.api(name) as api:
            return api.get("/healthz").json()  # type: ignore[no-any-return]

    def connected(self, name: str, synced: bool = True) -> set[str]:
        """The workloads whose proxies are connected to this replica (and in sync)."""
        with self.api(name) as api:
            return {p["metadata"]["workload"] for p in api.get("/api/v1/proxies").json()
                    if p["connected"] and (p["synced"] or not synced)}

    def holder(self, workload: str) -> str:
        """The replica the workload's sidecar streams from (in sync or not)."""
        [name] = [r for r in self.replicas if workload in self.connected(r, synced=False)]
        return name


def agent(mesh: Mesh, host: Host, service: str, app: list[str]) -> None:
    with mesh.api("r1") as api:
        token = api.post("/api/v1/tokens", json={"scope": "join", "service": service})
    token_file = mesh.root / f"{service}.token"
    token_file.write_text(token.json()["token"] + "\n")
    token_file.chmod(0o600)
    host.popen([*GOSSAMER, "proxy", "--service", service, "--name", f"{service}-0",
                "--control-plane", f"https://r1:{API_PORT},https://r2:{API_PORT}",
                "--token-file", str(token_file), "--ca-file", str(mesh.bundle),
                "--app-port", str(APP_PORT), "--inbound-port", str(INBOUND_PORT),
                "--probe-path", "/healthz", "--drain-seconds", "0.5",
                "--workdir", str(mesh.root / service), "--", sys.executable, "-m",
                "gossamer.demo.app", *app], log=mesh.logs / f"{service}.log")


@pytest.fixture(scope="module")
def mesh(module_netns_hosts: HostNetwork,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    pg = started_server()
    try:
        root = tmp_path_factory.mktemp("replicas")
        (root / "logs").mkdir()
        key = root / "secrets.key"
        key.write_text(generate_key() + "\n")
        key.chmod(0o600)
        net = module_netns_hosts
        for name in ("r1", "r2", "b", "c"):
            net.add(name)
        m = Mesh(net, pg, pg.url(pg.create_database()), root)
        m.start_replica("r1")
        m.start_replica("r2")
        with m.api("r1") as api:
            for doc in SERVICES:
                assert api.post("/api/v1/apply", json=doc).is_success
        agent(m, net["c"], "catalog", ["--name", "catalog"])
        agent(m, net["b"], "web", ["--name", "web", "--call", "http://catalog/items"])
        wait("the proxies are not connected and in sync", lambda: set().union(
            *(m.connected(r) for r in m.replicas)) == {"web-0", "catalog-0"}, 120, m.logs)
        yield m
        for host in ("b", "c", "r1", "r2"):  # agents deregister first
            for proc in [p for p in net.started if net[host].netns in p.args]:
                proc.terminate()
                proc.wait(timeout=30)
    finally:
        pg.destroy()


class Load:
    """b's app calling catalog through both sidecars, until stopped (bounded)."""

    def __init__(self, mesh: Mesh, seconds: float = 240, limit: int = 50_000) -> None:
        self.stop_file = mesh.root / f"stop-{time.monotonic_ns()}"
        self.proc = subprocess.Popen(
            mesh.net["b"].argv([sys.executable, "-c", LOAD, str(self.stop_file), str(limit),
                                str(seconds), str(APP_PORT)]),
            stdout=subprocess.PIPE, text=True)
        mesh.net.started.append(self.proc)  # type: ignore[arg-type]  # stopped at cleanup

    def finish(self) -> dict[str, Any]:
        self.stop_file.touch()
        out, _ = self.proc.communicate(timeout=60)
        result: dict[str, Any] = json.loads(out)
        return result


class Applies(threading.Thread):
    """Services applied one after another, alternating replicas; the acknowledged ones."""

    def __init__(self, mesh: Mesh, prefix: str, replicas: list[str]) -> None:
        super().__init__(daemon=True)
        self.mesh, self.prefix, self.replicas = mesh, prefix, replicas
        self.acked: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        for i in range(500):  # bounded; ~0.2 s apart
            if self.done.is_set():
                return
            name = f"{self.prefix}-{i}"
            doc = {**SERVICES[0], "metadata": {"name": name}}
            try:
                with self.mesh.api(self.replicas[i % len(self.replicas)], timeout=5) as api:
                    if api.post("/api/v1/apply", json=doc).status_code == 200:
                        self.acked.append(name)
            except httpx.HTTPError:
                pass  # not acknowledged: the replica is gone
            time.sleep(0.2)


def _envoy_clusters(mesh: Mesh, workload: str, host: str) -> str:
    name = mesh.holder(workload)
    with mesh.api(name) as api:
        [proxy] = [p for p in api.get("/api/v1/proxies").json()
                   if p["metadata"]["workload"] == workload and p["connected"]]
    port = int(proxy["metadata"]["admin_port"])
    return mesh.net[host].run(["curl", "-s", f"http://127.0.0.1:{port}/clusters"],
                              check=True).stdout


def test_an_apply_on_one_replica_reaches_proxies_on_the_other(mesh: Mesh) -> None:
    holder = mesh.holder("web-0")
    other = "r2" if holder == "r1" else "r1"
    with mesh.api(other) as api:
        doc = {**SERVICES[0], "metadata": {"name": "extra"}}
        assert api.post("/api/v1/apply", json=doc).status_code == 200
    wait("the apply did not reach web's sidecar", lambda: "outbound|80||extra.default" in
         _envoy_clusters(mesh, "web-0", "b"), 60, mesh.logs)


def test_lease_expiry_and_a_rotation_step_run_once(mesh: Mesh) -> None:
    before = sum(mesh.health(r)["expirations"] for r in mesh.replicas)
    workload = {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Workload",
                "metadata": {"name": "ghost", "labels": {"app": "catalog"}},
                "spec": {"service": "catalog", "address": "198.18.0.9", "port": 15006,
                         "appPort": 8080, "health": "Healthy", "ttlSeconds": 2}}
    with mesh.api("r2") as api:
        assert api.post("/api/v1/apply", json=workload).status_code == 200

    def gone() -> bool:
        with mesh.api("r1") as api:
            return api.get("/api/v1/resources/Workload/default/ghost").status_code == 404
    wait("the lease did not expire", gone, 60, mesh.logs)
    time.sleep(3)  # more expiry passes on both replicas
    healths = [mesh.health(r) for r in sorted(mesh.replicas)]
    assert sum(h["expirations"] for h in healths) == before + 1
    assert sum(h["leader"] for h in healths) == 1

    with mesh.api("r1") as api:
        assert api.post("/api/v1/ca/rotate", json={"step": "begin"}).status_code == 200
    with mesh.api("r2") as api:
        again = api.post("/api/v1/ca/rotate", json={"step": "begin"})
        assert again.status_code == 409  # r2 follows r1's step: it is not taken twice
        bundle = api.get("/api/v1/ca/bundle").text
    assert bundle.count("BEGIN CERTIFICATE") == 2


def _entry(mesh: Mesh, replica: str, workload: str) -> dict[str, Any]:
    with mesh.api(replica) as api:
        [entry] = [p for p in api.get("/api/v1/proxies").json()
                   if p["metadata"]["workload"] == workload and p["connected"]]
    return entry  # type: ignore[no-any-return]


def test_a_sidecar_moving_to_another_replica_is_sent_nothing_new(mesh: Mesh) -> None:
    """Both replicas translate the same bytes under the same versions (content
    hashes), so the delta stream a sidecar opens on the other replica, which names
    the versions it has, gets nothing sent."""
    holder = mesh.holder("web-0")
    other = "r2" if holder == "r1" else "r1"
    before = _entry(mesh, holder, "web-0")["types"]
    mesh.kill(holder)
    try:
        wait("web's sidecar did not move", lambda: "web-0" in mesh.connected(other), 30,
             mesh.logs)
        after = _entry(mesh, other, "web-0")["types"]
    finally:
        mesh.start_replica(holder)
    assert {t: v["latest_version"] for t, v in after.items()} == \
        {t: v["acked_version"] for t, v in before.items()}
    assert {t: v["sent_count"] for t, v in after.items()} == {t: 0 for t in after}, after


def test_kill_9_of_either_replica_loses_no_request(mesh: Mesh) -> None:
    first = mesh.holder("web-0")
    reconnects = {}
    for victim in (first, "r2" if first == "r1" else "r1"):
        survivor = "r2" if victim == "r1" else "r1"
        load = Load(mesh)
        applies = Applies(mesh, f"acked-{victim}", ["r1", "r2"])
        applies.start()
        time.sleep(3)
        mesh.kill(victim)
        killed = time.monotonic()
        wait("proxies did not reach the surviving replica", lambda survivor=survivor:
             mesh.connected(survivor) == {"web-0", "catalog-0"}, RECONNECT_BOUND_S, mesh.logs)
        reconnects[victim] = time.monotonic() - killed
        wait("the survivor did not become the leader", lambda survivor=survivor:
             mesh.health(survivor)["leader"], 30, mesh.logs)
        time.sleep(3)
        applies.done.set()
        applies.join(timeout=30)
        result = load.finish()
        assert result["failed"] == [], result["failed"][:10]
        assert result["ok"] > 100
        with mesh.api(survivor) as api:
            stored = {d["metadata"]["name"] for d in api.get("/api/v1/resources/Service").json()}
        assert applies.acked
        assert [n for n in applies.acked if n not in stored] == []
        mesh.start_replica(victim)
    print(f"proxies reconnected to the surviving replica after: {reconnects}")
    assert all(t < RECONNECT_BOUND_S for t in reconnects.values())


def test_postgres_restart_under_load(mesh: Mesh) -> None:
    load = Load(mesh)
    time.sleep(2)
    mesh.pg.stop()
    try:
        wait("r1 did not notice the store is away", lambda: not mesh.health("r1")[
            "store_available"], 60, mesh.logs)
        with mesh.api("r1", timeout=90) as api:
            refused = api.post("/api/v1/apply", json={**SERVICES[0],
                                                      "metadata": {"name": "during"}})
        assert refused.status_code == 503
        check = subprocess.run(
            [*GOSSAMER, "check"], capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "GOSSAMER_SERVER": mesh.url("r1"),
                 "GOSSAMER_CA_FILE": str(mesh.bundle),
                 "GOSSAMER_TOKEN": (mesh.root / "r1" / "admin-token").read_text().strip()})
        assert check.returncode == 1
        assert "store: UNAVAILABLE" in check.stdout
    finally:
        mesh.pg.start()

    def accepted() -> bool:
        with mesh.api("r1", timeout=60) as api:
            return api.post("/api/v1/apply", json={
                **SERVICES[0], "metadata": {"name": "after"}}).status_code == 200
    wait("writes are not accepted after the store returned", accepted, 90, mesh.logs)
    # Both replicas caught up from their last revision: the write reaches the sidecars.
    wait("the write after the outage did not reach web's sidecar", lambda: (
        "outbound|80||after.default" in _envoy_clusters(mesh, "web-0", "b")), 60, mesh.logs)
    # Each replica says so once it reached the database again (its listener's
    # reconnect backs off up to 2 s).
    wait("a replica still reports its store away", lambda: all(
        mesh.health(r)["store_available"] for r in mesh.replicas), 30, mesh.logs)
    time.sleep(2)
    result = load.finish()
    assert result["failed"] == [], result["failed"][:10]
    assert result["ok"] > 100
