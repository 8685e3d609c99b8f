"""The three configurations bench/dataplane compares, each started once and
kept up for the whole run, so their measurements can interleave:

- `none`:     client -> nginx (the physical limit);
- `envoy`:    client -> Envoy -> (mTLS, HTTP/2) -> Envoy -> nginx, from the
              static YAML beside this file (certificates made at run time);
- `gossamer`: client -> sidecar -> sidecar -> nginx, a Gossamer local mesh with
              its defaults (control plane, agents, config over xDS);
- `captured`: the same mesh with every instance in its own network namespace,
              its traffic captured (`gossamer up --isolate`): the client sends to
              backend's virtual IP from its namespace and iptables hands the
              connection to its sidecar; root only, not run by default.

Every process here is started in its own session and stopped by PID/process
group; all of them listen on 127.0.0.1 only, but for `captured`'s, which listen
in their namespaces (198.18.0.0/15, on a bridge that routes nowhere).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import string
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from procstat import children_named

from gossamer.agent.ports import free_port
from gossamer.envoy.binary import find_envoy
from gossamer.local import netns
from gossamer.local.spec import load_local_app
from gossamer.local.up import LocalRun

HERE = Path(__file__).resolve().parent
HOST = "backend"  # the Host header every configuration gets
CONCURRENCY = 1  # Envoy worker threads: the Gossamer agent's default
TRUST_DOMAIN = "bench.local"


@dataclass
class Target:
    """What a load generator needs: where to send, and which Envoys to watch."""

    name: str
    port: int
    envoy_pids: list[int] = field(default_factory=list)  # caller sidecar first
    # The mesh's own processes on the proxies' CPU (control plane, agents): not
    # proxy CPU, but they compete with the proxies for that core.
    support_pids: list[int] = field(default_factory=list)
    address: str = "127.0.0.1"
    # What the load generator's argv starts with: `ip netns exec NS` for `captured`.
    prefix: list[str] = field(default_factory=list)


def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def wait_ok(port: int, timeout: float = 30.0) -> None:
    """Until GET http://127.0.0.1:port/ with Host: backend answers 200."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/", headers={"Host": HOST},
                          timeout=2, trust_env=False)
            if r.status_code == 200 and len(r.content) == 100:
                return
            last = f"{r.status_code} {r.text[:80]!r}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise RuntimeError(f"127.0.0.1:{port} not serving: {last}")


def start_nginx(work: Path, procs: list[subprocess.Popen[bytes]]) -> int:
    port = free_port()
    procs.append(_spawn([sys.executable, str(HERE / "backend.py"), str(port),
                         str(work / f"nginx-{port}")], work / f"nginx-{port}.log"))
    wait_ok(port)
    return port


class NoMesh:
    name = "none"

    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> Target:
        return Target(self.name, start_nginx(self.work, self.procs))

    def stop(self) -> None:
        _stop(self.procs)


