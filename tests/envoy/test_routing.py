"""Routing through real sidecars: request mirroring, CORS, GRPCRoute method matching,
TCPRoute weighted splits and WebSocket upgrades."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from gossamer.testing.envoy import free_port
from tests.envoy.harness import Backend, MiniMesh, Sidecar, get, proxy_client, wait_for

pytestmark = pytest.mark.slow

GATEWAY = "gateway.networking.k8s.io"
API = "mesh.gossamer.dev/v1alpha1"
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC11B85"


def _service(name: str, protocol: str = "http") -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Service", "metadata": {"name": name},
            "spec": {"ports": [{"port": 80, "protocol": protocol}]}}


def _http_route(name: str, rule: dict[str, Any], parent: str = "echo") -> dict[str, Any]:
    return {"apiVersion": f"{GATEWAY}/v1", "kind": "HTTPRoute", "metadata": {"name": name},
            "spec": {"parentRefs": [{"name": parent}], "rules": [rule]}}


async def _settle(backend: Backend, quiet: float = 0.5, timeout: float = 15.0) -> None:
    """Until `backend.hits` stops changing: mirrored copies arrive after the replies."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last, since = -1, loop.time()
    while loop.time() < deadline:
        if backend.hits != last:
            last, since = backend.hits, loop.time()
        elif loop.time() - since >= quiet:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{backend.name} kept receiving requests for {timeout}s")


async def test_mirror_receives_its_fraction_and_callers_see_only_the_primary(
        mini: MiniMesh, make_backend: Callable[[str], Backend]) -> None:
    echo, shadow = make_backend("echo"), make_backend("shadow")
    # The shadow fails every request, slowly: callers must notice neither.
    shadow.fail, shadow.fail_status, shadow.delay = 10**9, 500, 0.05
    await mini.serve("echo", [echo])
    await mini.serve("shadow", [shadow])
    client = await mini.client()
    await mini.wait_synced()
    modified_before = (await client.stats()).get("listener_manager.listener_modified", 0)
    await mini.apply(_http_route("mirror", {
        "name": "all",
        "filters": [{"type": "RequestMirror", "requestMirror": {
            "backendRef": {"name": "shadow", "port": 80}, "percent": 30}}],
        "backendRefs": [{"name": "echo", "port": 80}],
    }))
    await mini.wait_synced()

    async def route_in_effect() -> bool:
        await get(client, "http://echo/probe")
        return shadow.hits > 0
    await wait_for(route_in_effect, "the mirror route in effect")
    await _settle(shadow)
    echo.reset()
    shadow.hits = 0
    shadow.seen.clear()

    total = 1000
    async with proxy_client(client) as http:
        for i in range(total):
            resp = await http.get(f"http://echo/r/{i}")
            assert (resp.status_code, resp.text, resp.headers.get("x-backend")) == \
                (200, "echo", "echo"), i
    await _settle(shadow)
    assert echo.hits == total
    assert 250 <= shadow.hits <= 350, shadow.hits
    # Copies, not redirected originals: Envoy marks the mirror's host.
    assert all(h["host"].startswith("echo-shadow") for _, _, h in shadow.seen)
    assert {p for _, p, _ in shadow.seen} <= {f"/r/{i}" for i in range(total)}
    # A route change is an RDS update: no listener was rebuilt.
    assert (await client.stats()).get("listener_manager.listener_modified", 0) == \
        modified_before


async def test_mirror_to_a_missing_service_is_reported_and_traffic_flows(
        mini: MiniMesh, make_backend: Callable[[str], Backend]) -> None:
    echo = make_backend("echo")
    await mini.serve("echo", [echo])
    client = await mini.client()
    await mini.apply(_http_route("ghost", {
        "filters": [{"type": "RequestMirror",
                     "requestMirror": {"backendRef": {"name": "ghost", "port": 80}}}],
        "backendRefs": [{"name": "echo"}],
    }))
    await mini.wait_synced()
    status = (await mini.api("GET", "/api/v1/resources/HTTPRoute/default/ghost"))["status"]
    resolved = next(c for c in status["conditions"] if c["type"] == "ResolvedRefs")
    assert (resolved["status"], resolved["reason"]) == ("False", "BackendNotFound")
    assert "ghost" in resolved["message"]
    resp = await get(client, "http://echo/")
    assert (resp.status_code, resp.text) == (200, "echo")


async def test_invalid_route_is_refused_at_apply_with_field_and_reason(mini: MiniMesh) -> None:
    doc = _http_route("bad", {
        "filters": [{"type": "RequestMirror", "requestMirror": {
            "backendRef": {"name": "shadow"}, "percent": 10,
            "fraction": {"numerator": 1, "denominator": 10}}}],
        "backendRefs": [{"name": "echo"}],
    })
    body = await mini.api("POST", "/api/v1/apply", doc, expect=422)
    text = str(body)
    assert "spec.rules[0].filters[0].requestMirror.percent" in text
    assert "mutually exclusive" in text


