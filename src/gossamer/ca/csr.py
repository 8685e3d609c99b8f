"""What the CA accepts in a workload's CSR, checked before anything is signed.

The CSR must be signed by the key it carries, that key must be one every TLS stack
in the mesh verifies and strong enough, and its only name must be the SPIFFE ID the
caller is entitled to: a refusal says which of these failed (`CsrRejected`), or
that it asks for someone else's identity (`IdentityMismatch`).
"""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gossamer.ca.errors import CsrRejected, IdentityMismatch
from gossamer.contract.spiffe import BadSpiffeId, SpiffeId

ACCEPTED_CURVES = ("secp256r1", "secp384r1")
MIN_RSA_BITS = 2048


def checked_key(csr_pem: bytes | str, identity: SpiffeId) -> Any:
    """The public key of a CSR that asks for exactly `identity`; else CsrRejected."""
    csr = _parse_csr(csr_pem)
    try:
        public_key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CsrRejected(f"the CSR's public key is not usable: {exc}") from None
    _check_public_key(public_key)
    _check_csr_names(csr, identity)
    return public_key


def _parse_csr(csr_pem: bytes | str) -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_pem_x509_csr(
            csr_pem.encode("ascii", "replace") if isinstance(csr_pem, str) else csr_pem)
    except ValueError as exc:
        raise CsrRejected(f"not a PEM certificate signing request: {exc}") from None
    try:
        valid = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CsrRejected(f"the CSR signature cannot be checked: {exc}") from None
    if not valid:
        raise CsrRejected("the CSR signature is invalid (not signed by the key it carries)")
    return csr


def _check_public_key(key: Any) -> None:
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ACCEPTED_CURVES:
            raise CsrRejected(f"EC curve {key.curve.name} is not accepted; use P-256 or P-384")
        return
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise CsrRejected(f"RSA key of {key.key_size} bits is too weak; "
                              f"at least {MIN_RSA_BITS} are required")
        return
    raise CsrRejected(f"key type {type(key).__name__} is not accepted; "
                      "use ECDSA P-256/P-384 or RSA >= 2048")


def _describe(name: x509.GeneralName) -> str:
    kinds = {
        x509.DNSName: "DNS name", x509.IPAddress: "IP address", x509.RFC822Name: "email",
        x509.DirectoryName: "directory name", x509.RegisteredID: "registered ID",
        x509.OtherName: "other name", x509.UniformResourceIdentifier: "URI",
    }
    return f"{kinds.get(type(name), type(name).__name__)} {str(name.value)!r}"


def _check_csr_names(csr: x509.CertificateSigningRequest, identity: SpiffeId) -> None:
    try:
        sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CsrRejected(f"the CSR has no SAN; it must carry the URI SAN {identity}") from None
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise CsrRejected(f"the CSR extensions do not parse: {exc}") from None
    others = [n for n in sans if not isinstance(n, x509.UniformResourceIdentifier)]
    if others:
        raise CsrRejected("the CSR may name only its SPIFFE ID, but it also asks for "
                          + ", ".join(_describe(n) for n in others))
    uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise CsrRejected("the CSR must carry exactly one URI SAN (its SPIFFE ID), "
                          f"not {len(uris)}")
    try:
        asked = SpiffeId.parse(uris[0])
    except BadSpiffeId as exc:
        raise CsrRejected(f"the CSR's URI SAN is not a workload SPIFFE ID: {exc}") from None
    if asked != identity or uris[0] != str(identity):
        raise IdentityMismatch(f"the CSR asks for {uris[0]}, but the caller may only "
                               f"obtain {identity}")