# --- the hand-written Envoy pair -----------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def write_certs(out: Path) -> dict[str, str]:
    """A P-256 root and two P-256 workload certificates with SPIFFE URI SANs:
    the same kinds as Gossamer's CA issues."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("bench root")).issuer_name(
        _name("bench root")).public_key(ca_key.public_key()).serial_number(
        x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256()))
    files = {"ca": out / "ca.pem"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for who in ("client", "server"):
        key = ec.generate_private_key(ec.SECP256R1())
        san = x509.UniformResourceIdentifier(f"spiffe://{TRUST_DOMAIN}/ns/default/sa/{who}")
        cert = (x509.CertificateBuilder().subject_name(_name(who)).issuer_name(ca.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([san]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        files[f"{who}_cert"] = out / f"{who}.pem"
        files[f"{who}_key"] = out / f"{who}-key.pem"
        files[f"{who}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{who}_key"].write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        files[f"{who}_key"].chmod(0o600)
    return {k: str(v) for k, v in files.items()}


def envoy_argv(config: Path) -> list[str]:
    """The flags the Gossamer agent starts Envoy with (agent/envoy.py)."""
    return [find_envoy(), "-c", str(config), "--disable-hot-restart",
            "--concurrency", str(CONCURRENCY), "--log-level", "warning",
            "--drain-time-s", "1", "--drain-strategy", "immediate",
            "--file-flush-interval-msec", "1000"]


def pair_values(certs: dict[str, str], upstream_port: int
                ) -> tuple[int, dict[str, object], dict[str, object]]:
    """Template values of the hand-written pair: (the client's port, the server's
    values, the client's values), on fresh ports."""
    server_port, client_port = free_port(), free_port()
    server = {"admin_port": free_port(), "listen_port": server_port,
              "upstream_port": upstream_port, "cert": certs["server_cert"],
              "key": certs["server_key"], "ca": certs["ca"]}
    client = {"admin_port": free_port(), "listen_port": client_port,
              "upstream_port": server_port, "cert": certs["client_cert"],
              "key": certs["client_key"], "ca": certs["ca"],
              "peer_spiffe_id": f"spiffe://{TRUST_DOMAIN}/ns/default/sa/server"}
    return client_port, server, client


def start_pair(name: str, work: Path, procs: list[subprocess.Popen[bytes]],
               configs: list[Path], client_port: int) -> Target:
    """Start one Envoy per config (logs beside them), wait until the client's listener
    answers."""
    pids = []
    for conf in configs:
        proc = _spawn(envoy_argv(conf), work / f"{conf.stem}.log")
        procs.append(proc)
        pids.append(proc.pid)
    wait_ok(client_port)
    return Target(name, client_port, pids)


class StaticEnvoy:
    name = "envoy"

    def __init__(self, work: Path) -> None:
        self.work = work / "envoy"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.work.mkdir(parents=True, exist_ok=True)

    def _render(self, template: str, **values: object) -> Path:
        text = string.Template((HERE / template).read_text()).substitute(values)
        out = self.work / template
        out.write_text(text)
        return out

    def start(self) -> Target:
        certs = write_certs(self.work)
        app = start_nginx(self.work, self.procs)
        client_port, server_values, client_values = pair_values(certs, app)
        server = self._render("envoy-server.yaml", **server_values)
        client = self._render("envoy-client.yaml", **client_values)
        return start_pair(self.name, self.work, self.procs, [client, server], client_port)

    def stop(self) -> None:
        _stop(self.procs)


# --- Gossamer --------------------------------------------------------------------------

MESH = """\
apiVersion: mesh.gossamer.dev/v1alpha1
kind: Service
metadata: {{name: backend}}
spec:
  selector: {{app: backend}}
  ports: [{{port: 80, protocol: http}}]
---
apiVersion: local.gossamer.dev/v1alpha1
kind: Process
metadata: {{name: backend}}
spec:
  service: backend
  command: ["{{python}}", "{backend}", "{{port}}", "{work}/nginx-{{port}}"]
  probePath: /
---
# The load generator's side: a sidecar with outbound traffic only.
apiVersion: local.gossamer.dev/v1alpha1
kind: Process
metadata: {{name: client}}
spec:
  service: client
  inbound: false
  command: ["sleep", "infinity"]
"""


def _arg(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


class Gossamer:
    name = "gossamer"

    def __init__(self, work: Path) -> None:
        self.work = work / "gossamer"
        self.work.mkdir(parents=True, exist_ok=True)
        text = MESH.format(backend=HERE / "backend.py", work=self.work)
        self.run = LocalRun(load_local_app(text), self.work, quiet=True)

    def _envoy_of(self, workload: str) -> int:
        agent = next(c for c in self.run.children if c.name == workload).popen.pid
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pids = children_named(agent, "envoy")
            if pids:
                return pids[0]
            time.sleep(0.1)
        raise RuntimeError(f"no Envoy under {workload}'s agent (pid {agent})")

    def start(self) -> Target:
        self.run.start_control_plane()
        self.run.apply_resources()
        self.run.start_processes()
        client = next(c for c in self.run.children if c.name == "client-0")
        port = int(_arg(list(map(str, client.popen.args)), "--outbound-port"))  # type: ignore[arg-type]
        wait_ok(port)
        support = [c.popen.pid for c in self.run.children
                   if c.role == "control-plane" or c.name in ("client-0", "backend-0")]
        return Target(self.name, port, [self._envoy_of("client-0"), self._envoy_of("backend-0")],
                      support)

    def admin_ports(self) -> dict[int, int]:
        """Each sidecar's Envoy PID -> its admin port, as the run gave it to the agent."""
        return {self._envoy_of(c.name): int(_arg(list(map(str, c.popen.args)), "--admin-port"))  # type: ignore[arg-type]
                for c in self.run.children if c.role == "proxy"}

    def stop(self) -> None:
        self.run.stop()


class Captured(Gossamer):
    """`gossamer` the way `up --isolate` runs it: the same file, the same defaults,
    every instance in its own namespace with `--capture`. The load generator runs in
    the client's namespace and connects to backend's virtual IP, port 80, as an
    unmodified app would."""

    name = "captured"

    def __init__(self, work: Path) -> None:
        reason = netns.missing()
        if reason is not None:
            raise RuntimeError(f"the captured path: {reason}")
        self.work = work / "captured"
        self.work.mkdir(parents=True, exist_ok=True)
        text = MESH.format(backend=HERE / "backend.py", work=self.work)
        self.run = LocalRun(load_local_app(text), self.work, quiet=True, isolate=True)

    def start(self) -> Target:
        self.run.start_control_plane()
        self.run.apply_resources()
        self.run.start_processes()
        client = next(c for c in self.run.children if c.name == "client-0")
        prefix = list(map(str, client.popen.args))[:4]  # type: ignore[arg-type]
        assert prefix[:3] == ["ip", "netns", "exec"], prefix
        with self.run.api() as api:
            vip = str(api.get("/api/v1/resources/Service/default/backend").json()
                      ["status"]["virtualIP"])
        _wait_captured(prefix, vip)
        support = [c.popen.pid for c in self.run.children
                   if c.role == "control-plane" or c.name in ("client-0", "backend-0")]
        return Target(self.name, 80, [self._envoy_of("client-0"), self._envoy_of("backend-0")],
                      support, vip, prefix)


def _wait_captured(prefix: list[str], vip: str, timeout: float = 60.0) -> None:
    """Until GET http://VIP/ with Host: backend, sent from the client's namespace,
    answers 200 through the capture."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        done = subprocess.run([*prefix, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                               "--max-time", "2", "-H", f"Host: {HOST}", f"http://{vip}/"],
                              capture_output=True, text=True, timeout=30)
        last = done.stdout
        if last == "200":
            return
        time.sleep(0.2)
    raise RuntimeError(f"{vip}:80 not serving through the capture: {last!r}")


# A Gateway in front of the backend (`gossamer up` runs its `gossamer gateway`): the
# `ingress` configuration, load generator -> gateway -> mTLS -> backend's sidecar.
INGRESS = """\
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: ingress}}
spec:
  gatewayClassName: gossamer
  listeners: [{{name: http, port: {port}, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: ingress}}
spec:
  parentRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: ingress}}]
  rules: [{{backendRefs: [{{name: backend, port: 80}}]}}]
"""


class Ingress(Gossamer):
    """The ingress gateway where `envoy`'s caller Envoy is (a plain HTTP listener,
    mTLS to the callee's sidecar): the side-by-side of a gateway that Gossamer
    configures with a hand-written one."""

    name = "ingress"

    def __init__(self, work: Path) -> None:
        self.work = work / "ingress"
        self.work.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        text = MESH.format(backend=HERE / "backend.py", work=self.work) + \
            INGRESS.format(port=self.port)
        self.run = LocalRun(load_local_app(text), self.work, quiet=True)

    def start(self) -> Target:
        self.run.start_control_plane()
        self.run.apply_resources()
        self.run.start_processes()
        wait_ok(self.port)
        support = [c.popen.pid for c in self.run.children
                   if c.role == "control-plane" or c.name in ("ingress-0", "backend-0")]
        return Target(self.name, self.port, [self._envoy_of("ingress-0"),
                                             self._envoy_of("backend-0")], support)


CONFIGS = {c.name: c for c in (NoMesh, StaticEnvoy, Gossamer, Captured, Ingress)}
