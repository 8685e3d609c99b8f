"""The captured path of the instruction-count benchmark: `gossamer proxy --capture`
on both sides, each workload in its own network namespace (tests/hosts.py), the
control plane in the root namespace on the namespaces' bridge.

    caller netns: sequential.py -> backend's virtual IP:80 -(iptables)-> Envoy's
                  outbound_capture listener -> mTLS, HTTP/2 over the bridge ->
    callee netns: -(iptables)-> Envoy's inbound listener -> staticapp.py

The same workloads as `gossamer` (a client and `backend`), the same app and
client, the same mesh defaults; what differs is how traffic reaches the
sidecars. Needs root, `ip` and `iptables`. Everything it makes (namespaces,
links, rules, processes) is removed by `stop`, also after a failure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from callgrind import COMM, write_wrapper
from irconfigs import APP, START_TIMEOUT_S, Started, wait_answer
from procstat import children_named
from tests.hosts import HostNetwork, missing

from gossamer.agent.ports import free_port
from gossamer.envoy.binary import find_envoy

PY = sys.executable
SERVICE = {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Service",
           "metadata": {"name": "backend"},
           "spec": {"selector": {"app": "backend"}, "ports": [{"port": 80, "protocol": "http"}]}}


class Captured:
    name = "captured"

    def __init__(self, work: Path, scrape_interval: float = 3600.0) -> None:
        reason = missing()
        if reason is not None:
            raise RuntimeError(f"the captured path: {reason}")
        self.work = work / "captured"
        self.work.mkdir(parents=True, exist_ok=True)
        self.work.chmod(0o755)
        self.scrape_interval = scrape_interval
        self.net: HostNetwork | None = None
        self.cp: subprocess.Popen[bytes] | None = None
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.admin: dict[str, int] = {}
        self.api_port, self.xds_port = free_port(), free_port()
        self.token = ""

    @property
    def server(self) -> str:
        assert self.net is not None
        return f"https://{self.net.root_address}:{self.api_port}"

    def _api(self) -> httpx.Client:
        verify = ssl.create_default_context(cafile=str(self.work / "cp" / "ca-bundle.pem"))
        return httpx.Client(base_url=self.server, trust_env=False, timeout=10, verify=verify,
                            headers={"Authorization": f"Bearer {self.token}"})

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        with self._api() as api:
            resp = api.request(method, path, json=body)
        if resp.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {resp.status_code} {resp.text[:200]}")
        return resp.json()

    def _start_control_plane(self) -> None:
        assert self.net is not None
        log = open(self.work / "control-plane.log", "ab")  # noqa: SIM115 - the child's
        self.cp = subprocess.Popen(
            [PY, "-m", "gossamer", "control-plane", "--host", self.net.root_address,
             "--api-port", str(self.api_port), "--xds-port", str(self.xds_port),
             "--state-dir", str(self.work / "cp"), "--stats-interval",
             str(self.scrape_interval), "--stats-window", str(max(60.0, self.scrape_interval))],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()
        token = self.work / "cp" / "admin-token"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if token.exists() and (self.work / "cp" / "ca-bundle.pem").exists():
                self.token = token.read_text().strip()
                with contextlib.suppress(httpx.HTTPError, ssl.SSLError, RuntimeError):
                    self._call("GET", "/healthz")
                    return
            time.sleep(0.2)
        raise RuntimeError(f"control plane not up; see {self.work / 'control-plane.log'}")

    def _agent(self, name: str, host: str, service: str, app_port: int, command: list[str],
               *extra: str) -> None:
        assert self.net is not None
        self.admin[name] = free_port()
        token = self._call("POST", "/api/v1/tokens", {"scope": "join", "service": service,
                                                      "namespace": "default"})["token"]
        argv = [PY, "-m", "gossamer", "proxy", "--service", service, "--name", name,
                "--app-port", str(app_port), "--server", self.server,
                "--ca-file", str(self.work / "ca.pem"), "--admin-port", str(self.admin[name]),
                "--outbound-port", str(free_port()), "--workdir", str(self.work / name),
                "--drain-seconds", "0.5", "--address", self.net[host].address, "--capture",
                *extra, "--", *command]
        env = {"GOSSAMER_TOKEN": token, "GOSSAMER_ENVOY": str(self.wrapper)}
        self.agents[name] = self.net[host].popen(argv, log=self.work / f"{name}.log", env=env)

    def _envoy_of(self, name: str) -> int:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            pids = children_named(self.agents[name].pid, COMM)
            if pids:
                return pids[0]
            time.sleep(0.2)
        raise RuntimeError(f"no Envoy under {name}'s agent")

    def start(self) -> Started:
        self.net = HostNetwork()
        self.net.add("caller")
        self.net.add("callee")
        out = self.work / "callgrind"
        out.mkdir(exist_ok=True)
        out.chmod(0o777)  # Envoy runs as the proxy uid (1337) under capture
        self.wrapper = write_wrapper(find_envoy(), out)
        self._start_control_plane()
        (self.work / "ca.pem").write_text(self._call("GET", "/api/v1/ca")["bundle_pem"])
        self._call("POST", "/api/v1/apply", SERVICE)
        app = free_port()
        self._agent("backend-0", "callee", "backend", app, [PY, str(APP), str(app)],
                    "--inbound-port", "15006", "--probe-path", "/", "--label", "app=backend")
        self._agent("client-0", "caller", "client", 0, ["sleep", "3600"])
        vip = ""
        deadline = time.monotonic() + START_TIMEOUT_S
        while not vip and time.monotonic() < deadline:
            vip = self._call("GET", "/api/v1/resources/Service/default/backend").get(
                "status", {}).get("virtualIP", "")
            time.sleep(0.5)
        if not vip:
            raise RuntimeError("backend got no virtual IP")
        prefix = self.net["caller"].argv([])
        wait_answer(vip, 80, prefix)
        return Started(vip, 80, {"caller": self._envoy_of("client-0"),
                                 "callee": self._envoy_of("backend-0")},
                       {"caller": self.admin["client-0"], "callee": self.admin["backend-0"]},
                       out, prefix, {"caller": prefix, "callee": self.net["callee"].argv([])})

    def stop(self) -> None:
        for proc in self.agents.values():  # each stops its Envoy and app, removes its rules
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
        for proc in self.agents.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
        if self.cp is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.cp.pid, signal.SIGTERM)
            try:
                self.cp.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.cp.pid, signal.SIGKILL)
                self.cp.wait()
        if self.net is not None:
            self.net.close()  # whatever is left in the namespaces, then the namespaces
