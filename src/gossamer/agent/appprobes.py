"""Kubelet's HTTP probes of a captured app, passed on by the agent.

Under capture, TCP arriving for the app's port goes to the sidecar's inbound
listener, which with STRICT mTLS wants a client certificate kubelet does not have,
so its probes would fail. Injection (k8s/inject.py) therefore rewrites each HTTP
probe to GET `http://POD_IP:15020/app-health/CONTAINER/KIND` (as Istio does) and
hands the sidecar the original probes in `$GOSSAMER_APP_PROBES`. This server answers
those paths by sending the original probe to the app on 127.0.0.1 (loopback is never
captured) and returning its status: kubelet sees the app's answer, not the mesh's.
Only the configured probes are sent; a request chooses none of the target (no
open proxy into the pod).

The same server answers `/healthz/ready` with Envoy's own readiness: kubelet probes
the pod's address from the node, never the pod's loopback, where Envoy's admin stays
(it must not face the network), so the sidecar's startup probe and a gateway's
readiness probe come here.

A `grpc:` probe is rewritten the same way (as Istio does): the sidecar makes the
gRPC health check (`grpc.health.v1.Health/Check`, with the probe's `service`) to the
app on 127.0.0.1 and answers 200 only for SERVING, so kubelet's gRPC probe, which
would also meet the inbound listener, becomes an HTTP probe of the sidecar.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from gossamer.contract.names import PROBES_PORT, PROXY_READY_PATH

log = logging.getLogger(__name__)
ENV = "GOSSAMER_APP_PROBES"
DEFAULT_PORT = PROBES_PORT
READY_PATH = PROXY_READY_PATH
_MAX_REQUEST = 8192


@dataclass(frozen=True)
class AppProbe:
    port: int
    path: str = "/"
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 1.0
    # A gRPC health check of this service name ("" is the server's overall health)
    # instead of an HTTP GET; None: HTTP.
    grpc_service: str | None = None


def parse_probes(text: str) -> dict[str, AppProbe]:
    """`$GOSSAMER_APP_PROBES`: {"/app-health/C/readyz": {"port", "path", "scheme",
    "httpHeaders": [{"name", "value"}], "timeoutSeconds"}}, or for a gRPC probe
    {"port", "grpc": {"service"}, "timeoutSeconds"}; ValueError when malformed."""
    try:
        data = json.loads(text)
        out = {}
        for path, p in data.items():
            if not str(path).startswith("/app-health/") or not 0 < int(p["port"]) < 65536:
                raise ValueError(f"{path!r}: not an /app-health/ path with a port")
            if "grpc" in p:
                out[str(path)] = AppProbe(int(p["port"]), timeout=float(
                    p.get("timeoutSeconds") or 1), grpc_service=str(
                        (p["grpc"] or {}).get("service") or ""))
                continue
            scheme = str(p.get("scheme", "HTTP")).upper()
            if scheme not in ("HTTP", "HTTPS"):
                raise ValueError(f"{path!r}: scheme {scheme!r} is not HTTP or HTTPS")
            out[str(path)] = AppProbe(
                int(p["port"]), str(p.get("path") or "/"), scheme,
                tuple((str(h["name"]), str(h["value"])) for h in p.get("httpHeaders") or ()),
                float(p.get("timeoutSeconds") or 1))
        return out
    except (TypeError, KeyError, AttributeError, json.JSONDecodeError) as exc:
        raise ValueError(f"${ENV} is not a probe table: {exc}") from exc


class AppProbeServer:
    def __init__(self, probes: dict[str, AppProbe],
                 ready: Callable[[], Awaitable[int]] | None = None) -> None:
        """`ready`: the proxy's own readiness (an HTTP status) for READY_PATH."""
        self.probes = probes
        self.ready = ready
        self._client = httpx.AsyncClient(trust_env=False, verify=False,
                                         limits=httpx.Limits(max_keepalive_connections=0))
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        await self._client.aclose()

    async def status(self, path: str) -> int:
        """The app's answer to the probe configured at `path` (404: none; 503: the app
        could not be reached in time, as kubelet counts a failure)."""
        if path == READY_PATH and self.ready is not None:
            return await self.ready()
        probe = self.probes.get(path)
        if probe is None:
            return 404
        if probe.grpc_service is not None:
            return await _grpc_health(probe)
        url = f"{probe.scheme.lower()}://127.0.0.1:{probe.port}{probe.path}"
        try:
            resp = await self._client.get(url, headers=dict(probe.headers),
                                          timeout=probe.timeout)
        except httpx.HTTPError:
            return 503
        return resp.status_code

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            method, target = head[:_MAX_REQUEST].split(b" ", 2)[:2]
            path = target.decode("latin-1").split("?", 1)[0]
            code = await self.status(path) if method == b"GET" else 405
            writer.write(f"HTTP/1.1 {code} {'OK' if code < 400 else 'Probe failed'}\r\n"
                         "content-length: 0\r\nconnection: close\r\n\r\n".encode())
            await writer.drain()
        except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _grpc_health(probe: AppProbe) -> int:
    """200 when the app's gRPC health service says SERVING for the probe's service,
    503 for any other answer or none in time (kubelet's gRPC probe semantics)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{probe.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            answer = await stub.Check(
                health_pb2.HealthCheckRequest(service=probe.grpc_service),
                timeout=probe.timeout)
        except grpc.aio.AioRpcError as exc:
            log.info("gRPC health check of 127.0.0.1:%d failed: %s", probe.port, exc.code())
            return 503
    return 200 if answer.status == health_pb2.HealthCheckResponse.SERVING else 503
