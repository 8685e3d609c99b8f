"""The control-plane process: one asyncio loop running the store, the
reconcile loop, lease expiry, the gRPC xDS server and the HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import uvicorn
from prometheus_client import CollectorRegistry

from gossamer.api.app import create_app
from gossamer.api.auth import Authenticator
from gossamer.api.context import ApiContext
from gossamer.ca import fingerprint
from gossamer.ca.authority import MeshCA
from gossamer.ca.errors import CaError
from gossamer.ca.service import CaService, bearer
from gossamer.ca.tokens import Scope, Tokens
from gossamer.contract.names import CONTROL_PLANE_NAME
from gossamer.contract.node import BadNodeMetadata, NodeMetadata
from gossamer.contract.spiffe import DEFAULT_TRUST_DOMAIN
from gossamer.controlplane.apitls import ApiTls, is_loopback, write_bundle
from gossamer.controlplane.cluster import Cluster, SingleReplica
from gossamer.controlplane.gcpause import GcPauses
from gossamer.controlplane.leases import Leases
from gossamer.controlplane.reconcile import Reconciler
from gossamer.controlplane.tapping import TapSwitch
from gossamer.controlplane.vips import VipAllocator
from gossamer.explain.logservice import AccessLogService
from gossamer.explain.recent import RecentFailures
from gossamer.explain.records import Reporter
from gossamer.k8s import inject
from gossamer.k8s.client import KubeApi
from gossamer.k8s.controller import Controller
from gossamer.k8s.inject import InjectConfig
from gossamer.k8s.lease import LeaderElector
from gossamer.k8s.tokenreview import TokenReviewer
from gossamer.proxyadmin.access import SidecarAdmin
from gossamer.ratelimit.service import RateLimitService, open_counters
from gossamer.secrets import KeyRing, SealedStore, reseal
from gossamer.store import ResourceStore, open_store, shared_store
from gossamer.telemetry.health import register_health, register_replica
from gossamer.telemetry.scraper import ScrapeOptions, Scraper
from gossamer.translate.settings import MeshSettings
from gossamer.virtualips.table import DEFAULT_RANGE, parse_range
from gossamer.xds.cache import SnapshotCache
from gossamer.xds.server import NodeInfo, StreamDenied, XdsServer
from gossamer.xds.status import ProxyRegistry
from gossamer.xds.types import Snapshot

log = logging.getLogger(__name__)
# Where the control plane writes the trust bundle in its state directory.
BUNDLE_FILE = "ca-bundle.pem"


@dataclass
class ControlPlaneOptions:
    state_dir: Path | None  # None: in-memory store (tests)
    # The store's URL (store.open_store), e.g. postgresql://user@host/db for
    # replicas sharing one database; None: SQLite in state_dir.
    store_url: str | None = None
    host: str = "127.0.0.1"
    xds_port: int = 15010
    api_port: int = 15080
    debounce: float = 0.03
    # Zero trust: a mesh CA, TLS on xDS, mTLS between sidecars, tokens on the API.
    # False only for tests of plaintext plumbing.
    secure: bool = True
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    cert_ttl: timedelta = timedelta(hours=24)
    max_cert_ttl: timedelta = timedelta(days=7)
    # Operator-provided intermediate CA: (cert, key, chain) PEM file paths.
    plugin_ca: tuple[Path, Path, Path] | None = None
    # The address agents dial for xDS; defaults to `host`, or loopback when
    # listening on every interface.
    advertise_address: str | None = None
    # Serve the HTTP API over TLS (controlplane/apitls.py). None: whenever `host`
    # is not a loopback address. Plaintext beyond loopback is refused: the API
    # carries bearer tokens.
    api_tls: bool | None = None
    # Golden metrics: how often sidecars' stats are read, and over what window.
    stats_interval: float = 5.0
    stats_window: float = 60.0
    # Global rate-limit counters in this Redis (redis://host:port/db), shared by
    # every replica and kept across restarts; None: in this process's memory.
    ratelimit_redis: str | None = None
    # The range Services' virtual IPs are allocated from (controlplane/vips.py).
    vip_range: str = DEFAULT_RANGE
    # Freeze long-lived objects out of the garbage collector's full collections
    # (controlplane/gcpause.py): process-wide, so for a control plane in its own
    # process (`gossamer control-plane`), not one embedded in a test.
    gc_freeze: bool = False
    # Feed the store from a Kubernetes cluster (k8s/controller.py), through
    # this kubeconfig, or the pod's ServiceAccount when None.
    kubernetes: bool = False
    kubeconfig: Path | None = None
    # The Lease whose holder writes status back ("namespace/name").
    kubernetes_lease: str = "gossamer-system/gossamer-controller"
    # The image injected sidecars and their capture init containers run.
    inject_image: str = InjectConfig.image
    # The keys that seal the CA's private keys (and other secret fields,
    # secrets/fields.py) in the store; None: stored in plaintext, as before.
    secrets: KeyRing | None = None

    def __post_init__(self) -> None:
        if self.api_tls is False and not is_loopback(self.host):
            raise ValueError(f"the API would serve tokens in plaintext beyond loopback (host "
                             f"{self.host}): it is served over TLS there, so drop --no-api-tls "
                             "or listen on 127.0.0.1")
        if self.serves_api_tls and not self.secure:
            raise ValueError("the API's TLS certificate comes from the mesh CA, which is off "
                             "(secure=False)")

    @property
    def serves_api_tls(self) -> bool:
        return self.api_tls if self.api_tls is not None else not is_loopback(self.host)

    @property
    def advertised(self) -> str:
        if self.advertise_address:
            return self.advertise_address
        return "127.0.0.1" if _is_wildcard(self.host) else self.host

    def serving_names(self) -> tuple[list[str], list[str]]:
        """(DNS names, IPs) of the control plane's serving certificate, on xDS and the
        API alike: the name agents verify, the advertised address and the one listened on."""
        addresses = {self.advertised, *(() if _is_wildcard(self.host) else (self.host,))}
        ips = sorted({"127.0.0.1", *(a for a in addresses if _is_ip(a))})
        names = [CONTROL_PLANE_NAME, *sorted(a for a in addresses if not _is_ip(a))]
        return names, ips


class _Hooks:
    """What the xDS server tells the reconciler about proxies coming and going,
    and who may open a stream as which node."""

    def __init__(self, reconciler: Reconciler, cache: SnapshotCache,
                 tokens: Tokens | None = None, trust_domain: str = "") -> None:
        self._reconciler = reconciler
        self._cache = cache
        self._tokens = tokens
        self._trust_domain = trust_domain

    async def authorize(self, node: NodeInfo,
                        metadata: Sequence[tuple[str, str | bytes]]) -> str | None:
        """Who may open a stream as which node (docs/security.md, node identity).

        The node id must be WORKLOAD.NAMESPACE of the node's own metadata, so the
        control plane translates for the workload the id names. A join token may
        then fetch config only as a node of its own identity, and only for a
        workload that is not registered under another identity. The grant is the
        token's id: revoking the token ends the stream, and while the node has an
        open stream, the xDS server refuses it to any other grant."""
        if self._tokens is None:
            return None
        token = bearer(metadata)
        record = await self._tokens.verify(token) if token else None
        if record is None:
            raise StreamDenied("missing or unknown token", grpc.StatusCode.UNAUTHENTICATED)
        meta = _node_metadata(node)
        namespace, workload = meta.namespace, meta.workload
        if record.scope is Scope.ADMIN:
            return record.id
        granted = record.identity(self._trust_domain)
        if granted is None or (granted.namespace, granted.account) != (namespace, meta.account):
            raise StreamDenied(f"the token does not grant {namespace}/{meta.account}")
        registered = self._reconciler.workload(namespace, workload)
        vouched = record.kubernetes and registered is not None \
            and registered.spec.service == meta.service  # the controller's pod Workload
        if meta.service != granted.account and not vouched:
            # As the API's rule for the workloads a join token registers: a node of
            # service `b` would be translated b's inbound side and policies.
            raise StreamDenied(f"a join token for {namespace}/{granted.account} serves only "
                               f"proxies of service {granted.account!r}, not "
                               f"{meta.service!r}")
        if registered is not None:
            owner = (namespace, registered.spec.service_account or registered.spec.service)
            if owner != (granted.namespace, granted.account):
                raise StreamDenied(f"node {node.id} is workload {namespace}/{workload}, "
                                   f"registered as {owner[0]}/{owner[1]}; the token grants "
                                   f"{granted.namespace}/{granted.account}")
        return record.id

    async def proxy_connected(self, node_id: str, node: NodeInfo) -> None:
        self._reconciler.proxy_connected(node_id, dict(node.metadata))

    async def proxy_disconnected(self, node_id: str) -> None:
        """Forget the proxy and its snapshot: churning proxies must not grow memory.
        A reconnect translates afresh, and content versions make that resend nothing."""
        self._reconciler.proxy_disconnected(node_id)
        self._cache.remove(node_id)


def _node_metadata(node: NodeInfo) -> NodeMetadata:
    """The node's metadata, if it parses and its id is WORKLOAD.NAMESPACE of it, as
    the agent writes it; else the stream is refused."""
    try:
        meta = NodeMetadata.from_metadata(node.id, node.metadata)
    except BadNodeMetadata as exc:
        raise StreamDenied(f"node {node.id!r}: {exc}") from exc
    if not meta.names_itself:
        raise StreamDenied(f"node id {node.id!r} is not WORKLOAD.NAMESPACE of its metadata "
                           f"(workload {meta.workload!r}, namespace {meta.namespace!r})")
    return meta


class ControlPlane:
    def __init__(self, options: ControlPlaneOptions, store: ResourceStore | None = None) -> None:
        self.options = options
        if store is None:
            if options.store_url is not None:
                store = open_store(options.store_url)
            elif options.state_dir is None:
                store = open_store("memory://")
            else:
                store = open_store(str(options.state_dir / "gossamer.db"))
        # Everything above the store sees secrets in plaintext; the database never does.
        self.store: SealedStore = SealedStore(store, options.secrets)
        self.cache = SnapshotCache()
        self.registry = ProxyRegistry()
        settings = MeshSettings(trust_domain=options.trust_domain, mtls=options.secure)
        self.reconciler = Reconciler(self.store, self._publish, debounce=options.debounce,
                                     settings=settings)
        self.leases = Leases(self.store)
        self.vips = VipAllocator(self.store, parse_range(options.vip_range))
        self.cluster = _cluster(store)
        self.leases.broadcast = self.cluster.heartbeat
        self.leases.leader = self.vips.leader = self.cluster.confirm
        self.metrics = CollectorRegistry()
        register_health(self.metrics, lambda: len(self.registry.node_ids()),
                        lambda: self.reconciler.index.revision)
        register_replica(self.metrics, self.replica)
        # Sidecars' admins, on any host (proxyadmin/); it gets the CA once it is open.
        self.sidecar_admin = SidecarAdmin()
        self.telemetry = Scraper(self.registry, ScrapeOptions(
            interval=options.stats_interval, window=options.stats_window),
            resolve=self.sidecar_admin.target)
        self.ratelimit = RateLimitService(lambda: self.reconciler.index,
                                          open_counters(options.ratelimit_redis), self.metrics)
        self.failures = RecentFailures()
        self.access_logs = AccessLogService(self.failures, self._reporter, self.metrics)
        self.ca: MeshCA | None = None
        self.tokens: Tokens | None = None
        # The admin token when this start created it (or, without a state dir, always).
        self.admin_token: str | None = None
        self.xds: XdsServer | None = None
        self.xds_port = 0
        self.api_port = 0
        self._api_server: uvicorn.Server | None = None
        self.api_tls: ApiTls | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.gc: GcPauses | None = None
        self.kubernetes: Controller | None = None

    def _publish(self, node_id: str, snapshot: Snapshot) -> None:
        self.cache.set(node_id, snapshot)
        if self.xds is not None:
            since = self.reconciler.building_since or time.monotonic()
            self.xds.metrics.published(node_id, snapshot, since)

    def _reporter(self, node_id: str) -> Reporter | None:
        """The proxy behind an access-log stream: only one connected over xDS now."""
        proxy = self.reconciler.proxies.get(node_id)
        status = self.registry.get(node_id)
        if proxy is None or status is None or not status.connected:
            return None
        # An ingress gateway (no inbound port) logs as the edge, not as a callee.
        edge = proxy.gateway or "" if proxy.ingress_gateway else ""
        return Reporter(node_id, proxy.namespace, proxy.service, proxy.workload, edge)

    def proxies(self) -> list[dict[str, Any]]:
        """The registry's entries, with why config was withheld and whether a Workload
        in the store still names the proxy (`registered`): a disconnected proxy whose
        workload is still registered is a problem, one that deregistered is not."""
        registered = {w.spec.proxy for w in self.reconciler.index.workloads if w.spec.proxy}
        out = []
        for entry in self.registry.to_json(self.cache):
            entry["rejected"] = self.reconciler.rejected.get(entry["node_id"])
            entry["registered"] = entry["node_id"] in registered
            out.append(entry)
        return out

    def replica(self) -> dict[str, Any]:
        """Whether this replica leads the singleton duties, whether its store answers
        (when it does not, it serves its last config and refuses writes), and the
        duties it ran: what /healthz and `gossamer check` report."""
        shared = shared_store(self.store)
        return {"leader": self.cluster.is_leader,
                "store_available": True if shared is None else bool(shared.available),
                "expirations": self.leases.expirations, "vip_writes": self.vips.writes}

    async def start(self) -> None:
        """Serve only once the store is loaded, so a restart never pushes an empty mesh."""
        # A store that is unreachable or refuses its schema fails here, as one
        # StoreError, rather than as a reconciler that never becomes ready.
        await self.store.revision()
        if self.store.keys is not None:
            # Seals what was stored in plaintext, or under a key no longer first.
            await reseal(self.store)
        elif self.options.store_url is not None:
            log.warning("no secrets key (--secrets-key-file): the CA's private keys are "
                        "stored in plaintext in a shared database")
        await self.vips.sync_once()  # the first index has every Service's virtual IP
        self._tasks.append(asyncio.create_task(self.vips.run(), name="virtual-ips"))
        self._tasks.append(asyncio.create_task(self.reconciler.run(), name="reconcile"))
        await self.reconciler.wait_ready()
        if self.options.kubernetes:
            await self._start_kubernetes()
        if self.options.gc_freeze:
            self.gc = GcPauses(self.metrics)
            self.gc.install()
            self.reconciler.after_publish = self.gc.settled
        self._tasks.append(asyncio.create_task(
            self.leases.run(lambda: self.reconciler.index.workloads), name="leases"))
        self._tasks.append(asyncio.create_task(
            self.cluster.run(self.leases.renewed, self._leases_restart), name="cluster"))
        if self.options.secure:
            await self._open_security()
        self.xds = self._xds_server()
        if self.tokens is not None:
            self.tokens.on_revoked = self.xds.end_streams
        self.xds_port = await self.xds.start(self.options.host, self.options.xds_port)
        self._tasks.append(asyncio.create_task(self.telemetry.run(), name="telemetry"))
        ctx = ApiContext(self.store, self.reconciler, self.leases, self.proxies,
                         xds_address=(self.options.advertised, self.xds_port),
                         metrics=self.metrics, auth=Authenticator(self.tokens),
                         tokens=self.tokens, ca=self.ca, telemetry=self.telemetry,
                         failures=self.failures, sidecar_admin=self.sidecar_admin,
                         injection=self._injection(), replica=self.replica,
                         tapping=TapSwitch(self.reconciler, self.registry, self.cache).tapping)
        tls = self._api_tls()
        config = uvicorn.Config(create_app(ctx), host=self.options.host,
                                port=self.options.api_port, log_level="warning",
                                lifespan="off", access_log=False, ws="none",
                                ssl_context_factory=None if tls is None else (
                                    lambda _config, _default: tls.context))
        self._api_server = uvicorn.Server(config)
        self._tasks.append(asyncio.create_task(self._api_server.serve(), name="api"))
        while not self._api_server.started:
            if self._tasks[-1].done():
                self._tasks[-1].result()  # raises the bind error
            await asyncio.sleep(0.02)
        self.api_port = self._api_server.servers[0].sockets[0].getsockname()[1]
        log.info("control plane: API %s, xDS %s:%s", self.api_url, self.options.host,
                 self.xds_port)
        if _is_wildcard(self.options.host) and not self.options.advertise_address:
            log.warning("listening on every interface without --advertise-address: agents "
                        "are told xDS is at 127.0.0.1, so only agents on this host can join")

    @property
    def api_url(self) -> str:
        scheme = "https" if self.api_tls is not None else "http"
        host = self.options.host
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{self.api_port}"

    def _api_tls(self) -> ApiTls | None:
        """The API's TLS, and the trust bundle file an operator on this host verifies
        it with (`<state-dir>/ca-bundle.pem`), kept current."""
        if self.ca is None:
            return None
        ca = self.ca
        if self.options.state_dir is not None:
            path = self.options.state_dir / BUNDLE_FILE
            write_bundle(path, ca.bundle_pem())
            self._tasks.append(asyncio.create_task(_follow_bundle(path, ca), name="bundle"))
        if not self.options.serves_api_tls:
            return None
        names, ips = self.options.serving_names()
        self.api_tls = ApiTls(lambda: ca.server_cert(names, ips))
        return self.api_tls

    def _injection(self) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
        """The webhook's answers: the namespace's labels from the controller's view,
        the sidecar joining this control plane's API at its advertised address."""
        controller = self.kubernetes
        if controller is None:
            return None
        scheme = "https" if self.options.serves_api_tls else "http"
        config = InjectConfig(control_plane=f"{scheme}://{self.options.advertised}:"
                                            f"{self.options.api_port or 15080}",
                              trust_domain=self.options.trust_domain,
                              image=self.options.inject_image)

        def answer(request: dict[str, Any]) -> dict[str, Any]:
            ns = str((request.get("request") or {}).get("namespace") or "")
            namespace = controller.cluster.of("Namespace").get(("", ns)) or {}
            labels = (namespace.get("metadata") or {}).get("labels") or {}
            return inject.review(request, labels, config)

        return answer

    async def _start_kubernetes(self, wait: float = 60.0) -> None:
        """The controller writes the cluster into the store; serve once it has listed
        everything (or after `wait`), so a restart does not push a mesh half-listed."""
        api = KubeApi.connect(self.options.kubeconfig)
        namespace, _, name = self.options.kubernetes_lease.partition("/")
        identity = f"{socket.gethostname()}-{os.getpid()}"
        self.kubernetes = Controller(
            api, self.store, status_of=lambda key: self.reconciler.index.status(key),
            elector=LeaderElector(api, namespace, name, identity))
        self._tasks.append(asyncio.create_task(self.kubernetes.run(), name="kubernetes"))
        try:
            await asyncio.wait_for(self.kubernetes.synced.wait(), wait)
        except TimeoutError:
            log.warning("kubernetes: not every kind listed after %.0f s; serving what is "
                        "in the store", wait)

    async def _open_security(self) -> None:
        o = self.options
        plugin = None
        if o.plugin_ca is not None:
            plugin = tuple(_read_pem(p) for p in o.plugin_ca)
        self.ca = await MeshCA.open(self.store, o.trust_domain, plugin=plugin,  # type: ignore[arg-type]
                                    default_ttl=o.cert_ttl, max_ttl=o.max_cert_ttl)
        self.sidecar_admin.ca = self.ca
        self._tasks.append(asyncio.create_task(self.ca.follow(), name="ca-follow"))
        self.tokens = Tokens(self.store)
        if self.kubernetes is not None:  # pods join with their SA token
            self.tokens.external = TokenReviewer(self.kubernetes.api).verify
        self._tasks.append(asyncio.create_task(self.tokens.follow(), name="tokens"))
        if o.state_dir is not None:
            self.admin_token = await self.tokens.ensure_admin(o.state_dir / "admin-token")
            if self.admin_token:
                log.warning("created the admin token in %s", o.state_dir / "admin-token")
        else:
            self.admin_token, _ = await self.tokens.create(Scope.ADMIN, description="embedded")

    def _xds_server(self) -> XdsServer:
        hooks = _Hooks(self.reconciler, self.cache, self.tokens,
                       self.ca.trust_domain if self.ca else "")
        if self.ca is None or self.tokens is None:
            return XdsServer(self.cache, hooks, self.registry, metrics_registry=self.metrics,
                             extra_handlers=[self.ratelimit.handler(),
                                             self.access_logs.handler()])
        names, ips = self.options.serving_names()
        return XdsServer(self.cache, hooks, self.registry, metrics_registry=self.metrics,
                         server_credentials=self.ca.grpc_server_credentials(names, ips),
                         extra_handlers=[CaService(self.ca, self.tokens).handler(),
                                         self.ratelimit.handler(),
                                         self.access_logs.handler()])

    async def stop(self) -> None:
        if self._api_server is not None:
            self._api_server.should_exit = True
        if self.xds is not None:
            await self.xds.stop(grace=1.0)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.kubernetes is not None:
            await self.kubernetes.api.close()
        await self.ratelimit.counters.close()
        await self.cluster.close()
        await self.store.close()
        if self.gc is not None:
            self.gc.uninstall()
            self.reconciler.after_publish = self.gc = None

    async def serve_forever(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        print(f"gossamer control plane: API {self.api_url}  "
              f"xDS {self.options.host}:{self.xds_port}"
              + (" (TLS)" if self.ca else " (plaintext)"), flush=True)
        if self.ca is not None and self.options.state_dir is not None:
            pins = ", ".join(map(fingerprint.show, fingerprint.of_bundle(self.ca.bundle_pem())))
            print(f"gossamer control plane: trust bundle in "
                  f"{self.options.state_dir / BUNDLE_FILE} (fingerprint {pins})", flush=True)
        if self.admin_token and self.options.state_dir is not None:
            print(f"gossamer control plane: created the admin token, in "
                  f"{self.options.state_dir / 'admin-token'} (mode 0600)", flush=True)
        crashed = asyncio.create_task(self._first_crash())
        await asyncio.wait([asyncio.create_task(stop.wait()), crashed],
                           return_when=asyncio.FIRST_COMPLETED)
        await self.stop()

    async def _first_crash(self) -> None:
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if not task.cancelled() and task.exception():
                log.error("%s failed: %s", task.get_name(), task.exception())


    def _leases_restart(self) -> None:
        """Heartbeats may have gone unheard (a new leader, a reconnect): every lease
        starts afresh, and a new leader syncs the virtual IPs."""
        self.leases.restart()
        self.vips.poke()


def _cluster(store: ResourceStore) -> Cluster:
    """Leader election among the replicas sharing a PostgreSQL store; else one replica."""
    shared = shared_store(store)
    if shared is None:
        return SingleReplica()
    from gossamer.controlplane.pgcluster import PostgresCluster

    return PostgresCluster(shared.url)


async def _follow_bundle(path: Path, ca: MeshCA, interval: float = 2.0) -> None:
    """Keep the bundle file current through root rotations."""
    while True:
        await asyncio.sleep(interval)
        try:
            write_bundle(path, ca.bundle_pem())
        except OSError as exc:
            log.warning("cannot write the trust bundle to %s: %s", path, exc.strerror)


def _is_wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::", "")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _read_pem(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise CaError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise CaError(f"{path} is not UTF-8 text (byte offset {exc.start}), so not a PEM "
                      "file") from exc
