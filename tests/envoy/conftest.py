"""Fixtures for tests with real Envoy processes: tiny HTTP backends and Envoy cleanup.

Everything listens on 127.0.0.1 only, and every process or thread started here
is stopped in a `finally`, also when the test fails.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from gossamer.controlplane.server import ControlPlane, ControlPlaneOptions
from gossamer.testing.envoy import EnvoyProcess
from tests.envoy import harness
from tests.envoy.harness import Backend


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


@pytest.fixture
def grpc_echo() -> Iterator[int]:
    """A real gRPC server whose /test.Echo/Say returns the request bytes reversed."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.unary_unary_rpc_method_handler(lambda req, ctx: req[::-1])
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("test.Echo", {"Say": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(grace=None)