async def test_cors_preflight_is_answered_by_the_caller_sidecar(
        mini: MiniMesh, make_backend: Callable[[str], Backend]) -> None:
    echo = make_backend("echo")
    await mini.serve("echo", [echo])
    client = await mini.client()
    await mini.apply(_http_route("cors", {
        "filters": [{"type": "CORS", "cors": {
            "allowOrigins": ["https://*.example.com"], "allowMethods": ["GET", "PUT"],
            "allowHeaders": ["x-token"], "exposeHeaders": ["x-backend"],
            "allowCredentials": True, "maxAge": 600}}],
        "backendRefs": [{"name": "echo"}],
    }))
    await mini.wait_synced()
    preflight = {"origin": "https://app.example.com", "access-control-request-method": "PUT"}
    async with proxy_client(client) as http:
        async def answered() -> bool:
            resp = await http.options("http://echo/x", headers=preflight)
            return "access-control-allow-origin" in resp.headers
        await wait_for(answered, "the CORS route in effect")
        resp = await http.options("http://echo/x", headers=preflight)
        # Answered by the caller's sidecar: the app has no OPTIONS handler (it says 501).
        assert resp.status_code == 200
        assert resp.headers["access-control-allow-origin"] == "https://app.example.com"
        assert resp.headers["access-control-allow-methods"] == "GET,PUT"
        assert resp.headers["access-control-max-age"] == "600"
        assert resp.headers["access-control-allow-credentials"] == "true"
        resp = await http.get("http://echo/x", headers={"origin": "https://evil.test"})
        assert resp.status_code == 200
        assert "access-control-allow-origin" not in resp.headers
        resp = await http.get("http://echo/x", headers={"origin": "https://a.example.com"})
        assert resp.headers["access-control-expose-headers"] == "x-backend"


class GrpcVersion:
    """A gRPC server whose test.Echo methods answer `<name>:<method>:<request>`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))

        def handler(method: str) -> Any:
            return grpc.unary_unary_rpc_method_handler(
                lambda req, ctx: f"{name}:{method}:".encode() + req)
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "test.Echo", {"Say": handler("Say"), "Shout": handler("Shout")}),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def close(self) -> None:
        self.server.stop(grace=None)


@pytest.fixture
def grpc_versions() -> Iterator[tuple[GrpcVersion, GrpcVersion]]:
    v1 = GrpcVersion("v1")
    try:
        v2 = GrpcVersion("v2")
        try:
            yield v1, v2
        finally:
            v2.close()
    finally:
        v1.close()


async def test_grpcroute_sends_one_method_to_v2(
        mini: MiniMesh, grpc_versions: tuple[GrpcVersion, GrpcVersion]) -> None:
    v1, v2 = grpc_versions
    await mini.apply(_service("rpc", "grpc"))
    await mini.serve("rpc-v1", [v1], protocol="grpc")  # type: ignore[list-item]
    await mini.serve("rpc-v2", [v2], protocol="grpc")  # type: ignore[list-item]
    client = await mini.client()
    await mini.apply({
        "apiVersion": f"{GATEWAY}/v1", "kind": "GRPCRoute", "metadata": {"name": "rpc"},
        "spec": {"parentRefs": [{"name": "rpc"}], "rules": [
            {"name": "shout", "matches": [{"method": {"service": "test.Echo",
                                                      "method": "Shout"}}],
             "backendRefs": [{"name": "rpc-v2", "port": 80}]},
            {"backendRefs": [{"name": "rpc-v1", "port": 80}]},
        ]}})
    await mini.wait_synced()

    def call(method: str) -> bytes:
        with grpc.insecure_channel(f"127.0.0.1:{client.outbound}",
                                   options=[("grpc.default_authority", "rpc")]) as channel:
            return bytes(channel.unary_unary(f"/test.Echo/{method}")(b"hi", timeout=5))

    async def routed() -> bool:
        try:
            return await asyncio.to_thread(call, "Shout") == b"v2:Shout:hi"
        except grpc.RpcError:
            return False
    await wait_for(routed, "the GRPCRoute in effect")
    for _ in range(5):
        assert await asyncio.to_thread(call, "Say") == b"v1:Say:hi"
        assert await asyncio.to_thread(call, "Shout") == b"v2:Shout:hi"
    status = (await mini.api("GET", "/api/v1/resources/GRPCRoute/default/rpc"))["status"]
    assert {c["type"]: c["status"] for c in status["conditions"]} == \
        {"Accepted": "True", "ResolvedRefs": "True"}


class NameServer:
    """A TCP server that answers each connection's first chunk with its name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.connections = 0
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
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            if conn.recv(100):
                conn.sendall(self.name.encode())

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5)


@pytest.fixture
def name_servers() -> Iterator[tuple[NameServer, NameServer]]:
    a = NameServer("a")
    try:
        b = NameServer("b")
        try:
            yield a, b
        finally:
            b.close()
    finally:
        a.close()


