"""The agent's SDS server: the workload's certificate and trust bundle, for its Envoy only.

Why a server of our own: the workload's private key never leaves the
workload. The agent makes the key in memory (`agent/certs.py`) and hands it to
its own Envoy over Envoy's SecretDiscoveryService on a Unix socket inside the
agent's workdir, mode 0600, so only the agent's user can connect. Nothing is
written to disk, and certificates rotate without restarting Envoy: a new
secret applies to new connections while open ones finish on the old one.

Envoy asks for two secrets (names shared in `gossamer.contract.spiffe`):
  CERT_SECRET ("default"): tls_certificate = leaf + intermediates, and the key;
  ROOT_SECRET ("ROOTCA"):  validation_context.trusted_ca = the trust bundle.

It reuses the control plane's xDS machinery rather than a second protocol
implementation: an `XdsServer` serving only SDS_SERVICE over a `SnapshotCache`,
with the same SotW and delta stream machines (both `StreamSecrets` and
`DeltaSecrets` work).

Node ids: the socket is private to one workload, so every node id gets the
same secrets. The `proxy_connected` hook installs the current snapshot under
whatever id the connecting Envoy reports, before the stream reads the cache;
`update` replaces it under every id seen so far. Envoy opens one stream per
secret (non-aggregated SDS), all under the same node id, so snapshots are
never dropped on disconnect: another stream of the node may still be open.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from gossamer.contract.names import CERT_SECRET, ROOT_SECRET
from gossamer.xds.cache import SnapshotCache
from gossamer.xds.server import SDS_SERVICE, UNIX_PREFIX, NodeInfo, NoHooks, XdsServer
from gossamer.xds.types import SECRET, Snapshot, XdsResource

__all__ = ["SdsServer", "cert_secret", "root_secret"]

log = logging.getLogger(__name__)

# sun_path is 108 bytes on Linux, including the terminating NUL.
_MAX_SOCKET_PATH = 107


def _bytes(pem: str | bytes) -> bytes:
    return pem.encode() if isinstance(pem, str) else bytes(pem)


def cert_secret(cert_chain_pem: str | bytes, key_pem: str | bytes,
                name: str = CERT_SECRET) -> secret_pb2.Secret:
    """The workload's certificate secret: chain (leaf first) and private key, inline."""
    return secret_pb2.Secret(name=name, tls_certificate=common_pb2.TlsCertificate(
        certificate_chain=base_pb2.DataSource(inline_bytes=_bytes(cert_chain_pem)),
        private_key=base_pb2.DataSource(inline_bytes=_bytes(key_pem))))


def root_secret(bundle_pem: str | bytes, name: str = ROOT_SECRET) -> secret_pb2.Secret:
    """The trust bundle secret: every root the mesh trusts now, as one PEM."""
    return secret_pb2.Secret(name=name, validation_context=common_pb2.CertificateValidationContext(
        trusted_ca=base_pb2.DataSource(inline_bytes=_bytes(bundle_pem))))


class SdsServer(NoHooks):
    """Envoy's SDS on `unix:<socket_path>`, serving CERT_SECRET and ROOT_SECRET.

    Call `update` before starting Envoy: Envoy holds a listener or cluster
    that needs a secret back until it arrives (up to its initial fetch
    timeout, 15 s by default), and the xDS cluster of a TLS bootstrap needs
    ROOT_SECRET before Envoy can reach the control plane at all.
    """

    def __init__(self, socket_path: str | os.PathLike[str]) -> None:
        path = Path(os.fspath(socket_path)).absolute()
        if len(os.fsencode(path)) > _MAX_SOCKET_PATH:
            raise ValueError(f"SDS socket path {path} is longer than {_MAX_SOCKET_PATH} bytes "
                             "(the Unix socket limit); use a shorter workdir")
        self.path = path
        self.cache = SnapshotCache()
        self._snapshot: Snapshot | None = None
        self._nodes: set[str] = set()
        self._server = XdsServer(self.cache, self, services=(SDS_SERVICE,),
                                 max_in_flight=4, write_timeout=10.0, max_streams=64)

    @property
    def address(self) -> str:
        """The gRPC address, `unix:<absolute path>`."""
        return f"{UNIX_PREFIX}{self.path}"

    @property
    def ready(self) -> bool:
        """True once `update` gave it something to serve."""
        return self._snapshot is not None

    async def start(self) -> None:
        """Listen on the socket (0600). A stale socket of a dead agent is replaced."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        await self._server.start(self.address)

    async def stop(self, grace: float = 1.0) -> None:
        """Stop serving and remove the socket file."""
        await self._server.stop(grace)
        try:
            if self.path.is_socket():
                self.path.unlink()
        except OSError as exc:  # not ours to fail shutdown over
            log.debug("could not remove %s: %s", self.path, exc)

    def update(self, cert_chain_pem: str | bytes, key_pem: str | bytes,
               bundle_pem: str | bytes) -> None:
        """Serve this certificate chain, key and trust bundle from now on.

        Streams of every node see the change at once; a secret whose bytes
        did not change is not resent on delta streams (versions are content
        hashes), so pushing an unchanged bundle along with a new certificate
        costs nothing.
        """
        resources = {
            CERT_SECRET: XdsResource.from_message(SECRET, CERT_SECRET,
                                                  cert_secret(cert_chain_pem, key_pem)),
            ROOT_SECRET: XdsResource.from_message(SECRET, ROOT_SECRET, root_secret(bundle_pem)),
        }
        self._snapshot = Snapshot.build({SECRET: resources})
        for node_id in self._nodes:
            self.cache.set(node_id, self._snapshot)

    def secrets(self) -> Mapping[str, XdsResource]:
        """What is served now, by secret name (empty before the first `update`)."""
        return self._snapshot.of(SECRET) if self._snapshot is not None else {}

    # -- XdsHooks (SDS admits any stream: its socket is 0600) --------------------------

    async def proxy_connected(self, node_id: str, node: NodeInfo) -> None:
        if node_id not in self._nodes:
            self._nodes.add(node_id)
            log.info("Envoy %s connected to SDS at %s", node_id, self.path)
        if self._snapshot is not None:
            self.cache.set(node_id, self._snapshot)

    async def proxy_disconnected(self, node_id: str) -> None:
        pass
