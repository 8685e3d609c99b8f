"""Traffic other than HTTP-by-name: per-upstream ports, TCP and gRPC services."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest

from gossamer.controlplane.server import ControlPlane
from gossamer.testing.envoy import free_port
from tests.envoy.conftest import Backend
from tests.envoy.test_controlplane import Sidecar, _api, _synced, _wait, cp  # noqa: F401

pytestmark = pytest.mark.slow


class TcpEcho:
    """Answers every chunk with `echo:` + the chunk."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(4096):
                conn.sendall(b"echo:" + data)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def tcp_echo() -> Iterator[TcpEcho]:
    server = TcpEcho()
    try:
        yield server
    finally:
        server.close()


def _service(name: str, protocol: str) -> dict[str, Any]:
    return {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Service",
            "metadata": {"name": name}, "spec": {"ports": [{"port": 80, "protocol": protocol}]}}


def _workload(name: str, service: str, port: int) -> dict[str, Any]:
    return {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Workload",
            "metadata": {"name": name},
            "spec": {"service": service, "address": "127.0.0.1", "port": port}}


async def test_http_tcp_and_grpc_upstreams(cp: ControlPlane, envoys: Any,  # noqa: F811
                                           backends: tuple[Backend, Backend],
                                           tcp_echo: TcpEcho, grpc_echo: int) -> None:
    web = Sidecar(cp, "web", delta=True, app_port=backends[0].port, make=envoys)
    db = Sidecar(cp, "db", delta=True, app_port=tcp_echo.port, make=envoys, protocol="tcp")
    rpc = Sidecar(cp, "rpc", delta=False, app_port=grpc_echo, make=envoys, protocol="grpc")
    web_port, db_port = free_port(), free_port()
    client = Sidecar(cp, "client", delta=True, make=envoys, upstreams=(
        {"service": "web", "namespace": "default", "port": 80, "local_port": web_port},
        {"service": "db", "namespace": "default", "port": 80, "local_port": db_port},
    ))
    for name, side, protocol in (("web", web, "http"), ("db", db, "tcp"), ("rpc", rpc, "grpc")):
        await _api(cp, "POST", "/api/v1/apply", _service(name, protocol))
        await _api(cp, "POST", "/api/v1/apply", _workload(f"{name}-0", name, side.inbound))
    for side in (web, db, rpc, client):
        await asyncio.to_thread(side.envoy.start)
        await side.envoy.await_ready()
    await _wait(lambda: _synced(cp, 4), "all proxies in sync")

    # A dedicated upstream port needs no Host header and no proxy settings.
    async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
        resp = await http.get(f"http://127.0.0.1:{web_port}/anything")
    assert (resp.status_code, resp.text) == (200, "A")

    # TCP: bytes cross client sidecar -> db sidecar (tcp_proxy both ways) -> app.
    reader, writer = await asyncio.open_connection("127.0.0.1", db_port)
    writer.write(b"ping")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(100), 5) == b"echo:ping"
    writer.close()
    await writer.wait_closed()

    # gRPC over h2c: the app dials its outbound listener with the service as authority.
    def call() -> bytes:
        with grpc.insecure_channel(f"127.0.0.1:{client.outbound}",
                                   options=[("grpc.default_authority", "rpc")]) as channel:
            say = channel.unary_unary("/test.Echo/Say")
            return bytes(say(b"gossamer", timeout=5))

    assert await asyncio.to_thread(call) == b"remassog"
