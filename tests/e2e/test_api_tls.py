"""The HTTP API over TLS: a serving certificate from the mesh CA, the same names
as the xDS port's, TLS only, renewed without a restart when the signer changes,
and never plaintext beyond loopback."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from gossamer.ca import fingerprint
from gossamer.contract.names import CONTROL_PLANE_NAME
from gossamer.controlplane.server import BUNDLE_FILE, ControlPlane, ControlPlaneOptions


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    cp = ControlPlane(ControlPlaneOptions(state_dir=tmp_path / "state", xds_port=0,
                                          api_port=0, debounce=0.01, api_tls=True))
    await cp.start()
    try:
        yield cp
    finally:
        await cp.stop()


def _served(port: int, roots: str) -> tuple[x509.Certificate, str]:
    """The API's certificate, verified against exactly `roots` for 127.0.0.1, and the
    TLS version of the handshake."""
    context = ssl.create_default_context(cadata=roots)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der), str(tls.version())


def _plaintext_answer(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            return raw.recv(100)
        except ConnectionResetError:
            return b""


async def test_the_api_serves_the_meshs_certificate_and_tls_only(plane: ControlPlane) -> None:
    assert plane.ca is not None
    bundle = plane.ca.bundle_pem()
    cert, version = await asyncio.to_thread(_served, plane.api_port, bundle)
    assert version == "TLSv1.3"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [CONTROL_PLANE_NAME]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert plane.api_url == f"https://127.0.0.1:{plane.api_port}"
    # No HTTP answer to plaintext, so no token is ever read off a plaintext connection.
    assert not (await asyncio.to_thread(_plaintext_answer, plane.api_port)).startswith(b"HTTP")
    # The bundle is open (a joining host has no credential it may send yet) and is the
    # one the operator finds in the state directory.
    async with httpx.AsyncClient(verify=ssl.create_default_context(cadata=bundle),
                                 trust_env=False) as http:
        resp = await http.get(f"{plane.api_url}/api/v1/ca/bundle")
        assert resp.status_code == 200
        assert resp.text == bundle
        assert (await http.get(f"{plane.api_url}/api/v1/ca")).status_code == 401
    assert plane.options.state_dir is not None
    assert (plane.options.state_dir / BUNDLE_FILE).read_text() == bundle


async def test_a_new_signer_is_served_without_a_restart(plane: ControlPlane) -> None:
    """Root rotation: after `switch` the next handshake presents a certificate of the
    new root, which a client trusting only the new root accepts."""
    assert plane.ca is not None
    assert plane.options.state_dir is not None
    old_root = plane.ca.bundle_pem()
    await plane.ca.begin_root_rotation()
    [new_root] = [c for c in fingerprint.certificates(plane.ca.bundle_pem())
                  if c not in fingerprint.certificates(old_root)]
    new_pem = new_root.public_bytes(Encoding.PEM).decode()
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.to_thread(_served, plane.api_port, new_pem)
    await plane.ca.switch_signer()
    cert, _ = await asyncio.to_thread(_served, plane.api_port, new_pem)
    assert cert.issuer == new_root.subject
    # The bundle file follows the rotation (every 2 s).
    bundle_file = plane.options.state_dir / BUNDLE_FILE
    deadline = time.monotonic() + 30
    while bundle_file.read_text() != plane.ca.bundle_pem() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert len(fingerprint.of_bundle(bundle_file.read_text())) == 2


def test_beyond_loopback_the_api_is_tls_only() -> None:
    assert ControlPlaneOptions(state_dir=None, host="198.18.0.2").serves_api_tls
    assert ControlPlaneOptions(state_dir=None, host="0.0.0.0").serves_api_tls
    assert not ControlPlaneOptions(state_dir=None, host="127.0.0.1").serves_api_tls
    assert ControlPlaneOptions(state_dir=None, host="127.0.0.1", api_tls=True).serves_api_tls
    with pytest.raises(ValueError, match="plaintext beyond loopback"):
        ControlPlaneOptions(state_dir=None, host="0.0.0.0", api_tls=False)
    out = subprocess.run([sys.executable, "-m", "gossamer", "control-plane", "--host",
                          "198.18.0.2", "--no-api-tls", "--state-dir", "/nonexistent"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 1
    assert out.stderr.splitlines() == [
        "error: the API would serve tokens in plaintext beyond loopback (host 198.18.0.2): "
        "it is served over TLS there, so drop --no-api-tls or listen on 127.0.0.1"]


def test_serving_names_cover_the_advertised_and_the_listened_address() -> None:
    options = ControlPlaneOptions(state_dir=None, host="198.18.0.2",
                                  advertise_address="cp.example")
    assert options.serving_names() == ([CONTROL_PLANE_NAME, "cp.example"],
                                       ["127.0.0.1", "198.18.0.2"])
    wildcard = ControlPlaneOptions(state_dir=None, host="0.0.0.0",
                                   advertise_address="198.18.0.9")
    assert wildcard.serving_names() == ([CONTROL_PLANE_NAME], ["127.0.0.1", "198.18.0.9"])
