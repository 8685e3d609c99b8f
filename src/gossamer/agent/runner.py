"""The agent's lifecycle beside one workload.

Theory of operation:
  start:    ask the control plane where xDS is -> write bootstrap -> start
            Envoy -> wait until Envoy is LIVE (it has its first config) ->
            register the Workload (health Unknown, so not yet an endpoint) ->
            start the app, if we launch it -> probe loop.
  running:  every probe interval: probe the app; on a state change report it
            at once, otherwise heartbeat every `heartbeat` seconds (the lease
            that keeps the registration alive). Envoy is restarted with
            backoff if it dies.
  shutdown: deregister (peers drop us from EDS) -> wait for that to spread ->
            drain inbound listeners gracefully -> stop the app -> stop Envoy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gossamer.agent.appprobes import DEFAULT_PORT, AppProbe, AppProbeServer
from gossamer.agent.bootstrap import bootstrap
from gossamer.agent.capturing import CaptureOptions, CaptureSession
from gossamer.agent.certs import IdentityError, WorkloadIdentity
from gossamer.agent.children import die_with_parent, stop_group
from gossamer.agent.client import ControlPlaneClient, ControlPlaneError
from gossamer.agent.envoy import EnvoySupervisor
from gossamer.agent.iptables import CaptureError
from gossamer.agent.join import JoinError, TokenFile, trust_bundle
from gossamer.agent.ports import host_ports_lock, off_host_port
from gossamer.agent.probe import HealthTracker, Probe
from gossamer.agent.sds import SdsServer
from gossamer.contract.node import Capture, NodeMetadata, Upstream, node_id_of, parse_resolver
from gossamer.contract.protocol import Protocol
from gossamer.contract.spiffe import SpiffeId
from gossamer.envoy.errors import EnvoyError
from gossamer.proxyadmin.target import DEFAULT_ADMIN_TLS_PORT, DEFAULT_PROMETHEUS_PORT

log = logging.getLogger(__name__)
LEASE_SECONDS = 15
# The agent's own credentials in its environment: never passed on to the app.
AGENT_CREDENTIALS = frozenset({"GOSSAMER_TOKEN", "GOSSAMER_TOKEN_FILE"})


@dataclass(frozen=True)
class UpstreamSpec:
    service: str
    port: int
    local_port: int
    namespace: str | None = None
    protocol: str = "http"

    def env_name(self, own_namespace: str = "default") -> str:
        """GOSSAMER_UPSTREAM_<SERVICE>[_<NAMESPACE>][_<PORT>]: the namespace only
        when it is not the app's own, the port only when it is not 80."""
        parts = [self.service]
        if self.namespace and self.namespace != own_namespace:
            parts.append(self.namespace)
        if self.port != 80:
            parts.append(str(self.port))
        return "GOSSAMER_UPSTREAM_" + "_".join(parts).upper().replace("-", "_").replace(".", "_")


@dataclass
class AgentConfig:
    service: str
    app_port: int
    namespace: str = "default"
    labels: dict[str, str] = field(default_factory=dict)
    server: str = "http://127.0.0.1:15080"
    inbound_port: int = 0
    outbound_port: int = 0
    admin_port: int = 0
    address: str = "127.0.0.1"
    # None: the protocol of the workload's Service port, as the control plane knows it.
    protocol: str | None = None
    name: str | None = None
    upstreams: list[UpstreamSpec] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    probe_path: str | None = None
    probe_interval: float = 1.0
    drain_seconds: float = 2.0
    delta: bool = True
    # With delta: the outbound virtual hosts by VHDS (translate/vhds.py).
    vhds: bool = True
    concurrency: int = 1
    workdir: Path | None = None
    token: str | None = None
    # Where `token` was read from: read again when it changes (kubelet rotating a
    # projected ServiceAccount token), for certificate requests and API calls.
    token_file: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    # The PEM bundle that verifies the control plane (needed when it serves TLS),
    # or the SHA-256 fingerprint of a certificate the bundle it serves must hold.
    ca_file: Path | None = None
    ca_fingerprint: str | None = None
    cert_ttl: int | None = None
    service_account: str | None = None
    # Capture the workload's traffic (agent/capturing.py); None: explicit mode.
    capture: CaptureOptions | None = None
    # Register the Workload and report the app's health. Off on Kubernetes, where the
    # controller makes the pod's Workload and kubelet's readiness is its health.
    register: bool = True
    # Kubelet's HTTP probes, rewritten by injection, answered on
    # address:app_probes_port by sending the originals to the app (agent/appprobes.py).
    app_probes: dict[str, AppProbe] = field(default_factory=dict)
    app_probes_port: int = DEFAULT_PORT
    # Also answer READY_PATH there with Envoy's readiness (kubelet's startup probe of an
    # injected sidecar, a gateway pod's readiness probe), even with no app probes.
    ready_probe: bool = False
    # Static listeners on `address` for other hosts (agent/adminlisteners.py), 0: none:
    # the control plane's mTLS admin (only when xDS is TLS) and /stats/prometheus.
    # None: the default (agent/ports.py, off_host_port), settled at start.
    admin_tls_port: int | None = None
    prometheus_port: int | None = None
    # Run as the gateway of this name, with no app: with no inbound port, the Envoy
    # of the ingress Gateway NAME (`gossamer gateway`, listeners from the Gateway);
    # with one, the egress gateway NAME (`gossamer gateway --egress`: registered,
    # healthy while Envoy runs, routing to ExternalServices).
    gateway: str | None = None

    @property
    def registers(self) -> bool:
        """Does this agent register a Workload (it takes inbound traffic, and the
        controller does not make its Workload: `--no-register`)?"""
        return self.register and bool(self.app_port or (self.gateway and self.inbound_port))

    @property
    def workload(self) -> str:
        return self.name or f"{self.service}-{secrets.token_hex(3)}"


