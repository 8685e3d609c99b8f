"""The mesh across hosts (network namespaces on one bridge, tests/hosts.py).

Host `a` runs the control plane on its bridge address, API over TLS, advertising
itself by name (`a`, in every host's hosts file). Hosts `b` and `c` join with only
what a new host has: the control plane's URL, a join token in a file, and the CA
bundle (c) or its fingerprint (b). b's app calls `catalog` through its sidecar
(explicit mode: HTTP_PROXY) and c's app answers it, over mutual TLS between the
hosts. The CLI runs in the root namespace, over TLS, with the bundle."""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gossamer.ca import fingerprint
from tests.hosts import Host, HostNetwork

pytestmark = pytest.mark.slow
GOSSAMER = [sys.executable, "-m", "gossamer"]
API_PORT, XDS_PORT, APP_PORT, INBOUND_PORT = 15080, 15010, 8080, 15006
SERVICES = [{"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Service",
             "metadata": {"name": name}, "spec": {"selector": {"app": name},
                                                  "ports": [{"port": 80}]}}
            for name in ("web", "catalog")]


@dataclass
class Universe:
    net: HostNetwork
    state: Path
    logs: Path

    @property
    def a(self) -> Host:
        return self.net["a"]

    @property
    def url(self) -> str:
        """The API as the root namespace dials it: by address."""
        return f"https://{self.a.address}:{API_PORT}"

    @property
    def bundle_file(self) -> Path:
        return self.state / "ca-bundle.pem"

    @property
    def admin_token(self) -> str:
        return (self.state / "admin-token").read_text().strip()

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, trust_env=False, timeout=10,
                            verify=ssl.create_default_context(cafile=self.bundle_file),
                            headers={"Authorization": f"Bearer {self.admin_token}"})

    def join_token(self, service: str) -> Path:
        with self.api() as api:
            token = api.post("/api/v1/tokens", json={"scope": "join", "service": service})
        path = self.state.parent / f"{service}.token"
        path.write_text(token.json()["token"] + "\n")
        path.chmod(0o600)
        return path


def _agent(service: str, trust: list[str], token_file: Path, workdir: Path,
           app: list[str]) -> list[str]:
    return [*GOSSAMER, "proxy", "--service", service, "--name", f"{service}-0",
            "--control-plane", f"https://a:{API_PORT}", "--token-file", str(token_file), *trust,
            "--app-port", str(APP_PORT), "--inbound-port", str(INBOUND_PORT),
            "--probe-path", "/healthz", "--drain-seconds", "0.5", "--workdir", str(workdir),
            "--", sys.executable, "-m", "gossamer.demo.app", *app]


