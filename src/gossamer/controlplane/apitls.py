"""The HTTP API's TLS, with the serving certificate the xDS port has.

Why: the API carries bearer tokens (admin tokens included), so it must never
cross a network in plaintext. Beyond loopback the API is served over TLS only,
with a certificate from the mesh CA, so agents and the CLI verify it with the
same trust bundle they verify xDS with.

Renewal without restart: uvicorn takes one `ssl.SSLContext`. Its SNI callback
runs on every handshake (with or without a server name) and asks the CA for
the current certificate, which is cached and re-issued only at half its life
or when the signer changed (root rotation); when it changed, the handshake
switches to a context loaded with the new pair. Open connections keep the
certificate they started with, as on the xDS port.

The private key is handed to OpenSSL through an anonymous memory file, never
written to disk.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import ssl
from collections.abc import Callable
from pathlib import Path

from gossamer.ca.pemfile import in_memory

log = logging.getLogger(__name__)

# The source of the serving pair: (certificate chain PEM, private key PEM).
PairSource = Callable[[], tuple[bytes, bytes]]


def is_loopback(host: str) -> bool:
    """Whether listening on `host` keeps the API on this machine. A wildcard or a
    name other than `localhost` may be reached from elsewhere."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ApiTls:
    """The `ssl.SSLContext` the API is served with, following the CA."""

    def __init__(self, source: PairSource) -> None:
        self._source = source
        chain, key = source()
        self._chain = chain
        self.context = _server_context(chain, key)
        self.context.sni_callback = self._hello
        self._latest = self.context

    def current(self) -> ssl.SSLContext:
        """The context holding the CA's current serving pair (a new one when it changed)."""
        chain, key = self._source()
        if chain != self._chain:
            self._latest = _server_context(chain, key)
            self._chain = chain
            log.info("serving a renewed API certificate")
        return self._latest

    def _hello(self, conn: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
               context: ssl.SSLContext) -> None:
        try:
            latest = self.current()
        except Exception:  # a failed renewal must not fail the handshake: keep the old pair
            log.exception("could not renew the API's serving certificate")
            return
        if latest is not context:
            conn.context = latest


def _server_context(chain: bytes, key: bytes) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3  # as every other hop of the mesh
    context.set_alpn_protocols(["http/1.1"])  # uvicorn speaks HTTP/1.1 here
    with in_memory(chain) as chain_path, in_memory(key) as key_path:
        context.load_cert_chain(chain_path, key_path)
    return context


def write_bundle(path: Path, bundle_pem: str) -> bool:
    """Write the trust bundle where an operator on this host finds it (public data,
    but the state directory is private): only when it changed; atomically, so a
    reader never sees half a bundle. Returns whether it wrote."""
    with contextlib.suppress(OSError):
        if path.read_text() == bundle_pem:
            return False
    part = path.with_name(path.name + ".part")
    part.write_text(bundle_pem)
    os.replace(part, path)
    return True
