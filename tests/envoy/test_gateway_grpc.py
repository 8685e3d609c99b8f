"""GRPCRoute at the edge: a real gRPC client through a real gateway Envoy (HTTP/2 in
clear text on an HTTP listener, ALPN h2 on an HTTPS one) to real gRPC servers behind
their sidecars: method matches, weights, hostnames, and a bidirectional stream that the
gateway's request body limit must not hold."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from gossamer.testing.envoy import EnvoyProcess, free_port
from tests.envoy.harness import MiniMesh, wait_for
from tests.envoy.test_gateway_edge import GatewayProxy
from tests.gateway_docs import gateway, grpc_route, parent, self_signed, tls_secret

pytestmark = pytest.mark.slow
HOST = "rpc.example.com"
CERT, KEY = self_signed(HOST)


class RpcServer:
    """test.Echo: Say and Shout answer `<name>:<method>:<request>`; Chat answers each
    message of a stream as it comes (the client waits for each answer)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))

        def unary(method: str) -> Any:
            return grpc.unary_unary_rpc_method_handler(
                lambda req, ctx: f"{name}:{method}:".encode() + req)

        def chat(requests: Iterator[bytes], ctx: Any) -> Iterator[bytes]:
            for req in requests:
                yield f"{name}:Chat:".encode() + req

        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "test.Echo", {"Say": unary("Say"), "Shout": unary("Shout"),
                          "Chat": grpc.stream_stream_rpc_method_handler(chat)}),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def close(self) -> None:
        self.server.stop(grace=None)


@pytest.fixture
def servers() -> Iterator[tuple[RpcServer, RpcServer]]:
    v1 = RpcServer("v1")
    try:
        v2 = RpcServer("v2")
        try:
            yield v1, v2
        finally:
            v2.close()
    finally:
        v1.close()


def _plain(port: int) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{port}",
                                 options=[("grpc.default_authority", HOST)])


def _tls(port: int) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(root_certificates=CERT)
    return grpc.secure_channel(f"127.0.0.1:{port}", creds,
                               options=[("grpc.ssl_target_name_override", HOST),
                                        ("grpc.default_authority", HOST)])


def _calls(channel: Callable[[], grpc.Channel], method: str, n: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    with channel() as ch:
        call = ch.unary_unary(f"/test.Echo/{method}")
        for _ in range(n):
            reply = bytes(call(b"hi", timeout=5))
            assert reply.endswith(f":{method}:hi".encode()), reply
            seen[reply.split(b":")[0].decode()] += 1
    return seen


def _chat(channel: Callable[[], grpc.Channel], words: list[bytes]) -> list[bytes]:
    """One stream; each message is sent only once the previous one was answered."""
    answers: list[bytes] = []
    sent = [threading.Event() for _ in words]

    def requests() -> Iterator[bytes]:
        for i, word in enumerate(words):
            if i and not sent[i - 1].wait(10):
                return
            yield word

    with channel() as ch:
        for i, reply in enumerate(ch.stream_stream("/test.Echo/Chat")(requests(), timeout=15)):
            answers.append(bytes(reply))
            sent[i].set()
    return answers


async def test_grpcroute_at_the_edge_over_h2c_and_h2(
        mini: MiniMesh, envoys: Callable[[dict[str, Any]], EnvoyProcess],
        servers: tuple[RpcServer, RpcServer]) -> None:
    """Say goes to v2 by its method match; Shout is split 50/50 (of 100 calls each side
    expects 50, sd 5: 20..80 is 6 sd either way); a stream is answered message by
    message; the same through the HTTPS listener; another host gets no route."""
    v1, v2 = servers
    plain, secure = free_port(), free_port()
    await mini.serve("rpc-v1", [v1], protocol="grpc")  # type: ignore[list-item]
    await mini.serve("rpc-v2", [v2], protocol="grpc")  # type: ignore[list-item]
    await mini.apply(
        tls_secret("rpc-cert", CERT, KEY),
        gateway(listeners=[
            {"name": "h2c", "port": plain, "protocol": "HTTP"},
            {"name": "h2", "port": secure, "protocol": "HTTPS", "hostname": HOST,
             "tls": {"certificateRefs": [{"name": "rpc-cert"}]}}]),
        grpc_route("rpc", [parent("h2c"), parent("h2")], [HOST], [
            {"matches": [{"method": {"service": "test.Echo", "method": "Say"}}],
             "backendRefs": [{"name": "rpc-v2", "port": 80}]},
            {"matches": [{"method": {"service": "test.Echo", "method": "Shout"}}],
             "backendRefs": [{"name": "rpc-v1", "port": 80, "weight": 50},
                             {"name": "rpc-v2", "port": 80, "weight": 50}]},
            {"backendRefs": [{"name": "rpc-v1", "port": 80}]}]))
    proxy = GatewayProxy(mini, envoys)
    await proxy.start()
    await mini.wait_synced()

    async def routed() -> bool:
        try:
            return await asyncio.to_thread(_calls, lambda: _plain(plain), "Say", 1) == \
                Counter(v2=1)
        except grpc.RpcError:
            return False

    await wait_for(routed, "the GRPCRoute served at the gateway")
    for channel in (lambda: _plain(plain), lambda: _tls(secure)):
        assert await asyncio.to_thread(_calls, channel, "Say", 5) == Counter(v2=5)
        shouts = await asyncio.to_thread(_calls, channel, "Shout", 100)
        assert 20 <= shouts["v2"] <= 80, shouts
        assert shouts["v1"] + shouts["v2"] == 100, shouts
        assert await asyncio.to_thread(_chat, channel, [b"a", b"b", b"c"]) == [
            b"v1:Chat:a", b"v1:Chat:b", b"v1:Chat:c"]

    def other_host() -> grpc.StatusCode:
        with grpc.insecure_channel(f"127.0.0.1:{plain}", options=[
                ("grpc.default_authority", "other.example.com")]) as ch:
            try:
                ch.unary_unary("/test.Echo/Say")(b"hi", timeout=5)
            except grpc.RpcError as exc:
                return exc.code()  # type: ignore[no-any-return]
        return grpc.StatusCode.OK

    # The 404 for an unknown host reaches a gRPC client as UNIMPLEMENTED.
    assert await asyncio.to_thread(other_host) == grpc.StatusCode.UNIMPLEMENTED
