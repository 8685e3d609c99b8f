"""A small mesh for tests that make backends misbehave on purpose.

`Backend` is an HTTP server on loopback whose failures, latency and capacity the
test controls (attributes, or per request with `x-test-status` /
`x-test-delay-ms` headers). `MiniMesh` runs sidecar Envoys against the test's
control plane: `serve()` starts N instances of a Service, each behind its own
inbound sidecar, `client()` a caller sidecar, and `get()` sends a request through
the caller's outbound listener. Everything is stopped by the fixtures that made it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from gossamer.agent.bootstrap import bootstrap
from gossamer.contract.node import NodeMetadata, Upstream
from gossamer.contract.protocol import Protocol
from gossamer.controlplane.server import ControlPlane
from gossamer.testing.envoy import EnvoyProcess, free_port

API = "mesh.gossamer.dev/v1alpha1"


class Backend:
    """Answers every request with its name. Knobs the test turns:

    - `fail`: the next `fail` requests get `fail_status`;
    - `fail_every`: every n-th request (1-based count) gets `fail_status`;
    - `delay`: seconds to wait before answering;
    - `capacity`: requests served at once; the rest queue (latency climbs);
    - `fail_paths`: requests for these paths get `fail_status` (a failing health check);
    - per request: `x-test-status: CODE`, `x-test-delay-ms: N`.
    `hits` counts requests, `seen` keeps (method, path, headers) of the last 10000.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.hits = 0
        self.fail = 0
        self.fail_every = 0
        self.fail_status = 503
        self.delay = 0.0
        self.fail_paths: set[str] = set()
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._slots: threading.Semaphore | None = None
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Separate header and body writes would stall ~40 ms under Nagle.
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                # A header sent on several lines reads as one, comma-joined (RFC 9110 5.3).
                headers = {k: ",".join(self.headers.get_all(k) or ()) for k in self.headers}
                status, delay = backend._decide(self.command, self.path, headers)
                slots = backend._slots
                if slots is not None:
                    slots.acquire()
                try:
                    if delay > 0:
                        time.sleep(delay)
                finally:
                    if slots is not None:
                        slots.release()
                body = (backend.name if status < 400 else "failed").encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "text/plain")
                    self.send_header("content-length", str(len(body)))
                    self.send_header("x-backend", backend.name)
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the caller gave up (timeout, hedge)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def capacity(self) -> int | None:
        return None if self._slots is None else self._capacity

    @capacity.setter
    def capacity(self, value: int | None) -> None:
        self._capacity = value or 0
        self._slots = None if value is None else threading.Semaphore(value)

    def _decide(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, float]:
        lower = {k.lower(): v for k, v in headers.items()}
        with self._lock:
            self.hits += 1
            if len(self.seen) < 10000:
                self.seen.append((method, path, lower))
            status = 200
            if self.fail > 0:
                self.fail -= 1
                status = self.fail_status
            elif (path in self.fail_paths
                  or (self.fail_every and self.hits % self.fail_every == 0)):
                status = self.fail_status
        if "x-test-status" in lower:
            status = int(lower["x-test-status"])
        delay = self.delay
        if "x-test-delay-ms" in lower:
            delay = int(lower["x-test-delay-ms"]) / 1000
        return status, delay

    def reset(self) -> None:
        with self._lock:
            self.hits, self.fail, self.fail_every, self.delay = 0, 0, 0, 0.0
            self.seen.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class Sidecar:
    """One Envoy started from the agent's bootstrap, as instance `index` of `service`."""

    def __init__(self, plane: ControlPlane, make: Callable[[dict[str, Any]], EnvoyProcess],
                 service: str, index: int = 0, *, app_port: int = 0, protocol: str = "http",
                 upstreams: tuple[dict[str, Any], ...] = (), delta: bool = True,
                 labels: Mapping[str, str] | None = None,
                 access_log_dir: Path | None = None, vhds: bool | None = None,
                 namespace: str = "default") -> None:
        self.inbound = free_port() if app_port else 0
        self.outbound = free_port()
        self.workload = f"{service}-{index}"
        self.node = NodeMetadata(
            node_id=f"{self.workload}.{namespace}", service=service, namespace=namespace,
            workload=self.workload, inbound_port=self.inbound, inbound_address="127.0.0.1",
            app_port=app_port, app_protocol=Protocol(protocol), outbound_port=self.outbound,
            admin_port=free_port(), upstreams=tuple(Upstream(**u) for u in upstreams),
            labels=tuple(sorted((labels or {}).items())),
            access_log=str(access_log_dir / f"{self.workload}.log") if access_log_dir else None,
            vhds=delta if vhds is None else vhds)  # as the agent sets it
        self.envoy = make(bootstrap(self.node, "127.0.0.1", plane.xds_port, delta=delta))

    async def start(self) -> None:
        await asyncio.to_thread(self.envoy.start)
        await self.envoy.await_ready()

    async def stats(self) -> dict[str, int]:
        return await self.envoy.astats()  # type: ignore[no-any-return]


