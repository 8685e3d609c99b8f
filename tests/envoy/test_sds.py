"""A real Envoy fed by the agent's SDS server over a Unix socket.

1. An mTLS listener whose certificate (`default`) and trust bundle (`ROOTCA`)
   come from `SdsServer`: a client with a mesh certificate gets an answer, a
   rotated certificate is served to new connections without restarting
   Envoy while an open connection keeps working, and a client certificate
   from a foreign CA is refused.
2. The agent's TLS bootstrap: Envoy reaches a TLS xDS server through the
   static xds cluster, verifying it with ROOTCA from the same SDS.

Everything stays on loopback and a private Unix socket; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import socket
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509

from gossamer.agent.bootstrap import bootstrap, sds_cluster
from gossamer.agent.sds import SdsServer
from gossamer.contract.names import CERT_SECRET, CONTROL_PLANE_NAME, ROOT_SECRET, sds_config
from gossamer.contract.node import NodeMetadata
from gossamer.testing.envoy import EnvoyProcess, free_port
from gossamer.xds.cache import SnapshotCache
from gossamer.xds.server import NodeInfo, NoHooks, XdsServer
from gossamer.xds.status import ProxyRegistry
from gossamer.xds.types import Snapshot
from tests.unit.agent.test_certs import TinyCa

pytestmark = pytest.mark.slow

SERVER_ID = "spiffe://test.local/ns/default/sa/server"
CLIENT_ID = "spiffe://test.local/ns/default/sa/client"
DOWNSTREAM_TLS = ("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                  "DownstreamTlsContext")
HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
       "HttpConnectionManager")
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short private directory: Unix socket paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="gsds-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def sds(workdir: Path) -> AsyncIterator[SdsServer]:
    server = SdsServer(workdir / "sds.sock")
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0)


def mtls_bootstrap(sds: SdsServer, port: int) -> dict[str, Any]:
    """A static mTLS listener answering every request itself; secrets from the agent's SDS."""
    tls = {
        "@type": DOWNSTREAM_TLS,
        "requireClientCertificate": True,
        "commonTlsContext": {
            "tlsCertificateSdsSecretConfigs": [{"name": CERT_SECRET, "sdsConfig": sds_config()}],
            "validationContextSdsSecretConfig": {"name": ROOT_SECRET, "sdsConfig": sds_config()},
        },
    }
    hcm = {
        "@type": HCM,
        "statPrefix": "mtls",
        "routeConfig": {"virtualHosts": [{"name": "all", "domains": ["*"], "routes": [{
            "match": {"prefix": "/"},
            "directResponse": {"status": 200, "body": {"inlineString": "hello over mtls"}},
        }]}]},
        "httpFilters": [{"name": "envoy.filters.http.router", "typedConfig": {"@type": ROUTER}}],
    }
    return {
        "node": {"id": "sds-test.default", "cluster": "sds-test"},
        "admin": {"address": {"socketAddress": {"address": "127.0.0.1", "portValue": 0}}},
        "staticResources": {
            "listeners": [{
                "name": "mtls",
                "address": {"socketAddress": {"address": "127.0.0.1", "portValue": port}},
                "filterChains": [{
                    "transportSocket": {"name": "envoy.transport_sockets.tls",
                                        "typedConfig": tls},
                    "filters": [{"name": "envoy.filters.network.http_connection_manager",
                                 "typedConfig": hcm}],
                }],
            }],
            "clusters": [sds_cluster(sds.address)],
        },
    }


