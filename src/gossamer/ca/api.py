"""The CA's gRPC contract: JSON bodies over gRPC, on the control plane's TLS
xDS port, so agents reach CA and xDS at one verified address.

Every call carries gRPC metadata `authorization: Bearer <token>`. A join token
is bound to one identity (namespace, service account); the CA signs a CSR only
for exactly that identity.

Status codes: UNAUTHENTICATED (missing or unknown token), PERMISSION_DENIED
(the CSR asks for an identity the token does not grant), INVALID_ARGUMENT (a
malformed CSR or request).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

SERVICE = "gossamer.ca.v1.CertificateService"
CREATE_CERTIFICATE = f"/{SERVICE}/CreateCertificate"
GET_TRUST_BUNDLE = f"/{SERVICE}/GetTrustBundle"


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def encode(self) -> bytes:
        return self.model_dump_json().encode()


class CertificateRequest(_Msg):
    # PEM CSR whose only SAN is the URI SAN of the SPIFFE ID asked for.
    csr_pem: str = Field(max_length=16384)
    # The workload asking, for the record (`gossamer identity`).
    workload: str = Field(default="", max_length=253)
    # Asked lifetime; the CA caps it at its configured maximum.
    # Down to 10 s, so rotation can be exercised quickly; the CA caps it above.
    ttl_seconds: int | None = Field(default=None, ge=10, le=90 * 86400)


class CertificateResponse(_Msg):
    # Leaf first, then any intermediates; never the root, never a key.
    cert_chain_pem: str
    # Every root the mesh trusts now (two during a root rotation).
    trust_bundle_pem: str
    bundle_version: str
    spiffe_id: str
    serial: str          # hex
    not_before: float    # unix seconds
    not_after: float


class TrustBundleRequest(_Msg):
    pass


class TrustBundleResponse(_Msg):
    trust_bundle_pem: str
    bundle_version: str
