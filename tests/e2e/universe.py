"""A mesh across namespace hosts (tests/hosts.py), shared by the modules that test it.

Host `a` runs the control plane on its bridge address, API over TLS, advertising
itself by name (`a`, in every host's hosts file). Hosts `b` and `c` join with only
what a new host has: the control plane's URL, a join token in a file, and the CA
bundle (c) or its fingerprint (b). b's app `web` calls `catalog` through its sidecar
(explicit mode: HTTP_PROXY) and c's app `catalog` answers it, over mutual TLS
between the hosts. The CLI runs in the root namespace, over TLS, with the bundle.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gossamer.ca import fingerprint
from tests.hosts import Host, HostNetwork

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

    def proxy(self, workload: str) -> dict[str, Any]:
        """The control plane's entry for the workload's sidecar."""
        with self.api() as api:
            [proxy] = [p for p in api.get("/api/v1/proxies").json()
                       if p["metadata"]["workload"] == workload]
        return proxy  # type: ignore[no-any-return]

    def cli(self, *args: str, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`gossamer ARGS` from the root namespace, over TLS with the bundle (by default)."""
        return cli(*args, env=env if env is not None else self.cli_env(), timeout=timeout)

    def cli_env(self) -> dict[str, str]:
        return {"GOSSAMER_SERVER": self.url, "GOSSAMER_TOKEN": self.admin_token,
                "GOSSAMER_CA_FILE": str(self.bundle_file)}


def agent_argv(service: str, trust: list[str], token_file: Path, workdir: Path,
               app: list[str]) -> list[str]:
    return [*GOSSAMER, "proxy", "--service", service, "--name", f"{service}-0",
            "--control-plane", f"https://a:{API_PORT}", "--token-file", str(token_file), *trust,
            "--app-port", str(APP_PORT), "--inbound-port", str(INBOUND_PORT),
            "--probe-path", "/healthz", "--drain-seconds", "0.5", "--workdir", str(workdir),
            "--", sys.executable, "-m", "gossamer.demo.app", *app]


def wait(what: str, check: Any, timeout: float = 90.0, logs: Path | None = None) -> Any:
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


def cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GOSSAMER_")}
    return subprocess.run([*GOSSAMER, *args], capture_output=True, text=True, timeout=timeout,
                          env={**clean, **env}, check=False)


def universe(net: HostNetwork, root: Path,
             control_plane_args: Sequence[str] = ()) -> Iterator[Universe]:
    """Hosts a, b, c on `net`, the control plane on a, web on b and catalog on c, healthy
    and in sync; stopped in order afterwards (the network removes what is left)."""
    a, b, c = net.add("a"), net.add("b"), net.add("c")
    u = Universe(net, root / "state", root / "logs")
    u.logs.mkdir()
    a.popen([*GOSSAMER, "control-plane", "--state-dir", str(u.state), "--host", a.address,
             "--advertise-address", "a", "--api-port", str(API_PORT), "--xds-port",
             str(XDS_PORT), *control_plane_args], log=u.logs / "control-plane.log")

    def up() -> bool:
        with u.api() as api:
            return api.get("/healthz").is_success
    wait("the control plane is not up", lambda: u.bundle_file.exists() and up(), 60, u.logs)
    with u.api() as api:
        for doc in SERVICES:
            assert api.post("/api/v1/apply", json=doc).is_success
    pin = fingerprint.show(fingerprint.of_bundle(u.bundle_file.read_text())[0])
    c.popen(agent_argv("catalog", ["--ca-file", str(u.bundle_file)], u.join_token("catalog"),
                       root / "c", ["--name", "catalog"]),
            log=u.logs / "c.log", env={"DEMO_ACCESS_LOG": "1"})
    b.popen(agent_argv("web", ["--ca-fingerprint", pin], u.join_token("web"), root / "b",
                       ["--name", "web", "--call", "http://catalog/items"]), log=u.logs / "b.log")

    def healthy() -> bool:
        with u.api() as api:
            docs = api.get("/api/v1/resources/Workload").json()
            proxies = api.get("/api/v1/proxies").json()
        return (sorted(d["metadata"]["name"] for d in docs if d["spec"]["health"] == "Healthy")
                == ["catalog-0", "web-0"]
                and len([p for p in proxies if p["connected"] and p["synced"]]) == 2)
    wait("the workloads are not healthy and in sync", healthy, 120, u.logs)
    yield u
    for host in (b, c, a):  # agents deregister and drain; the network kills what is left
        for proc in [p for p in net.started if host.netns in p.args]:
            proc.terminate()
            proc.wait(timeout=30)