class Client:
    """A blocking HTTP/1.1 client over TLS with a client certificate (run it in a thread)."""

    def __init__(self, root_pem: str, chain_pem: str, key_pem: str, directory: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.context.load_verify_locations(cadata=root_pem)
        # Workload certificates name a SPIFFE ID, not a host: verify the chain only.
        self.context.check_hostname = False
        self.context.verify_mode = ssl.CERT_REQUIRED
        cert_file, key_file = directory / f"client-{id(self)}.pem", directory / f"k-{id(self)}"
        cert_file.write_text(chain_pem)
        key_file.write_text(key_pem)
        self.context.load_cert_chain(cert_file, key_file)

    def connect(self, port: int) -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        return self.context.wrap_socket(raw)

    @staticmethod
    def get(conn: ssl.SSLSocket) -> tuple[int, bytes]:
        conn.sendall(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                raise ConnectionError(f"connection closed after {data!r}")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        length = next(int(v) for k, _, v in (line.partition(": ") for line in lines[1:])
                      if k.lower() == "content-length")
        while len(body) < length:
            chunk = conn.recv(4096)
            if not chunk:
                raise ConnectionError("connection closed in the body")
            body += chunk
        return status, body

    @staticmethod
    def peer_serial(conn: ssl.SSLSocket) -> int:
        der = conn.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number

    def fetch(self, port: int) -> tuple[int, bytes, int]:
        """One request on a new connection: (status, body, serial of Envoy's certificate)."""
        with self.connect(port) as conn:
            status, body = self.get(conn)
            return status, body, self.peer_serial(conn)


async def until(check: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await asyncio.to_thread(check)
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


async def test_mtls_listener_from_sds_rotates_without_restart(
        sds: SdsServer, workdir: Path) -> None:
    ca = TinyCa()
    chain_a, key_a, cert_a = ca.leaf(uri=SERVER_ID)
    sds.update(chain_a, key_a, ca.root_pem)
    client_chain, client_key, _ = ca.leaf(uri=CLIENT_ID)
    client = Client(ca.root_pem, client_chain, client_key, workdir)

    port = free_port()
    envoy = EnvoyProcess(mtls_bootstrap(sds, port))
    old_conn: ssl.SSLSocket | None = None
    try:
        await asyncio.to_thread(envoy.start)
        # LIVE only once the listener's secrets arrived over SDS.
        await envoy.await_ready()
        status, body, serial = await asyncio.to_thread(client.fetch, port)
        assert (status, body, serial) == (200, b"hello over mtls", cert_a.serial_number)

        # An open connection from before the rotation...
        old_conn = await asyncio.to_thread(client.connect, port)
        assert (await asyncio.to_thread(client.get, old_conn))[0] == 200

        # Rotate: new key, new certificate, same Envoy process.
        pid = envoy.pid
        chain_b, key_b, cert_b = ca.leaf(uri=SERVER_ID)
        assert cert_b.serial_number != cert_a.serial_number
        sds.update(chain_b, key_b, ca.root_pem)
        await until(lambda: client.fetch(port)[2] == cert_b.serial_number,
                    "Envoy to serve the rotated certificate")
        assert envoy.pid == pid
        assert envoy.running()
        # ...keeps working on the certificate it started with: no request fails.
        assert (await asyncio.to_thread(client.get, old_conn))[0] == 200
        assert Client.peer_serial(old_conn) == cert_a.serial_number

        # A client certificate from a foreign CA is refused.
        foreign = TinyCa("Foreign Root")
        f_chain, f_key, _ = foreign.leaf(uri=CLIENT_ID)
        intruder = Client(ca.root_pem, f_chain, f_key, workdir)
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            await asyncio.to_thread(intruder.fetch, port)
        assert await envoy.astat(f"listener.127.0.0.1_{port}.ssl.fail_verify_error") >= 1

        # The admin API does not give the private key away.
        dump = json.loads(await envoy.aadmin_get(
            "/config_dump?resource=dynamic_active_secrets"))
        secrets = {c["name"]: c["secret"] for c in dump["configs"]}
        assert sorted(secrets) == [ROOT_SECRET, CERT_SECRET]
        key = secrets[CERT_SECRET]["tls_certificate"]["private_key"]["inline_bytes"]
        assert base64.b64decode(key) == b"[redacted]"
    finally:
        if old_conn is not None:
            old_conn.close()
        await asyncio.to_thread(envoy.stop)


class _Hooks(NoHooks):
    """Every proxy gets an empty snapshot: enough for Envoy to become LIVE over ADS."""

    def __init__(self, cache: SnapshotCache) -> None:
        self.cache = cache

    async def proxy_connected(self, node_id: str, node: NodeInfo) -> None:
        self.cache.set(node_id, Snapshot.build({}))


class _SeeMetadata(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Records the metadata of every call, to see the join token arrive."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        self.seen.append((details.method, dict(details.invocation_metadata or ())))
        return await continuation(details)


@pytest.mark.parametrize("server_name", [CONTROL_PLANE_NAME, "someone-else"])
async def test_tls_bootstrap_reaches_the_control_plane(
        sds: SdsServer, server_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _SeeMetadata()
    make_server = grpc.aio.server
    monkeypatch.setattr(grpc.aio, "server",
                        lambda **kw: make_server(interceptors=[seen], **kw))
    ca = TinyCa()
    workload_chain, workload_key, _ = ca.leaf(uri=SERVER_ID)
    sds.update(workload_chain, workload_key, ca.root_pem)
    cp_chain, cp_key, _ = ca.leaf(dns=server_name)
    cache, registry = SnapshotCache(), ProxyRegistry()
    xds = XdsServer(cache, _Hooks(cache), registry, server_credentials=grpc.ssl_server_credentials(
        [(cp_key.encode(), cp_chain.encode())]))
    xds_port = await xds.start("127.0.0.1", 0)
    node = NodeMetadata(node_id="web-1.default", service="web", namespace="default",
                        workload="web-1", inbound_port=free_port(), inbound_address="127.0.0.1",
                        app_port=8080, app_protocol=None, outbound_port=free_port(),
                        admin_port=free_port())
    # State of the world: it answers an empty snapshot at once, where a delta
    # stream would send nothing and leave Envoy in its 15 s initial fetch.
    doc = bootstrap(node, "127.0.0.1", xds_port, sds_socket=sds.address, token="tok",
                    tls=True, delta=False)
    envoy = EnvoyProcess(doc)
    try:
        await asyncio.to_thread(envoy.start)
        if server_name == CONTROL_PLANE_NAME:
            await envoy.await_ready()
            status = registry.get("web-1.default")
            assert status is not None
            assert status.connected
            assert await envoy.astat("cluster.gossamer_xds.ssl.handshake") >= 1
            assert await envoy.astat("cluster.gossamer_xds.ssl.versions.TLSv1.3") >= 1
            [(method, metadata)] = seen.seen
            assert method.endswith("/StreamAggregatedResources")
            assert metadata["authorization"] == "Bearer tok"
        else:
            await until(lambda: envoy.stat("cluster.gossamer_xds.ssl.fail_verify_san") >= 1,
                        "Envoy to refuse a control plane with the wrong name")
            assert not envoy.is_ready()
            assert seen.seen == []
    finally:
        await asyncio.to_thread(envoy.stop)
        await xds.stop(0)