async def _tcp_ask(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"who?")
        await writer.drain()
        return await asyncio.wait_for(reader.read(100), 5)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_tcproute_splits_connections_by_weight(
        mini: MiniMesh, name_servers: tuple[NameServer, NameServer]) -> None:
    a, b = name_servers
    await mini.apply(_service("db", "tcp"))
    await mini.serve("db-a", [a], protocol="tcp")  # type: ignore[list-item]
    await mini.serve("db-b", [b], protocol="tcp")  # type: ignore[list-item]
    local = free_port()
    await mini.client(upstreams=(
        {"service": "db", "namespace": "default", "port": 80, "local_port": local},))
    await mini.apply({
        "apiVersion": f"{GATEWAY}/v1alpha2", "kind": "TCPRoute", "metadata": {"name": "db"},
        "spec": {"parentRefs": [{"name": "db", "port": 80}], "rules": [{"backendRefs": [
            {"name": "db-a", "port": 80, "weight": 80},
            {"name": "db-b", "port": 80, "weight": 20}]}]}})
    await mini.wait_synced()

    async def split_in_effect() -> bool:
        try:
            return await _tcp_ask(local) in (b"a", b"b") and a.connections > 0
        except (TimeoutError, OSError):
            return False
    await wait_for(split_in_effect, "the TCPRoute in effect")
    answers = [await _tcp_ask(local) for _ in range(300)]
    assert set(answers) == {b"a", b"b"}
    share = answers.count(b"a") / len(answers)
    assert 0.70 <= share <= 0.90, share


class WebSocketEcho:
    """A minimal RFC 6455 server: the handshake, then it echoes text frames as
    `echo:<text>` until the client closes."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.paths: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        with conn:
            request = _read_head(conn)
            lines = request.decode().split("\r\n")
            headers = {k.strip().lower(): v.strip()
                       for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            self.paths.append(lines[0].split()[1])
            if headers.get("upgrade", "").lower() != "websocket":
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                return
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                         + _accept(headers["sec-websocket-key"]).encode() + b"\r\n\r\n")
            while (frame := _read_frame(conn)) is not None:
                opcode, payload = frame
                if opcode == 0x8:
                    return
                conn.sendall(_frame(b"echo:" + payload, masked=False))

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5)


def _accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def _read_head(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def _recv_exactly(conn: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _read_frame(conn: socket.socket) -> tuple[int, bytes] | None:
    head = _recv_exactly(conn, 2)
    if head is None:
        return None
    opcode, masked, length = head[0] & 0x0F, head[1] & 0x80, head[1] & 0x7F
    if length == 126:
        ext = _recv_exactly(conn, 2)
        length = struct.unpack("!H", ext or b"\0\0")[0]
    mask = _recv_exactly(conn, 4) if masked else b"\0\0\0\0"
    payload = _recv_exactly(conn, length) if length else b""
    if mask is None or payload is None:
        return None
    return opcode, bytes(c ^ mask[i % 4] for i, c in enumerate(payload))


def _frame(payload: bytes, *, masked: bool, opcode: int = 0x1) -> bytes:
    assert len(payload) < 126
    if not masked:
        return bytes([0x80 | opcode, len(payload)]) + payload
    mask = os.urandom(4)
    body = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body


def _websocket_exchange(port: int, target: str, host: str, text: str) -> tuple[str, str]:
    """Handshake on `port`, one masked text frame out; (status line, echoed text)."""
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        head = _read_head(conn).decode()
        status = head.split("\r\n")[0]
        assert f"sec-websocket-accept: {_accept(key)}".lower() in head.lower(), head
        conn.sendall(_frame(text.encode(), masked=True))
        frame = _read_frame(conn)
        conn.sendall(_frame(b"", masked=True, opcode=0x8))
    assert frame is not None
    assert frame[0] == 0x1
    return status, frame[1].decode()


@pytest.fixture
def ws_echo() -> Iterator[WebSocketEcho]:
    server = WebSocketEcho()
    try:
        yield server
    finally:
        server.close()


async def test_websocket_upgrade_through_caller_and_callee_sidecars(
        mini: MiniMesh, ws_echo: WebSocketEcho) -> None:
    await mini.serve("ws", [ws_echo])  # type: ignore[list-item]
    local = free_port()
    client: Sidecar = await mini.client(upstreams=(
        {"service": "ws", "namespace": "default", "port": 80, "local_port": local},))
    await mini.wait_synced()
    # The outbound listener, HTTP-proxy style, and the dedicated upstream port.
    for port, target in ((client.outbound, "http://ws/chat"), (local, "/chat")):
        status, echoed = await asyncio.to_thread(_websocket_exchange, port, target, "ws",
                                                 f"hello via {port}")
        assert status.startswith("HTTP/1.1 101"), status
        assert echoed == f"echo:hello via {port}"
    assert ws_echo.paths == ["/chat", "/chat"]