class MiniMesh:
    def __init__(self, plane: ControlPlane, make: Callable[[dict[str, Any]], EnvoyProcess]):
        self.plane = plane
        self.make = make
        self.sidecars: list[Sidecar] = []
        # Set before serve()/client(): their sidecars write access logs to <dir>/<workload>.log.
        self.access_log_dir: Path | None = None

    async def api(self, method: str, path: str, body: Any = None,
                  expect: int | None = None) -> Any:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.plane.api_port}",
                                     trust_env=False, timeout=10) as client:
            resp = await client.request(method, path, json=body)
        if expect is not None:
            assert resp.status_code == expect, resp.text
            return resp.json()
        assert resp.status_code < 300, resp.text
        return resp.json()

    async def apply(self, *docs: Mapping[str, Any]) -> None:
        for doc in docs:
            await self.api("POST", "/api/v1/apply", dict(doc))

    async def delete(self, kind: str, name: str, namespace: str = "default") -> None:
        await self.api("DELETE", f"/api/v1/resources/{kind}/{namespace}/{name}")

    async def synced(self) -> bool:
        proxies = await self.api("GET", "/api/v1/proxies")
        return len(proxies) == len(self.sidecars) and all(
            p["connected"] and p["synced"] for p in proxies)

    async def wait_synced(self, timeout: float = 20.0) -> None:
        await wait_for(self.synced, "all proxies in sync", timeout)

    async def serve(self, service: str, backends: Sequence[Backend], *, port: int = 80,
                    labels: Sequence[Mapping[str, str]] | None = None,
                    protocol: str = "http") -> list[Sidecar]:
        """A Service with one sidecar per backend; workload i carries labels[i]."""
        await self.apply({"apiVersion": API, "kind": "Service", "metadata": {"name": service},
                          "spec": {"ports": [{"port": port, "protocol": protocol}]}})
        out = []
        for i, backend in enumerate(backends):
            side = Sidecar(self.plane, self.make, service, i, app_port=backend.port,
                           protocol=protocol, access_log_dir=self.access_log_dir)
            meta: dict[str, Any] = {"name": side.workload}
            if labels is not None:
                meta["labels"] = dict(labels[i])
            await self.apply({"apiVersion": API, "kind": "Workload", "metadata": meta,
                              "spec": {"service": service, "address": "127.0.0.1",
                                       "port": side.inbound}})
            self.sidecars.append(side)
            out.append(side)
        await asyncio.gather(*(s.start() for s in out))
        return out

    async def client(self, service: str = "client", index: int = 0, *,
                     upstreams: tuple[dict[str, Any], ...] = (),
                     labels: Mapping[str, str] | None = None, namespace: str = "default",
                     vhds: bool | None = None) -> Sidecar:
        """A calling sidecar (no Workload: it takes no traffic); `vhds=False`: a delta
        stream whose outbound routes come by RDS, as `--xds-mode delta-rds`."""
        side = Sidecar(self.plane, self.make, service, index, upstreams=upstreams,
                       labels=labels, access_log_dir=self.access_log_dir,
                       namespace=namespace, vhds=vhds)
        self.sidecars.append(side)
        await side.start()
        return side

    async def set_health(self, workload: str, health: str) -> None:
        await self.api("POST", f"/api/v1/workloads/default/{workload}/heartbeat",
                       {"health": health})


async def get(client: Sidecar, url: str = "http://echo/", *,
              headers: Mapping[str, str] | None = None, timeout: float = 10.0,
              http: httpx.AsyncClient | None = None) -> httpx.Response:
    """One request through the caller's outbound listener (HTTP-proxy style)."""
    if http is not None:
        return await http.get(url, headers=dict(headers or {}))
    async with proxy_client(client, timeout) as own:
        return await own.get(url, headers=dict(headers or {}))


def proxy_client(client: Sidecar, timeout: float = 10.0) -> httpx.AsyncClient:
    """A reusable HTTP client whose requests go through `client`'s outbound listener."""
    return httpx.AsyncClient(proxy=f"http://127.0.0.1:{client.outbound}", trust_env=False,
                             timeout=timeout)


def outbound_held(dump: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """(virtual hosts of `outbound`, Service clusters) an Envoy's config dump holds:
    what an on-demand sidecar has fetched so far."""
    by = {c["@type"].rsplit(".", 1)[-1]: c for c in dump["configs"]}
    clusters = {c["cluster"]["name"] for c in by["ClustersConfigDump"].get(
        "dynamic_active_clusters", []) if c["cluster"]["name"].startswith("outbound|")}
    routes = by["RoutesConfigDump"]["dynamic_route_configs"]
    outbound = next(r["route_config"] for r in routes if r["route_config"]["name"] == "outbound")
    return {v["name"] for v in outbound.get("virtual_hosts", [])}, clusters


async def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def explained(mini: MiniMesh, hops: int = 1, **query: Any) -> dict[str, Any]:
    """The explanation of the newest failure that matches, once `hops` sidecars have
    reported it (each flushes on its own 0.5 s timer)."""
    params = "&".join(f"{k}={v}" for k, v in query.items())
    found: dict[str, Any] = {}

    async def reported() -> bool:
        nonlocal found
        rows = (await mini.api("GET", f"/api/v1/failures?{params}"))["items"]
        found = rows[0] if rows else {}
        return bool(rows)

    await wait_for(reported, f"a failure matching {query}", timeout=10)
    exp: dict[str, Any] = {}

    async def complete() -> bool:
        nonlocal exp
        exp = await mini.api("GET", f"/api/v1/explain?request_id={found['request_id']}")
        return len(exp["hops"]) >= hops

    await wait_for(complete, f"{hops} hop(s) of {found['request_id']}", timeout=10)
    return exp
