"""The control-plane process: one asyncio loop running the store, the
reconcile loop, lease expiry, the gRPC xDS server and the HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry

from gossamer.api.app import ApiContext, create_app
from gossamer.controlplane.leases import Leases
from gossamer.controlplane.reconcile import Reconciler
from gossamer.store import ResourceStore, open_store
from gossamer.xds.cache import SnapshotCache
from gossamer.xds.server import NodeInfo, XdsServer
from gossamer.xds.status import ProxyRegistry

log = logging.getLogger(__name__)


@dataclass
class ControlPlaneOptions:
    state_dir: Path | None  # None: in-memory store (tests)
    host: str = "127.0.0.1"
    xds_port: int = 15010
    api_port: int = 15080
    debounce: float = 0.03
    # The address agents dial for xDS; defaults to `host`, or loopback when
    # listening on every interface.
    advertise_address: str | None = None

    @property
    def advertised(self) -> str:
        if self.advertise_address:
            return self.advertise_address
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host


class _Hooks:
    """What the xDS server tells the reconciler about proxies coming and going."""

    def __init__(self, reconciler: Reconciler, cache: SnapshotCache) -> None:
        self._reconciler = reconciler
        self._cache = cache

    def proxy_connected(self, node_id: str, node: NodeInfo) -> None:
        self._reconciler.proxy_connected(node_id, dict(node.metadata))

    def proxy_disconnected(self, node_id: str) -> None:
        """Forget the proxy and its snapshot: churning proxies must not grow memory.
        A reconnect translates afresh, and content versions make that resend nothing."""
        self._reconciler.proxy_disconnected(node_id)
        self._cache.remove(node_id)


class ControlPlane:
    def __init__(self, options: ControlPlaneOptions, store: ResourceStore | None = None) -> None:
        self.options = options
        if store is None:
            if options.state_dir is None:
                store = open_store("memory://")
            else:
                store = open_store(str(options.state_dir / "gossamer.db"))
        self.store = store
        self.cache = SnapshotCache()
        self.registry = ProxyRegistry()
        self.reconciler = Reconciler(self.store, self.cache.set, debounce=options.debounce)
        self.leases = Leases(self.store)
        self.metrics = CollectorRegistry()
        self.xds = XdsServer(self.cache, _Hooks(self.reconciler, self.cache), self.registry,
                             metrics_registry=self.metrics)
        self.xds_port = 0
        self.api_port = 0
        self._api_server: uvicorn.Server | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    def proxies(self) -> list[dict[str, Any]]:
        out = []
        for entry in self.registry.to_json(self.cache):
            entry["rejected"] = self.reconciler.rejected.get(entry["node_id"])
            out.append(entry)
        return out

    async def start(self) -> None:
        """Serve only once the store is loaded, so a restart never pushes an empty mesh."""
        self._tasks.append(asyncio.create_task(self.reconciler.run(), name="reconcile"))
        await self.reconciler.wait_ready()
        self._tasks.append(asyncio.create_task(
            self.leases.run(lambda: self.reconciler.index.workloads), name="leases"))
        self.xds_port = await self.xds.start(self.options.host, self.options.xds_port)
        ctx = ApiContext(self.store, self.reconciler, self.leases, self.proxies,
                         xds_address=(self.options.advertised, self.xds_port),
                         metrics=self.metrics)
        config = uvicorn.Config(create_app(ctx), host=self.options.host,
                                port=self.options.api_port, log_level="warning",
                                lifespan="off", access_log=False)
        self._api_server = uvicorn.Server(config)
        self._tasks.append(asyncio.create_task(self._api_server.serve(), name="api"))
        while not self._api_server.started:
            if self._tasks[-1].done():
                self._tasks[-1].result()  # raises the bind error
            await asyncio.sleep(0.02)
        self.api_port = self._api_server.servers[0].sockets[0].getsockname()[1]
        log.info("control plane: API http://%s:%s, xDS %s:%s", self.options.host,
                 self.api_port, self.options.host, self.xds_port)

    async def stop(self) -> None:
        if self._api_server is not None:
            self._api_server.should_exit = True
        await self.xds.stop(grace=1.0)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.store.close()

    async def serve_forever(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        print(f"gossamer control plane: API http://{self.options.host}:{self.api_port}  "
              f"xDS {self.options.host}:{self.xds_port}", flush=True)
        crashed = asyncio.create_task(self._first_crash())
        await asyncio.wait([asyncio.create_task(stop.wait()), crashed],
                           return_when=asyncio.FIRST_COMPLETED)
        await self.stop()

    async def _first_crash(self) -> None:
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if not task.cancelled() and task.exception():
                log.error("%s failed: %s", task.get_name(), task.exception())
