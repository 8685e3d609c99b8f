"""`gossamer up`: run the control plane and every Process of a file, each
instance beside its own sidecar, until Ctrl-C; then stop all of it cleanly.

Theory of operation: children are started in their own process groups and
remembered by PID. On SIGINT/SIGTERM the agents get SIGTERM first (each one
deregisters, drains, stops its app and its Envoy), then the control plane;
anything still alive after a grace period is killed by process group. Only
processes this command started are ever signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from gossamer.agent.ports import free_port
from gossamer.local.spec import LocalApp, Process
from gossamer.model import Resource, Service
from gossamer.model.service import Protocol


class UpError(Exception):
    """Local mode could not start the application."""


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path | None
    role: str  # control-plane | proxy


@dataclass
class Instance:
    workload: str
    service: str
    inbound_port: int
    outbound_port: int
    admin_port: int


@dataclass
class LocalRun:
    app: LocalApp
    state_dir: Path
    api_port: int = 0
    xds_port: int = 0
    drain_seconds: float = 1.0
    quiet: bool = False
    children: list[Child] = field(default_factory=list)
    instances: list[Instance] = field(default_factory=list)

    @property
    def server(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def _spawn(self, name: str, argv: list[str], role: str, console: bool = False) -> Child:
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = None if console else logs / f"{name}.log"
        out: IO[bytes] | int | None = None
        if log_path is not None:
            out = open(log_path, "ab")  # noqa: SIM115 - handed to the child
        popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT if out else None,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        if isinstance(out, int) or out is None:
            pass
        else:
            out.close()
        child = Child(name, popen, log_path, role)
        self.children.append(child)
        return child

    def start_control_plane(self) -> None:
        self.api_port = self.api_port or _port_or_free(15080)
        self.xds_port = self.xds_port or _port_or_free(15010)
        gossamer = [sys.executable, "-m", "gossamer"]
        child = self._spawn("control-plane", [*gossamer, "control-plane", "--state-dir",
                                      str(self.state_dir / "store"), "--api-port",
                                      str(self.api_port), "--xds-port", str(self.xds_port)],
                    "control-plane")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.server + "/healthz", timeout=1, trust_env=False).is_success:
                    return
            except httpx.HTTPError:
                pass
            if child.popen.poll() is not None:
                break
            time.sleep(0.1)
        raise UpError(f"the control plane did not start; see {child.log}")

    def restart_control_plane(self, down_for: float = 0.0) -> None:
        """Stop the control plane and start it again on the same ports and store;
        sidecars keep serving meanwhile and resync when it is back."""
        cp = next(c for c in self.children if c.role == "control-plane")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(cp.popen.pid, signal.SIGTERM)
        cp.popen.wait(timeout=20)
        self.children.remove(cp)
        time.sleep(down_for)
        self.start_control_plane()

    def apply_resources(self) -> None:
        declared = {(r.metadata.namespace, r.metadata.name) for r in self.app.resources
                    if isinstance(r, Service)}
        docs = [r.to_document() for r in self.app.resources]
        for proc in self.app.processes:
            key = (proc.metadata.namespace, proc.spec.service)
            if key not in declared and proc.spec.inbound:  # a Process implies its Service
                declared.add(key)
                docs.insert(0, _implied_service(proc))
        for doc in docs:
            resp = httpx.post(self.server + "/api/v1/apply", json=doc, timeout=10,
                              trust_env=False)
            if resp.status_code >= 400:
                raise UpError(f"apply {doc['kind']} {doc['metadata']['name']}: "
                              f"{resp.json().get('error', resp.text)}")

    def start_processes(self, stop: threading.Event | None = None,
                        timeout: float = 60.0) -> None:
        """Serving instances first; pure clients (`inbound: false`, such as a load
        generator) only once every serving instance is healthy, so their first
        requests do not meet a half-started application."""
        for serving in (True, False):
            for proc in self.app.processes:
                if proc.spec.inbound is serving:
                    for i in range(proc.spec.replicas):
                        self._start_instance(proc, i)
            if serving:
                self.wait_healthy(timeout, stop)

    def _start_instance(self, proc: Process, replica: int) -> None:
        s = proc.spec
        workload = f"{proc.metadata.name}-{replica}"
        app_port, inbound, outbound, admin = (free_port() for _ in range(4))
        if not s.inbound:
            app_port = inbound = 0
        subst = {"port": str(app_port), "python": sys.executable, "name": workload,
                 "replica": str(replica), "service": s.service}
        command = [part.format(**subst) for part in s.command]  # checked by ProcessSpec
        argv = [sys.executable, "-m", "gossamer", "proxy", "--service", s.service,
                "--namespace", proc.metadata.namespace, "--name", workload,
                "--app-port", str(app_port), "--inbound-port", str(inbound),
                "--outbound-port", str(outbound), "--admin-port", str(admin),
                "--server", self.server, "--address", "127.0.0.1",
                "--drain-seconds", str(self.drain_seconds),
                "--workdir", str(self.state_dir / "proxies" / workload)]
        for k, v in {"app": s.service, **proc.metadata.labels, **s.labels}.items():
            argv += ["--label", f"{k}={v}"]
        if s.probe_path:
            argv += ["--probe-path", s.probe_path]
        for up in s.upstreams:
            argv += ["--upstream", up]
        if s.protocol is not None:
            argv += ["--protocol", s.protocol.value]
        for k, v in s.env.items():
            argv += ["--env", f"{k}={v}"]
        full = [*argv, "--", *command]
        self._spawn(workload, full, "proxy", console=s.console)
        if s.inbound:
            self.instances.append(Instance(workload, s.service, inbound, outbound, admin))

    def stop(self, grace: float = 20.0) -> None:
        """Agents first (they drain and stop their apps), the control plane last.
        SIGTERM goes to each agent alone: it stops its own Envoy and app in order."""
        for role in ("proxy", "control-plane"):
            group = [c for c in self.children if c.role == role and c.popen.poll() is None]
            for c in group:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(c.popen.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            for c in group:
                try:
                    c.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(c.popen.pid, signal.SIGKILL)
                    c.popen.wait()
            # The app children of agents live in their own groups; the agent stops them.

    def wait_healthy(self, timeout: float = 60.0,
                     stop: threading.Event | None = None) -> None:
        """Until every instance is a Healthy workload (its probe passed)."""
        want = {i.workload for i in self.instances}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if stop is not None and stop.is_set():
                raise UpError("interrupted")
            docs = httpx.get(self.server + "/api/v1/resources/Workload",
                             timeout=5, trust_env=False).json()
            healthy = {d["metadata"]["name"] for d in docs
                       if d["spec"].get("health") == "Healthy"}
            if want <= healthy:
                return
            dead = [c for c in self.children if c.popen.poll() is not None]
            if dead:
                raise UpError(f"{dead[0].name} exited; see {dead[0].log}")
            time.sleep(0.2)
        missing = ", ".join(sorted(want - healthy))
        raise UpError(f"instances not healthy after {timeout:.0f}s: {missing}")


def _implied_service(proc: Process) -> dict[str, object]:
    return {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Service",
            "metadata": {"name": proc.spec.service, "namespace": proc.metadata.namespace},
            "spec": {"selector": {"app": proc.spec.service},
                     "ports": [{"port": 80,
                                "protocol": (proc.spec.protocol or Protocol.HTTP).value}]}}


def _port_or_free(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return free_port()


def resources_of(app: LocalApp) -> list[Resource]:
    return app.resources
