"""ExternalService through a real sidecar: the app speaks plain HTTP, the sidecar
originates TLS to an HTTPS server with its own CA (cryptography-made), sends the
SNI, and checks the certificate's names."""

from __future__ import annotations

import datetime
import re
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gossamer.telemetry.scraper import STATS_FILTER
from tests.envoy.harness import MiniMesh, get

pytestmark = pytest.mark.slow
API = "mesh.gossamer.dev/v1alpha1"
HOST = "api.payments.example"


@dataclass
class TlsServer:
    """An HTTPS server with its own CA; `sni` holds the server name of each handshake,
    `requests` (path, Host) of each request."""

    port: int
    ca_pem: str
    sni: list[str | None] = field(default_factory=list)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    # The next `fail` requests get 503.
    fail: int = 0


def _pki(tmp: Path, names: list[str]) -> tuple[str, Path, Path]:
    """(CA PEM, server cert file, server key file); the server cert names `names`."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "external test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_file, key_file = tmp / "server.pem", tmp / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca.public_bytes(serialization.Encoding.PEM).decode(), cert_file, key_file


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[TlsServer]:
    ca_pem, cert_file, key_file = _pki(tmp_path, [HOST])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    server = TlsServer(httpd.server_address[1], ca_pem)

    def on_sni(sock: Any, name: str | None, _: Any) -> None:
        server.sni.append(name)

    ctx.sni_callback = on_sni

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            server.requests.append((self.path, self.headers.get("host")))
            body = f"external says hi to {self.path}".encode()
            failing = server.fail > 0
            server.fail -= failing
            self.send_response(503 if failing else 200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd.RequestHandlerClass = Handler
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _external(server: TlsServer, name: str = "payments", **tls: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "ExternalService", "metadata": {"name": name},
            "spec": {"hosts": [HOST], "endpoints": ["127.0.0.1"],
                     "ports": [{"port": 80, "protocol": "HTTP", "targetPort": server.port}],
                     "tls": {"mode": "ORIGINATE", "caBundle": {"pem": server.ca_pem}, **tls}}}


async def test_the_app_speaks_http_and_the_sidecar_originates_tls(
        mini: MiniMesh, tls_server: TlsServer) -> None:
    await mini.apply(_external(tls_server))
    client = await mini.client()
    await mini.wait_synced()
    resp = await get(client, f"http://{HOST}/charge")
    assert (resp.status_code, resp.text) == (200, "external says hi to /charge")
    # The server only speaks TLS: the request came over it, with the host's SNI.
    assert tls_server.sni
    assert set(tls_server.sni) == {HOST}
    assert tls_server.requests == [("/charge", HOST)]
    # Golden metrics read the external cluster's counters as an edge to payments.default.
    stat = "cluster.external|80||payments.default.upstream_rq_2xx"
    found = {k: v for k, v in (await client.stats()).items() if "payments" in k}
    assert found.get(stat) == 1, found
    assert re.search(STATS_FILTER, stat)


async def test_a_certificate_without_the_expected_name_is_refused(
        mini: MiniMesh, tls_server: TlsServer) -> None:
    await mini.apply(_external(tls_server, subjectAltNames=["other.payments.example"]))
    client = await mini.client()
    await mini.wait_synced()
    resp = await get(client, f"http://{HOST}/charge")
    assert resp.status_code == 503
    assert tls_server.requests == []  # the handshake failed: nothing reached the server


async def test_a_host_no_external_service_names_is_not_routed(
        mini: MiniMesh, tls_server: TlsServer) -> None:
    await mini.apply(_external(tls_server))
    client = await mini.client()
    await mini.wait_synced()
    resp = await get(client, "http://api.other.example/charge")
    assert resp.status_code == 404
    assert tls_server.requests == []


async def test_a_resilience_policy_retries_calls_to_an_external_service(
        mini: MiniMesh, tls_server: TlsServer) -> None:
    await mini.apply(_external(tls_server), {
        "apiVersion": API, "kind": "ResiliencePolicy", "metadata": {"name": "payments"},
        "spec": {"targetRef": {"kind": "ExternalService", "name": "payments"},
                 "retries": {"attempts": 2, "retryOn": ["5xx"]}}})
    client = await mini.client()
    await mini.wait_synced()
    tls_server.fail = 2
    resp = await get(client, f"http://{HOST}/retried")
    assert (resp.status_code, resp.text) == (200, "external says hi to /retried")
    assert [p for p, _ in tls_server.requests] == ["/retried"] * 3
    tls_server.fail = 3  # more failures than retries: the caller sees the last one
    resp = await get(client, f"http://{HOST}/exhausted")
    assert resp.status_code == 503


def _limit(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "RateLimitPolicy", "metadata": {"name": "payments"},
            "spec": {"targetRef": {"kind": "ExternalService", "name": "payments"}, **spec}}


async def test_a_local_rate_limit_on_an_external_service_applies_at_the_callers_sidecar(
        mini: MiniMesh, tls_server: TlsServer) -> None:
    await mini.apply(_external(tls_server), _limit({"local": {"requests": 3, "per": "1h"}}))
    client = await mini.client()
    await mini.wait_synced()
    codes = [(await get(client, f"http://{HOST}/n{i}")).status_code for i in range(4)]
    assert codes == [200, 200, 200, 429]
    assert [p for p, _ in tls_server.requests] == ["/n0", "/n1", "/n2"]  # the 4th stayed in
    # Other hosts are not limited (the filter runs only on the ExternalService's route).
    assert (await get(client, "http://api.other.example/")).status_code == 404


async def test_a_global_rate_limit_on_an_external_service_is_counted_by_the_control_plane(
        mini: MiniMesh, tls_server: TlsServer) -> None:
    await mini.apply(_external(tls_server),
                     _limit({"global": {"rules": [{"requests": 2, "per": "1h"}]}}))
    first, second = await mini.client(), await mini.client("other")
    await mini.wait_synced()
    # One counter across callers: the two sidecars together pass 2.
    codes = [(await get(c, f"http://{HOST}/g")).status_code
             for c in (first, second, first, second)]
    assert codes == [200, 200, 429, 429]
    assert len(tls_server.requests) == 2