def _wait(what: str, check: Any, timeout: float = 90.0, logs: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except (OSError, httpx.HTTPError):
            found = None
        if found:
            return found
        time.sleep(0.2)
    tails = "".join(f"\n--- {p.name}\n{p.read_text()[-3000:]}"
                    for p in sorted(logs.glob("*.log"))) if logs else ""
    raise AssertionError(f"{what} after {timeout}s{tails}")


@pytest.fixture(scope="module")
def universe(module_netns_hosts: HostNetwork,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Universe]:
    net = module_netns_hosts
    a, b, c = net.add("a"), net.add("b"), net.add("c")
    root = tmp_path_factory.mktemp("universal")
    u = Universe(net, root / "state", root / "logs")
    u.logs.mkdir()
    a.popen([*GOSSAMER, "control-plane", "--state-dir", str(u.state), "--host", a.address,
             "--advertise-address", "a", "--api-port", str(API_PORT), "--xds-port",
             str(XDS_PORT)], log=u.logs / "control-plane.log")

    def up() -> bool:
        with u.api() as api:
            return api.get("/healthz").is_success
    _wait("the control plane is not up", lambda: u.bundle_file.exists() and up(), 60, u.logs)
    with u.api() as api:
        for doc in SERVICES:
            assert api.post("/api/v1/apply", json=doc).is_success
    pin = fingerprint.show(fingerprint.of_bundle(u.bundle_file.read_text())[0])
    c.popen(_agent("catalog", ["--ca-file", str(u.bundle_file)], u.join_token("catalog"),
                   root / "c", ["--name", "catalog"]),
            log=u.logs / "c.log", env={"DEMO_ACCESS_LOG": "1"})
    b.popen(_agent("web", ["--ca-fingerprint", pin], u.join_token("web"), root / "b",
                   ["--name", "web", "--call", "http://catalog/items"]), log=u.logs / "b.log")

    def healthy() -> bool:
        with u.api() as api:
            docs = api.get("/api/v1/resources/Workload").json()
            proxies = api.get("/api/v1/proxies").json()
        return (sorted(d["metadata"]["name"] for d in docs if d["spec"]["health"] == "Healthy")
                == ["catalog-0", "web-0"]
                and len([p for p in proxies if p["connected"] and p["synced"]]) == 2)
    _wait("the workloads are not healthy and in sync", healthy, 120, u.logs)
    yield u
    for host in (b, c, a):  # agents deregister and drain; the network kills what is left
        for proc in [p for p in net.started if host.netns in p.args]:
            proc.terminate()
            proc.wait(timeout=30)


CALL = """
import json, sys, urllib.request
out = []
for i in range(int(sys.argv[1])):
    with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[2]}/?i={i}", timeout=10) as r:
        out.append([r.status, json.loads(r.read())])
print(json.dumps(out))
"""


def test_a_call_crosses_hosts_over_mutual_tls(universe: Universe) -> None:
    u, requests = universe, 20
    b, c = u.net["b"], u.net["c"]
    with u.api() as api:
        workloads = {d["metadata"]["name"]: d["spec"]
                     for d in api.get("/api/v1/resources/Workload").json()}
    # Each agent detected its host's address, registered it, and Envoy listens there.
    assert (workloads["web-0"]["address"], workloads["catalog-0"]["address"]) == (
        b.address, c.address)
    admin = _admin_port(u, "web-0")
    clusters = b.run(["curl", "-s", f"http://127.0.0.1:{admin}/clusters"], check=True).stdout
    assert f"outbound|80||catalog.default::{c.address}:{INBOUND_PORT}::" in clusters
    # Envoy's admin stays on the host's loopback: not reachable at its address.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((b.address, admin), timeout=10).close()

    out = b.run([sys.executable, "-c", CALL, str(requests), str(APP_PORT)], check=True)
    answers = json.loads(out.stdout)
    assert [status for status, _ in answers] == [200] * requests
    for _, body in answers:
        upstream = body["upstreams"]["http://catalog/items"]
        assert upstream["status"] == 200
        assert upstream["body"]["workload"] == "catalog-0"
        # c's sidecar verified b's certificate and says whose it was.
        xfcc = upstream["body"]["headers"]["x-forwarded-client-cert"]
        assert "URI=spiffe://gossamer.local/ns/default/sa/web" in xfcc
        assert "By=spiffe://gossamer.local/ns/default/sa/catalog" in xfcc
    served = re.findall(r'"GET /items HTTP/1\.1" 200', (u.logs / "c.log").read_text())
    assert len(served) == requests


def _admin_port(u: Universe, workload: str) -> int:
    with u.api() as api:
        [proxy] = [p for p in api.get("/api/v1/proxies").json()
                   if p["metadata"]["workload"] == workload]
    return int(proxy["metadata"]["admin_port"])


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GOSSAMER_")}
    return subprocess.run([*GOSSAMER, *args], capture_output=True, text=True, timeout=60,
                          env={**clean, **env}, check=False)


def test_the_cli_checks_the_mesh_over_tls_from_the_root(universe: Universe) -> None:
    u = universe
    env = {"GOSSAMER_SERVER": u.url, "GOSSAMER_TOKEN": u.admin_token,
           "GOSSAMER_CA_FILE": str(u.bundle_file)}
    out = _cli("check", env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "proxy catalog-0.default: connected, in sync" in lines
    assert "proxy web-0.default: connected, in sync" in lines
    untrusted = _cli("check", env={**env, "GOSSAMER_CA_FILE": ""})
    assert untrusted.returncode == 1
    assert len(untrusted.stderr.splitlines()) == 1
    assert "failed TLS verification" in untrusted.stderr


PLAIN = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10) as s:
    s.sendall(b"GET /api/v1/ca HTTP/1.1\\r\\nHost: a\\r\\nAuthorization: Bearer x\\r\\n\\r\\n")
    try:
        print(repr(s.recv(100)))
    except ConnectionResetError:
        print(repr(b""))
"""


def test_no_plaintext_api_from_another_host(universe: Universe) -> None:
    u, b = universe, universe.net["b"]
    answer = b.run([sys.executable, "-c", PLAIN, u.a.address, str(API_PORT)], check=True)
    assert not answer.stdout.startswith("b'HTTP"), answer.stdout
    # The same port over TLS, verified by the name the control plane advertises.
    fetch = ("import httpx, ssl, sys; print(httpx.get(sys.argv[1], verify="
             "ssl.create_default_context(cafile=sys.argv[2])).status_code)")
    tls = b.run([sys.executable, "-c", fetch, f"https://a:{API_PORT}/healthz",
                 str(u.bundle_file)], check=True)
    assert tls.stdout.strip() == "200"


def test_a_wrong_fingerprint_is_refused_in_one_line(universe: Universe, tmp_path: Path) -> None:
    u, b = universe, universe.net["b"]
    wrong = "sha256:" + "ab" * 32
    out = b.run([*GOSSAMER, "proxy", "--service", "web", "--app-port", "0", "--control-plane",
                 f"https://a:{API_PORT}", "--token-file", str(u.join_token("web")),
                 "--ca-fingerprint", wrong, "--workdir", str(tmp_path)],
                env={"GOSSAMER_CONNECT_TIMEOUT": "10"})
    assert out.returncode == 1
    actual = fingerprint.show(fingerprint.of_bundle(u.bundle_file.read_text())[0])
    assert out.stderr.splitlines() == [
        f"error: the control plane at https://a:{API_PORT} is not the pinned one: its CA "
        f"bundle ({actual}) does not hold --ca-fingerprint {wrong}"]
