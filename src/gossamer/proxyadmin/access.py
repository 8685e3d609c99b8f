"""The control plane's side of the sidecar admin listeners: which target to dial for a
proxy, and the TLS that gets it in.

Trust, both ways: the sidecar's `gossamer_admin` accepts only a client certificate
naming the control plane's SPIFFE ID (`identity.control_plane_id`), which the mesh CA
issues to the control plane alone (`MeshCA.control_plane_client_cert`); the control
plane accepts only a server certificate naming the workload's own SPIFFE ID, the
identity its xDS stream was admitted for (namespace and service account of its node
metadata, checked against its join token), chained to the mesh's trust bundle.

The `ssl.SSLContext` is built once per (client certificate, trust bundle) and rebuilt
when the CA renewed the certificate or the bundle changed (root rotation), so every
scrape round reuses one context.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gossamer.ca.pemfile import in_memory
from gossamer.contract.spiffe import SpiffeId
from gossamer.envoy.admin import PeerTls
from gossamer.proxyadmin.target import AdminTarget, loopback_admin, tls_admin

if TYPE_CHECKING:
    from gossamer.ca.authority import MeshCA

log = logging.getLogger(__name__)


def workload_id(meta: Mapping[str, Any], trust_domain: str) -> SpiffeId:
    """The identity a sidecar's certificate names: its namespace and service account."""
    account = meta.get("service_account") or meta.get("service") or ""
    return SpiffeId(trust_domain, str(meta.get("namespace") or "default"), str(account))


class SidecarAdmin:
    """Resolves proxies' node metadata to admin targets. Without a CA (a control plane
    with security off) only loopback admins can be reached."""

    def __init__(self, ca: MeshCA | None = None) -> None:
        self.ca = ca
        self._context: ssl.SSLContext | None = None
        self._made_from: tuple[bytes, str] | None = None

    def target(self, meta: Mapping[str, Any]) -> AdminTarget | None:
        """mTLS to `gossamer_admin` when the sidecar serves it, else its loopback admin;
        None when neither is known (or the mTLS listener without a CA to reach it)."""
        remote = tls_admin(meta)
        if remote is not None:
            if self.ca is None:
                return None
            return AdminTarget(*remote, PeerTls(self.context(),
                                                str(workload_id(meta, self.ca.trust_domain))))
        local = loopback_admin(meta)
        return AdminTarget(*local) if local is not None else None

    def context(self) -> ssl.SSLContext:
        """The client context: the control plane's certificate, the mesh's bundle."""
        assert self.ca is not None
        chain, key = self.ca.control_plane_client_cert()
        bundle = self.ca.bundle_pem()
        if self._context is None or self._made_from != (chain, bundle):
            self._context = client_context(chain, key, bundle)
            self._made_from = (chain, bundle)
        return self._context


def client_context(chain: bytes, key: bytes, bundle_pem: str) -> ssl.SSLContext:
    """TLS 1.3, our certificate, the peer's chain verified against `bundle_pem`. No host
    name check: sidecars' certificates name SPIFFE IDs, which `envoyadmin` checks."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=bundle_pem)
    with in_memory(chain) as chain_path, in_memory(key) as key_path:
        context.load_cert_chain(chain_path, key_path)
    return context
