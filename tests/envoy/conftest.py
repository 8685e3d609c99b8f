"""Fixtures for tests with real Envoy processes: tiny HTTP backends and Envoy cleanup.

Everything listens on 127.0.0.1 only, and every process or thread started here
is stopped in a `finally`, also when the test fails.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from gossamer.controlplane.server import ControlPlane, ControlPlaneOptions
from gossamer.testing.envoy import EnvoyProcess
from tests.envoy import harness


class Backend:
    """An HTTP server on 127.0.0.1 that answers every GET with its name, or 503 to
    the next `fail` requests."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.hits = 0
        self.fail = 0
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Separate header and body writes would stall ~40 ms under Nagle.
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_GET(self) -> None:
                backend.hits += 1
                status, body = 200, backend.name.encode()
                if backend.fail > 0:  # tests make the backend misbehave on purpose
                    backend.fail -= 1
                    status, body = 503, b"busy"
                self.send_response(status)
                self.send_header("content-type", "text/plain")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def backends() -> Iterator[tuple[Backend, Backend]]:
    a = Backend("A")
    try:
        b = Backend("B")
        try:
            yield a, b
        finally:
            b.close()
    finally:
        a.close()


@pytest.fixture
def envoys() -> Iterator[Callable[[dict[str, Any]], EnvoyProcess]]:
    """Make (unstarted) EnvoyProcess objects; all are stopped at teardown."""
    made: list[EnvoyProcess] = []

    def make(bootstrap: dict[str, Any]) -> EnvoyProcess:
        proc = EnvoyProcess(bootstrap)
        made.append(proc)
        return proc

    try:
        yield make
    finally:
        for proc in made:
            proc.stop()


@pytest.fixture
def make_backend() -> Iterator[Callable[[str], harness.Backend]]:
    """Make controllable backends (tests/envoy/harness.py); all closed at teardown."""
    made: list[harness.Backend] = []

    def make(name: str) -> harness.Backend:
        backend = harness.Backend(name)
        made.append(backend)
        return backend

    try:
        yield make
    finally:
        for backend in made:
            backend.close()


@pytest.fixture
async def mini(envoys: Callable[[dict[str, Any]], EnvoyProcess],
               ) -> AsyncIterator[harness.MiniMesh]:
    """A control plane (memory store, security off: these tests are about traffic
    policy, and tests/e2e covers the secure mesh) and a MiniMesh on it."""
    plane = ControlPlane(ControlPlaneOptions(state_dir=None, xds_port=0, api_port=0,
                                             debounce=0.01, secure=False))
    await plane.start()
    try:
        yield harness.MiniMesh(plane, envoys)
    finally:
        await plane.stop()