class AgentError(Exception):
    """The agent could not bring its workload into the mesh."""


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.workload = config.workload
        self.node_id = node_id_of(self.workload, config.namespace)
        self.token: TokenFile | str | None = (
            TokenFile(config.token_file, config.token)
            if config.token_file is not None and config.token else config.token)
        self.client = ControlPlaneClient(config.server, self.token)
        self.envoy: EnvoySupervisor | None = None
        self.app: asyncio.subprocess.Process | None = None
        self.health = HealthTracker()
        self.registered = False
        self.identity: WorkloadIdentity | None = None
        self.sds: SdsServer | None = None
        self._stopping = asyncio.Event()
        self.capture = CaptureSession(config.capture) if config.capture else None
        self.app_probes = (AppProbeServer(config.app_probes, self._envoy_ready)
                           if config.app_probes or config.ready_probe else None)
        self._resolvers: tuple[str, ...] = ()

    async def _envoy_ready(self) -> int:
        return 503 if self.envoy is None else await self.envoy.ready_status()

    def node(self, access_log: str | None = None, tls: bool = False) -> NodeMetadata:
        """`access_log`: the file Envoy writes access logs to (a Telemetry turns them on);
        `tls`: the bootstrap is TLS, so the mTLS admin listener can be served."""
        c = self.config
        return NodeMetadata(
            node_id=self.node_id, service=c.service, namespace=c.namespace,
            workload=self.workload, inbound_port=c.inbound_port, inbound_address=c.address,
            app_port=c.app_port, app_protocol=Protocol(c.protocol) if c.protocol else None,
            outbound_port=c.outbound_port, admin_port=c.admin_port,
            upstreams=tuple(Upstream(u.service, u.namespace or c.namespace, u.port, u.local_port)
                            for u in c.upstreams),
            service_account=c.service_account,
            labels=tuple(sorted({"app": c.service, **c.labels}.items())),
            access_log=access_log,
            capture=Capture(c.capture.outbound_port, c.capture.dns_port,
                            tuple(parse_resolver(r) for r in self._resolvers))
            if c.capture else None,
            admin_tls_port=(c.admin_tls_port or 0) if tls else 0,
            prometheus_port=c.prometheus_port or 0,
            gateway=c.gateway,
            vhds=c.delta and c.vhds,
        )

    def app_env(self) -> dict[str, str]:
        """The app's environment: the agent's own, less the agent's credentials (a
        compromised app must not be able to act as its agent: register workloads,
        or open xDS streams, as the agent's identity), plus `--env` and the mesh's."""
        c = self.config
        proxy = f"http://127.0.0.1:{c.outbound_port}"
        inherited = {k: v for k, v in os.environ.items()
                     if k not in AGENT_CREDENTIALS and not (c.token and c.token in v)}
        env = inherited | c.env | {
            "PORT": str(c.app_port),
            "GOSSAMER_SERVICE": c.service, "GOSSAMER_NAMESPACE": c.namespace,
            "GOSSAMER_WORKLOAD": self.workload, "GOSSAMER_OUTBOUND": proxy,
        }
        if c.capture is None:  # captured, the app needs no proxy settings
            env |= {"HTTP_PROXY": proxy, "http_proxy": proxy,
                    "NO_PROXY": "localhost,127.0.0.1,::1",
                    "no_proxy": "localhost,127.0.0.1,::1"}
        for u in c.upstreams:
            scheme = "tcp" if u.protocol == "tcp" else "http"
            env[u.env_name(c.namespace)] = f"{scheme}://127.0.0.1:{u.local_port}"
        return env

    def workload_doc(self) -> dict[str, object]:
        c = self.config
        return {
            "apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Workload",
            "metadata": {"name": self.workload, "namespace": c.namespace,
                         "labels": {"app": c.service, **c.labels}},
            "spec": {"service": c.service, "address": c.address, "port": c.inbound_port,
                     **({"serviceAccount": c.service_account} if c.service_account else {}),
                     **({"appPort": c.app_port} if c.app_port else {}),
                     "health": "Unknown", "proxy": self.node_id,
                     "ttlSeconds": LEASE_SECONDS},
        }

    async def start(self) -> None:
        try:
            await self._start()
        except (ControlPlaneError, EnvoyError, IdentityError, JoinError, CaptureError,
                OSError) as exc:
            raise AgentError(str(exc)) from exc

    async def _start(self) -> None:
        c = self.config
        if self.capture is not None:  # fail fast, before anything starts
            self._resolvers = self.capture.prepare()
            if c.app_port and c.address.startswith("127."):
                raise AgentError("--capture needs --address: the workload's address on its "
                                 "network, which the inbound listener binds")
        timeout = float(os.environ.get("GOSSAMER_CONNECT_TIMEOUT", "60"))
        bundle = await trust_bundle(c.server, c.ca_file, c.ca_fingerprint, timeout)
        if bundle is not None:
            await self.client.follow_bundle(bundle)
        try:
            info = await self.client.wait_up(timeout=timeout)
        except ControlPlaneError as exc:
            if exc.status in (401, 403):
                raise AgentError(f"the control plane at {c.server} refused the token: "
                                 f"{exc.message}") from exc
            if exc.tls:
                raise AgentError(str(exc)) from exc
            raise AgentError(f"cannot reach the control plane at {c.server}: {exc}") from exc
        await self._resolve_upstreams()
        xds = await self.client.xds_endpoints(info)
        (xds_host, xds_port), more_xds = xds[0], xds[1:]
        if more_xds:
            log.info("control-plane replicas' xDS: %s", ", ".join(f"{h}:{p}" for h, p in xds))
        workdir = c.workdir or Path(os.environ.get("TMPDIR", "/tmp")) / f"gossamer-{self.node_id}"
        async with host_ports_lock(c.address):  # until Envoy holds the ports it settled
            self._off_host_ports(bool(info["xds"].get("tls")))
            access_log = str(workdir.absolute() / "access.log")
            config = bootstrap(self.node(access_log), xds_host, xds_port, delta=c.delta,
                               more_xds=more_xds)
            if info["xds"].get("tls"):
                sds_address = await self._start_identity(
                    workdir, info, ",".join(f"{h}:{p}" for h, p in xds))
                config = bootstrap(self.node(access_log, tls=True), xds_host, xds_port,
                                   delta=c.delta, sds_socket=sds_address, token=c.token, tls=True,
                                   trust_domain=str(info["trust_domain"]), more_xds=more_xds)
            self.envoy = EnvoySupervisor(config, workdir, c.admin_port,
                                         concurrency=c.concurrency, drain_seconds=c.drain_seconds,
                                         user=self.capture.envoy_user if self.capture
                                         else None)
            if self.capture is not None:  # Envoy runs as the proxy uid: hand it its files
                workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
                self.capture.hand_over(workdir, *((self.sds.path.parent, self.sds.path)
                                                  if self.sds else ()))
            await self.envoy.start()
            await self.envoy.wait_ready()
        if self.capture is not None:
            await self.capture.install(c.inbound_port, c.app_port, self.client.servers, xds)
        if self.app_probes is not None:
            await self.app_probes.start(c.address, c.app_probes_port)
        if c.registers:  # app_port 0: a pure client, nothing to register or probe
            await self.client.apply(self.workload_doc())
            self.registered = True
        if c.command:
            await self._start_app()

    async def _start_app(self) -> None:
        assert self.envoy is not None
        c = self.config
        self.app = await asyncio.create_subprocess_exec(
            *c.command, env=self.app_env(), start_new_session=True,
            preexec_fn=die_with_parent, stdin=asyncio.subprocess.DEVNULL)
        log.info("app started (pid %s): %s", self.app.pid, " ".join(c.command))
        (self.envoy.workdir / "app.pid").write_text(f"{self.app.pid}\n")

    def _off_host_ports(self, tls: bool) -> None:
        """Settle the ports of the listeners for other hosts (agent/ports.py); the mTLS
        admin listener needs a TLS control plane (its identity, the mesh's CA)."""
        c = self.config
        if not tls:
            if c.admin_tls_port:
                log.warning("the control plane serves plaintext xDS: no mTLS admin listener "
                            "(the control plane reads this sidecar only from this host)")
            c.admin_tls_port = 0
        own = {c.inbound_port, c.outbound_port, c.admin_port,
               *(u.local_port for u in c.upstreams),
               *((c.capture.outbound_port,) if c.capture else ())} - {0}
        c.admin_tls_port = off_host_port(c.admin_tls_port, c.address, DEFAULT_ADMIN_TLS_PORT,
                                         "--admin-tls-port", own)
        c.prometheus_port = off_host_port(c.prometheus_port, c.address,
                                          DEFAULT_PROMETHEUS_PORT, "--prometheus-port",
                                          own | {c.admin_tls_port})

    async def _start_identity(self, workdir: Path, info: dict[str, Any], target: str) -> str:
        """Key, CSR, first certificate, SDS socket: all before Envoy starts, since
        Envoy needs the trust bundle to reach the control plane at all."""
        c = self.config
        bundle = self.client.bundle
        if bundle is None:
            raise AgentError("the control plane serves xDS over TLS: give --ca-file (or "
                             "GOSSAMER_CA_FILE), the PEM bundle to verify it with, or "
                             "--ca-fingerprint")
        if not c.token:
            raise AgentError("the control plane needs a join token: --token-file, "
                             "GOSSAMER_TOKEN_FILE or GOSSAMER_TOKEN (create one with "
                             "`gossamer token create --service NAME`)")
        socket_dir = workdir
        if len(str(workdir / "sds.sock")) > 100:  # Unix socket paths are short
            socket_dir = Path(tempfile.mkdtemp(prefix="gossamer-sds-"))
        self.sds = SdsServer(socket_dir / "sds.sock")
        await self.sds.start()
        spiffe = SpiffeId(str(info["trust_domain"]), c.namespace,
                          c.service_account or c.service)
        token = self.token if self.token is not None else c.token
        self.identity = WorkloadIdentity(spiffe, target, bundle, token, self.sds,
                                         workload=self.workload, ttl_seconds=c.cert_ttl)
        await self.identity.start()
        return self.sds.address

    async def _resolve_upstreams(self) -> None:
        """Give each declared upstream its Service's port and protocol, so a TCP
        upstream is announced as tcp:// and a port left out means the default."""
        c = self.config
        resolved = []
        for u in c.upstreams:
            svc = await self.client.service(u.namespace or c.namespace, u.service)
            ports = svc["spec"]["ports"] if svc else []
            numbers = [p["port"] for p in ports]
            port = u.port or (80 if 80 in numbers or not numbers else numbers[0])
            protocol = next((p.get("protocol", "http") for p in ports if p["port"] == port),
                            "http")
            if svc is None:
                log.warning("upstream %s is not a known Service (yet)", u.service)
            resolved.append(UpstreamSpec(u.service, port, u.local_port, u.namespace, protocol))
        c.upstreams = resolved

    async def _report(self, healthy: bool) -> None:
        if self.identity is not None:
            await self.client.follow_bundle(self.identity.bundle_pem)
        try:
            await self.client.heartbeat(self.config.namespace, self.workload, healthy)
        except ControlPlaneError as exc:
            log.warning("heartbeat failed: %s", exc)
            if exc.status == 404:  # the lease expired while we could not reach it
                await self._reregister()

    async def _reregister(self) -> None:
        """After a lease expired or the store was reset, register again."""
        with contextlib.suppress(ControlPlaneError):
            await self.client.apply(self.workload_doc())

    async def probe_loop(self) -> None:
        c = self.config
        probe = Probe(c.app_port, c.probe_path)
        loop = asyncio.get_running_loop()
        last_beat = 0.0
        try:
            while not self._stopping.is_set():
                changed = self.health.observe(await probe.check())
                if changed or loop.time() - last_beat >= LEASE_SECONDS / 3:
                    await self._report(bool(self.health.healthy))
                    last_beat = loop.time()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), c.probe_interval)
        finally:
            await probe.aclose()

    async def gateway_loop(self) -> None:
        """A gateway has no app to probe: it is healthy while its Envoy runs (the
        supervisor ends the agent when Envoy dies), and heartbeats say so."""
        while not self._stopping.is_set():
            await self._report(True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), LEASE_SECONDS / 3)

    async def run(self) -> int:
        assert self.envoy is not None
        tasks = [asyncio.create_task(self.envoy.supervise())]
        if self.identity is not None:
            tasks.append(asyncio.create_task(self.identity.run()))
        if self.config.app_port and self.config.register:
            tasks.append(asyncio.create_task(self.probe_loop()))
        elif self.config.registers:  # an egress gateway (an ingress one registers nothing)
            tasks.append(asyncio.create_task(self.gateway_loop()))
        if self.app is not None:
            tasks.append(asyncio.create_task(self._app_exit()))
        waiter = asyncio.create_task(self._stopping.wait())
        await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
        await self.shutdown()
        return 0

    async def _app_exit(self) -> None:
        """A client-only app that finishes ends the agent; a server's exit is left
        to the probe (the instance leaves EDS, the operator sees it unhealthy)."""
        assert self.app is not None
        code = await self.app.wait()
        log.warning("app exited with %s", code)
        if not self.config.app_port:
            self.request_stop()
        else:
            await asyncio.Event().wait()

    def request_stop(self) -> None:
        self._stopping.set()

    async def shutdown(self) -> None:
        c = self.config
        if self.registered:
            with contextlib.suppress(ControlPlaneError):
                await self.client.delete("Workload", c.namespace, self.workload)
            self.registered = False
            await asyncio.sleep(min(0.5, c.drain_seconds))  # let EDS removal reach peers
        if self.envoy is not None and self.envoy.running:
            await self.envoy.drain_inbound()
            await asyncio.sleep(c.drain_seconds)
        await self._stop_app()
        if self.app_probes is not None:
            await self.app_probes.close()
        if self.capture is not None and self.capture.installed:
            await self.capture.remove()
        if self.envoy is not None:
            await self.envoy.stop()
        if self.identity is not None:
            await self.identity.close()
        if self.sds is not None:
            await self.sds.stop()
        await self.client.close()

    async def _stop_app(self, timeout: float = 5.0) -> None:
        if self.app is not None:
            await stop_group(self.app, timeout)


