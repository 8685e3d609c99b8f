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
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from gossamer.agent.ports import free_port
from gossamer.contract.protocol import Protocol
from gossamer.local.netns import IsolatedHosts, NetnsError
from gossamer.local.spec import LocalApp, Process, upstream_target
from gossamer.model import ExternalService, Gateway, Service
from gossamer.model.gateway import GATEWAY_CLASS
from gossamer.store.files import private_dir


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
    inbound_port: int  # 0: a pure client (`inbound: false`)
    outbound_port: int
    admin_port: int
    # Each `upstreams` entry (without =LOCALPORT) -> this instance's local port for it.
    upstreams: dict[str, int] = field(default_factory=dict)
    address: str = "127.0.0.1"  # with --isolate, its own namespace's


@dataclass
class LocalRun:
    app: LocalApp
    state_dir: Path
    api_port: int = 0
    xds_port: int = 0
    drain_seconds: float = 1.0
    quiet: bool = False
    # Workload certificate lifetime the agents ask for (None: the CA's default).
    cert_ttl: int | None = None
    # More `gossamer control-plane` options (e.g. `--stats-window 600`).
    control_plane_args: tuple[str, ...] = ()
    # Each instance in its own network namespace, captured (root; netns.py).
    isolate: bool = False
    hosts: IsolatedHosts | None = None
    children: list[Child] = field(default_factory=list)
    _tokens: dict[tuple[str, str], str] = field(default_factory=dict)
    instances: list[Instance] = field(default_factory=list)

    def __post_init__(self) -> None:
        private_dir(self.state_dir)

    @property
    def server(self) -> str:
        if self.hosts is not None:  # beyond loopback the API serves TLS
            return f"https://{self.hosts.bridge_address}:{self.api_port}"
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def bundle_file(self) -> Path:
        """The control plane's trust bundle, which verifies its TLS API."""
        return self.state_dir / "store" / "ca-bundle.pem"

    def _verify(self) -> ssl.SSLContext | bool:
        if self.hosts is None:
            return True
        return ssl.create_default_context(cafile=self.bundle_file)

    def isolate_hosts(self) -> None:
        """Remove what a crashed run with this state directory left, then make the
        bridge the instances' namespaces will hang off."""
        record = self.state_dir / "isolated-hosts.json"
        try:
            if IsolatedHosts.clean_stale(record):
                self.say(f"gossamer: removed the namespaces a previous run left ({record})")
            self.hosts = IsolatedHosts(record)
            self.hosts.create()
        except NetnsError as exc:
            raise UpError(f"--isolate: {exc}") from exc

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    @property
    def admin_token_file(self) -> Path:
        return self.state_dir / "store" / "admin-token"

    @property
    def ca_file(self) -> Path:
        return self.state_dir / "ca.pem"

    def api(self) -> httpx.Client:
        """An admin client of the control plane this run started."""
        headers = {}
        if self.admin_token_file.exists():
            headers["Authorization"] = f"Bearer {self.admin_token_file.read_text().strip()}"
        return httpx.Client(base_url=self.server, headers=headers, timeout=10, trust_env=False,
                            verify=self._verify())

    def _call(self, method: str, path: str, body: object = None) -> Any:
        with self.api() as client:
            resp = client.request(method, path, json=body)
        if resp.status_code >= 400:
            raise UpError(f"{method} {path}: {resp.json().get('error', resp.text)}")
        return resp.json()

    def _secure(self) -> bool:
        return bool(self._call("GET", "/api/v1/mesh")["xds"].get("tls"))

    def write_ca_file(self) -> None:
        """The trust anchor agents verify the control plane with (public data)."""
        bundle = self._call("GET", "/api/v1/ca")["bundle_pem"]
        self.ca_file.write_text(bundle)

    def _join_token(self, namespace: str, service: str) -> str:
        key = (namespace, service)
        if key not in self._tokens:
            out = self._call("POST", "/api/v1/tokens", {
                "scope": "join", "service": service, "namespace": namespace,
                "description": "gossamer up"})
            self._tokens[key] = str(out["token"])
        return self._tokens[key]

    def _spawn(self, name: str, argv: list[str], role: str, console: bool = False,
               env: dict[str, str] | None = None) -> Child:
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = None if console else logs / f"{name}.log"
        out: IO[bytes] | int | None = None
        if log_path is not None:
            out = open(log_path, "ab")  # noqa: SIM115 - handed to the child
        popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT if out else None,
                                 env=None if env is None else {**os.environ, **env},
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        if isinstance(out, int) or out is None:
            pass
        else:
            out.close()
        child = Child(name, popen, log_path, role)
        self.children.append(child)
        return child

    def start_control_plane(self) -> None:
        """On 15080/15010 when free, else on free ports. Two runs starting at once can
        both see 15080 free; the one that loses the bind starts again on free ports, and
        neither mistakes the other's control plane for its own (healthz names its pid)."""
        if self.isolate and self.hosts is None:
            self.isolate_hosts()
        chosen = not self.api_port
        for _ in range(3):
            self.api_port = self.api_port or _port_or_free(15080)
            self.xds_port = self.xds_port or _port_or_free(15010)
            child = self._spawn_control_plane()
            if self._await_control_plane(child):
                return
            if not chosen or child.popen.poll() is None:
                break
            self.children.remove(child)
            self.api_port, self.xds_port = free_port(), free_port()  # lost a port race
        raise UpError(f"the control plane did not start; see {child.log}")

    def _spawn_control_plane(self) -> Child:
        gossamer = [sys.executable, "-m", "gossamer"]
        host = ["--host", self.hosts.bridge_address] if self.hosts is not None else []
        store = str(self.state_dir / "store")
        child = self._spawn("control-plane", [*gossamer, "control-plane", "--state-dir", store,
                                              "--api-port", str(self.api_port), "--xds-port",
                                              str(self.xds_port), *host,
                                              *self.control_plane_args], "control-plane")
        if self.hosts is not None:
            self.hosts.note(child.popen.pid, store)
        return child

    def _await_control_plane(self, child: Child, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if child.popen.poll() is not None:
                return False
            if self.hosts is not None and not self.bundle_file.exists():
                time.sleep(0.1)
                continue
            try:
                resp = httpx.get(self.server + "/healthz", timeout=1, trust_env=False,
                                 verify=self._verify())
                if resp.is_success and resp.json().get("pid") == child.popen.pid:
                    return True
            except (httpx.HTTPError, ValueError, ssl.SSLError):
                pass
            time.sleep(0.1)
        return False

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
        for ns, via in self.egress_gateways():  # so does an egress gateway
            if (ns, via) not in declared:
                declared.add((ns, via))
                docs.insert(0, _service_doc(ns, via, Protocol.HTTP))
        for doc in docs:
            self._call("POST", "/api/v1/apply", doc)

    def start_processes(self, stop: threading.Event | None = None,
                        timeout: float = 60.0) -> None:
        if self._secure():
            self.write_ca_file()
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
                for gw in self.gateways():  # each Gateway's one replica
                    instance, argv, env = self.plan_gateway(gw)
                    self._spawn(instance.workload, argv, "proxy", env=env)
                    self.instances.append(instance)
                for ns, via in self.egress_gateways():  # and each egress gateway's
                    instance, argv, env = self.plan_egress_gateway(ns, via)
                    self._spawn(instance.workload, argv, "proxy", env=env)
                    self.instances.append(instance)
                self.wait_programmed(timeout, stop)
                self.wait_healthy(timeout, stop)

    def wait_programmed(self, timeout: float, stop: threading.Event | None = None) -> None:
        """Until each Gateway is Programmed: its replica has ACKed its config, so its
        listeners take connections when `up` says it is ready."""
        deadline = time.monotonic() + timeout
        for gw in self.gateways():
            path = f"/api/v1/resources/Gateway/{gw.metadata.namespace}/{gw.metadata.name}"
            while True:
                conditions = self._call("GET", path).get("status", {}).get("conditions", [])
                if any(c["type"] == "Programmed" and c["status"] == "True"
                       for c in conditions):
                    break
                if (stop is not None and stop.is_set()) or time.monotonic() > deadline:
                    raise UpError(f"Gateway {gw.metadata.name} not programmed after "
                                  f"{timeout:.0f}s; see {self.state_dir / 'logs'}")
                time.sleep(0.2)

    def gateways(self) -> list[Gateway]:
        """The file's Gateways of class gossamer: `up` runs one replica of each."""
        return [r for r in self.app.resources if isinstance(r, Gateway)
                and r.spec.gateway_class_name == GATEWAY_CLASS]

    def plan_gateway(self, gw: Gateway) -> tuple[Instance, list[str], dict[str, str] | None]:
        """`gossamer gateway` for `gw` on loopback: its listeners bind 127.0.0.1 on the
        Gateway's ports; its identity is the Gateway's name (a join token for it)."""
        name, ns = gw.metadata.name, gw.metadata.namespace
        workload, admin = f"{name}-0", free_port()
        argv = [sys.executable, "-m", "gossamer", "gateway", "--name", name,
                "--namespace", ns, "--replica", workload, "--server", self.server,
                "--address", "127.0.0.1", "--admin-port", str(admin),
                "--drain-seconds", str(self.drain_seconds),
                "--workdir", str(self.state_dir / "proxies" / workload)]
        env = None
        if self.ca_file.exists():
            argv += ["--ca-file", str(self.ca_file)]
            env = {"GOSSAMER_TOKEN": self._join_token(ns, name)}
        return Instance(workload, name, 0, 0, admin), argv, env

    def egress_gateways(self) -> list[tuple[str, str]]:
        """(namespace, Service) of each egress gateway the file's ExternalServices
        name in `egress.via`: `up` runs one replica of each."""
        return sorted({(r.metadata.namespace, r.spec.egress.via) for r in self.app.resources
                       if isinstance(r, ExternalService) and r.spec.egress is not None})

    def plan_egress_gateway(self, ns: str, via: str
                            ) -> tuple[Instance, list[str], dict[str, str] | None]:
        """`gossamer gateway --egress` for Service `via` on loopback (a Workload of it,
        healthy while its Envoy runs)."""
        workload, inbound, admin = f"{via}-0", free_port(), free_port()
        argv = [sys.executable, "-m", "gossamer", "gateway", "--egress", "--name", via,
                "--namespace", ns, "--replica", workload, "--server", self.server,
                "--address", "127.0.0.1", "--inbound-port", str(inbound),
                "--admin-port", str(admin), "--drain-seconds", str(self.drain_seconds),
                "--workdir", str(self.state_dir / "proxies" / workload)]
        env = None
        if self.ca_file.exists():
            argv += ["--ca-file", str(self.ca_file)]
            env = {"GOSSAMER_TOKEN": self._join_token(ns, via)}
        return Instance(workload, via, inbound, 0, admin), argv, env

    def _start_instance(self, proc: Process, replica: int) -> None:
        instance, argv, env = self.plan_instance(proc, replica)
        self._spawn(instance.workload, argv, "proxy", console=proc.spec.console, env=env)
        self.instances.append(instance)

    def plan_instance(self, proc: Process, replica: int
                      ) -> tuple[Instance, list[str], dict[str, str] | None]:
        """Instance `replica` of `proc`: its ports, and the agent's argv and extra
        environment that run it."""
        s = proc.spec
        workload = f"{proc.metadata.name}-{replica}"
        app_port, inbound, outbound, admin = (free_port() for _ in range(4))
        if not s.inbound:
            app_port = inbound = 0
        # up picks the free upstream ports itself, so command and env can name them.
        upstreams = {target: local or free_port()
                     for target, local in map(upstream_target, s.upstreams)}
        subst: dict[str, object] = {"port": str(app_port), "python": sys.executable,
                                    "name": workload, "replica": str(replica),
                                    "service": s.service, "upstream": upstreams}
        # Placeholders checked by ProcessSpec.
        command = [part.format(**subst) for part in s.command]
        address, prefix, workdir = "127.0.0.1", [], self.state_dir / "proxies" / workload
        if self.hosts is not None:  # its own host, captured; Envoy's uid reaches workroot
            netns, address = self.hosts.add()
            prefix, workdir = ["ip", "netns", "exec", netns], self.hosts.workroot / workload
        argv = [*prefix, sys.executable, "-m", "gossamer", "proxy", "--service", s.service,
                "--namespace", proc.metadata.namespace, "--name", workload,
                "--app-port", str(app_port), "--inbound-port", str(inbound),
                "--outbound-port", str(outbound), "--admin-port", str(admin),
                "--server", self.server, "--address", address,
                "--drain-seconds", str(self.drain_seconds), "--workdir", str(workdir)]
        if self.hosts is not None:
            argv.append("--capture")
        for k, v in {"app": s.service, **proc.metadata.labels, **s.labels}.items():
            argv += ["--label", f"{k}={v}"]
        if s.probe_path:
            argv += ["--probe-path", s.probe_path]
        for target, local in upstreams.items():
            argv += ["--upstream", f"{target}={local}"]
        if s.protocol is not None:
            argv += ["--protocol", s.protocol.value]
        for k, v in s.env.items():
            argv += ["--env", f"{k}={v.format(**subst)}"]
        env = None
        if self.ca_file.exists():
            argv += ["--ca-file", str(self.ca_file)]
            if self.cert_ttl:
                argv += ["--cert-ttl", str(self.cert_ttl)]
            # Through the environment, never argv: argv is visible to every user.
            env = {"GOSSAMER_TOKEN": self._join_token(proc.metadata.namespace, s.service)}
        instance = Instance(workload, s.service, inbound, outbound, admin, upstreams, address)
        return instance, [*argv, "--", *command], env

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
        if self.hosts is not None:  # and what is left inside the namespaces, by PID
            try:
                self.hosts.close()
            except NetnsError as exc:
                raise UpError(f"--isolate: {exc}") from exc
            self.hosts = None

    def wait_healthy(self, timeout: float = 60.0,
                     stop: threading.Event | None = None) -> None:
        """Until every serving instance is a Healthy workload (its probe passed); pure
        clients are not registered."""
        want = {i.workload for i in self.instances if i.inbound_port}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if stop is not None and stop.is_set():
                raise UpError("interrupted")
            docs = self._call("GET", "/api/v1/resources/Workload")
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
    return _service_doc(proc.metadata.namespace, proc.spec.service,
                        proc.spec.protocol or Protocol.HTTP)


def _service_doc(namespace: str, name: str, protocol: Protocol) -> dict[str, object]:
    return {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"app": name},
                     "ports": [{"port": 80, "protocol": protocol.value}]}}


def _port_or_free(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return free_port()
