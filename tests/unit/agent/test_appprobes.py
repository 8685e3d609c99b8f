"""agent/appprobes.py: kubelet's rewritten probes answered with the app's own status."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from gossamer.agent.appprobes import AppProbeServer, parse_probes


@pytest.fixture
def app() -> Iterator[int]:
    """An app whose /ready answers 200 and /sick 500, and which wants a header."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path == "/ready" and self.headers.get("x-probe") == "kubelet"
            self.send_response(200 if ok else 500)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_probes_get_the_apps_answer(app: int) -> None:
    table = {"/app-health/web/readyz": {"port": app, "path": "/ready", "httpHeaders": [
                 {"name": "x-probe", "value": "kubelet"}]},
             "/app-health/web/livez": {"port": app, "path": "/sick"},
             "/app-health/gone/readyz": {"port": _free_port(), "path": "/"}}
    server = AppProbeServer(parse_probes(json.dumps(table)))
    port = _free_port()
    await server.start("127.0.0.1", port)
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=5) as kubelet:
            async def status(path: str) -> int:
                return (await kubelet.get(f"http://127.0.0.1:{port}{path}")).status_code
            assert await status("/app-health/web/readyz") == 200
            assert await status("/app-health/web/livez") == 500
            assert await status("/app-health/gone/readyz") == 503  # nothing listens
            assert await status("/app-health/other/readyz") == 404  # not configured
            assert await status("/anything?port=22") == 404
    finally:
        await server.close()


@pytest.mark.parametrize("text", [
    "[]", "{", '{"/x": {"port": 80}}', '{"/app-health/a/readyz": {"port": 0}}',
    '{"/app-health/a/readyz": {"port": 80, "scheme": "GRPC"}}',
])
def test_a_bad_table_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"GOSSAMER_APP_PROBES|app-health|scheme"):
        parse_probes(text)


async def test_grpc_probes_are_health_checks_of_the_app() -> None:
    """A real gRPC server with the standard health service: SERVING is 200; NOT_SERVING,
    an unknown service and no server are 503; a change of status shows at once."""
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    grpc_port = _free_port()
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    await server.start()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await servicer.set("shop.Cart", health_pb2.HealthCheckResponse.NOT_SERVING)
    table = {"/app-health/app/livez": {"port": grpc_port, "grpc": {"service": ""}},
             "/app-health/app/readyz": {"port": grpc_port, "grpc": {"service": "shop.Cart"},
                                        "timeoutSeconds": 2},
             "/app-health/app/startupz": {"port": grpc_port, "grpc": {"service": "nope"}},
             "/app-health/gone/livez": {"port": _free_port(), "grpc": {}}}
    probes = AppProbeServer(parse_probes(json.dumps(table)))
    port = _free_port()
    await probes.start("127.0.0.1", port)
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=10) as kubelet:
            async def status(path: str) -> int:
                return (await kubelet.get(f"http://127.0.0.1:{port}{path}")).status_code
            assert await status("/app-health/app/livez") == 200
            assert await status("/app-health/app/readyz") == 503
            assert await status("/app-health/app/startupz") == 503
            assert await status("/app-health/gone/livez") == 503
            await servicer.set("shop.Cart", health_pb2.HealthCheckResponse.SERVING)
            assert await status("/app-health/app/readyz") == 200
    finally:
        await probes.close()
        await server.stop(0)


async def test_the_proxys_readiness_is_answered_only_when_asked_for() -> None:
    """/healthz/ready is Envoy's readiness as the agent reads it (kubelet cannot reach the
    loopback admin); a server without it keeps 404 there, like any unconfigured path."""
    state = {"code": 503}

    async def envoy_ready() -> int:
        return state["code"]
    with_ready = AppProbeServer({}, envoy_ready)
    without = AppProbeServer({})
    ports = (_free_port(), _free_port())
    await with_ready.start("127.0.0.1", ports[0])
    await without.start("127.0.0.1", ports[1])
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=5) as kubelet:
            url = f"http://127.0.0.1:{ports[0]}/healthz/ready"
            assert (await kubelet.get(url)).status_code == 503
            state["code"] = 200
            assert (await kubelet.get(url)).status_code == 200
            other = f"http://127.0.0.1:{ports[1]}/healthz/ready"
            assert (await kubelet.get(other)).status_code == 404
    finally:
        await with_ready.close()
        await without.close()