async def run_agent(config: AgentConfig) -> int:
    agent = Agent(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, agent.request_stop)
    try:
        await agent.start()
    except BaseException:
        await agent.shutdown()
        raise
    c = config
    where = (f"inbound {c.address}:{c.inbound_port} -> app 127.0.0.1:{c.app_port}"
             if c.app_port else f"gateway {c.gateway} on {c.address}:{c.inbound_port}"
             if c.gateway and c.inbound_port else f"Gateway {c.gateway} on {c.address}"
             if c.gateway else "client only")
    print(f"gossamer proxy: {agent.workload} ({c.service}.{c.namespace}) {where}; outbound "
          f"http://127.0.0.1:{c.outbound_port}; admin http://127.0.0.1:{c.admin_port}",
          file=sys.stderr, flush=True)
    node = agent.node(tls=agent.sds is not None)
    if node.admin_tls_port or node.prometheus_port:
        print(f"gossamer proxy: for other hosts on {c.address}: " + ", ".join(
            ([f"control-plane admin (mTLS) :{node.admin_tls_port}"] if node.admin_tls_port
             else []) + ([f"prometheus :{node.prometheus_port}/stats/prometheus"]
                         if node.prometheus_port else [])), file=sys.stderr, flush=True)
    for u in c.upstreams:
        print(f"gossamer proxy: upstream {u.service}:{u.port} at 127.0.0.1:{u.local_port} "
              f"(${u.env_name(c.namespace)})", file=sys.stderr, flush=True)
    return await agent.run()
