"""Mesh-wide translation inputs that are not resources: trust domain, mTLS on or off."""

from __future__ import annotations

from dataclasses import dataclass

from gossamer.contract.spiffe import DEFAULT_TRUST_DOMAIN, check_trust_domain

# Debian/Ubuntu's bundle of public roots; Envoy checks https JWKS servers against it.
SYSTEM_CA_FILE = "/etc/ssl/certs/ca-certificates.crt"


@dataclass(frozen=True)
class MeshSettings:
    """How the control plane translates: the same for every proxy of the mesh.

    `mtls=False` makes every sidecar-to-sidecar hop plaintext and ignores
    PeerAuthentication (for Envoys started without the agent's SDS server);
    authorization policies still apply, but no caller has a proven identity,
    so rules on principals or namespaces never match.
    """

    trust_domain: str = DEFAULT_TRUST_DOMAIN
    mtls: bool = True
    # The CA bundle, on the proxy's host, for https jwksUri servers; None skips
    # verifying them (tests only: a forged key set would then be accepted).
    jwks_ca_file: str | None = SYSTEM_CA_FILE

    def __post_init__(self) -> None:
        check_trust_domain(self.trust_domain)
