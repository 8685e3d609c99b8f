"""The pure issuer: keys, CAs, and signing workload certificates.

Nothing here does I/O or reads the clock: the time is always passed in as
`now`, so every decision (validity windows, expiry caps, chain checks) is a
function of its arguments and is tested without sleeping or patching. What a
CSR may ask for is checked in `ca/csr.py`, the control plane's serving
certificate is `ca/servercert.py`; the store-backed edge is `ca/authority.py`,
the rotation decisions are `ca/rotation.py`.

Vocabulary:
- A *CA* (`CaKeyPair`) is a certificate that may sign, its private key, and
  the certificates above it up to and including the self-signed root
  (`chain`; empty when the CA is itself the root). The built-in CA is a root;
  a plug-in CA is normally an intermediate under the organisation's root.
- A *workload certificate* is an X.509-SVID: its only SAN is the URI SAN of
  its SPIFFE ID. The workload generates its key and sends a CSR; the key never
  comes here.

Every refusal raises `CaError` (or a subclass), the CA edge's one exception
type, with a message meant for the operator or the caller.
"""

from __future__ import annotations

import contextlib
import itertools
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gossamer.ca.csr import MIN_RSA_BITS, checked_key
from gossamer.ca.errors import CaError
from gossamer.contract.spiffe import SpiffeId, check_trust_domain

# Keys a CA may sign with. Ed25519/Ed448 are left out: not every TLS stack
# in the mesh (Envoy's BoringSSL builds, older clients) verifies them in chains.
CaPrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

ORGANIZATION = "Gossamer"
# Leaves start this far in the past, so a peer whose clock is a little behind
# does not reject a certificate that was issued "in its future".
CLOCK_SKEW = timedelta(seconds=60)
# CAs are long-lived; starting them an hour early costs nothing and covers
# hosts whose clocks are further off than a leaf's skew allowance.
CA_BACKDATE = timedelta(hours=1)
DEFAULT_ROOT_VALIDITY = timedelta(days=3650)
# A plug-in chain longer than this is a mistake (or a loop), not a PKI.
_MAX_CHAIN = 8


@dataclass(frozen=True)
class CaKeyPair:
    """A CA certificate, its private key, and the issuers above it.

    `chain` holds the certificates from this CA's issuer up to and including
    the self-signed root; it is empty when `cert` is itself the root. The key
    is excluded from repr, str and equality, so logging a CaKeyPair (or a
    RootState holding it) can never leak it; `key_pem()` exists only to persist
    it into the store.
    """

    cert: x509.Certificate
    key: CaPrivateKey = field(repr=False, compare=False)
    chain: tuple[x509.Certificate, ...] = ()

    def __repr__(self) -> str:
        return (f"CaKeyPair(subject={self.cert.subject.rfc4514_string()!r}, "
                f"fingerprint={self.fingerprint()[:16]!r}, chain={len(self.chain)})")

    __str__ = __repr__

    @property
    def is_root(self) -> bool:
        return not self.chain

    @property
    def root(self) -> x509.Certificate:
        """The self-signed certificate this CA chains to (itself for a root)."""
        return self.chain[-1] if self.chain else self.cert

    @property
    def intermediates(self) -> tuple[x509.Certificate, ...]:
        """Certificates a leaf must send after itself: this CA and those above it,
        without the root (which every verifier has in its trust bundle)."""
        if not self.chain:
            return ()
        return (self.cert, *self.chain[:-1])

    @property
    def not_after(self) -> datetime:
        """When the first certificate of the path to the root expires: nothing
        this CA issues can outlive it and still verify."""
        return min(c.not_valid_after_utc for c in (self.cert, *self.chain))

    def fingerprint(self) -> str:
        """SHA-256 of the CA certificate's DER, hex."""
        return self.cert.fingerprint(hashes.SHA256()).hex()

    def cert_pem(self) -> str:
        return pem_of(self.cert)

    def chain_pem(self) -> str:
        return "".join(pem_of(c) for c in self.chain)

    def root_pem(self) -> str:
        return pem_of(self.root)

    def key_pem(self) -> str:
        """PKCS#8, unencrypted: for persistence in the store only, never for logs or APIs."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")


@dataclass(frozen=True)
class IssuedCert:
    """A signed workload certificate. `chain_pem` is the leaf followed by the
    intermediates up to (not including) the root: what the workload presents."""

    cert: x509.Certificate
    chain_pem: str
    serial: str
    not_before: datetime
    not_after: datetime
    spiffe_id: SpiffeId

    @property
    def cert_pem(self) -> str:
        return pem_of(self.cert)


# --- keys and CSRs ---------------------------------------------------------------


def generate_workload_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 key: small, fast, and accepted by every TLS stack."""
    return ec.generate_private_key(ec.SECP256R1())


def make_csr(key: CaPrivateKey, spiffe_id: SpiffeId) -> bytes:
    """A PEM CSR whose only SAN is the URI SAN of `spiffe_id` (what the CA requires)."""
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(spiffe_id))]),
            critical=False,
        )
    )
    return builder.sign(key, hash_for(key)).public_bytes(serialization.Encoding.PEM)


# --- CAs -----------------------------------------------------------------------------


def generate_root(
    trust_domain: str, now: datetime, validity: timedelta = DEFAULT_ROOT_VALIDITY
) -> CaKeyPair:
    """A new self-signed ECDSA P-256 root for `trust_domain`.

    It carries the URI SAN `spiffe://<trust-domain>`, as the SPIFFE X.509-SVID
    spec recommends for signing certificates, so a bundle's roots say which
    trust domain they belong to.
    """
    check_trust_domain(trust_domain)
    if validity <= timedelta(0):
        raise CaError("root validity must be positive")
    now = as_utc(now)
    key = ec.generate_private_key(ec.SECP256R1())
    # CN is limited to 64 characters (RFC 5280 ub-common-name); the SAN keeps the full name.
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        x509.NameAttribute(NameOID.COMMON_NAME, f"Gossamer root CA {trust_domain}"[:64]),
    ])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(now - CA_BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                       critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return CaKeyPair(cert, key, ())


def load_keypair(cert_pem: str | bytes, key_pem: str | bytes, chain_pem: str | bytes = b""
                 ) -> CaKeyPair:
    """Rebuild a CaKeyPair persisted by us (no validity-time checks: an expired
    CA must still load, so the operator sees why signing fails)."""
    cert = _one_cert(cert_pem, "CA certificate")
    key = _load_key(key_pem)
    _check_key_matches(cert, key)
    chain = tuple(_certs(chain_pem, "CA chain")) if _text(chain_pem).strip() else ()
    return CaKeyPair(cert, key, chain)


def load_plugin(
    cert_pem: str | bytes,
    key_pem: str | bytes,
    chain_pem: str | bytes,
    now: datetime,
    *,
    trust_domain: str | None = None,
) -> CaKeyPair:
    """Validate an operator-provided ("plug-in") CA so the mesh chains to the
    organisation's PKI.

    `chain_pem` holds the certificates above the CA, up to and including the
    organisation's self-signed root; it may start with the CA certificate
    itself (as Istio's cert-chain.pem does), and may be empty only when the
    CA is itself a self-signed root. Each failure raises CaError naming it.
    """
    now = as_utc(now)
    try:
        cert = _one_cert(cert_pem, "plug-in CA certificate")
    except CaError as exc:
        raise CaError(f"plug-in CA certificate does not parse: {exc}") from None
    subject = subject_of(cert)
    if not _is_ca(cert):
        raise CaError(f"plug-in certificate {subject} is not a CA "
                      "(BasicConstraints ca=true is missing)")
    if not _may_sign_certs(cert):
        raise CaError(f"plug-in certificate {subject} may not sign certificates "
                      "(its KeyUsage lacks keyCertSign)")
    try:
        key = _load_key(key_pem)
    except CaError as exc:
        raise CaError(f"plug-in CA key: {exc}") from None
    try:
        _check_key_matches(cert, key)
    except CaError:
        raise CaError(f"plug-in key does not match the public key of {subject}") from None
    chain = list(_certs(chain_pem, "plug-in chain")) if _text(chain_pem).strip() else []
    while chain and chain[0] == cert:
        chain.pop(0)
    if len(chain) > _MAX_CHAIN:
        raise CaError(f"plug-in chain has {len(chain)} certificates; at most {_MAX_CHAIN}")
    path = [cert, *chain]
    for depth, (child, parent) in enumerate(itertools.pairwise(path)):
        if not _is_ca(parent):
            raise CaError(f"plug-in chain is broken: {subject_of(parent)} is not a CA")
        if not issued_by(child, parent):
            raise CaError(f"plug-in chain is broken: {subject_of(child)} is not signed by "
                          f"{subject_of(parent)} (wrong order, or a certificate is missing)")
        _check_path_length(parent, depth)
    top = path[-1]
    if not issued_by(top, top):
        raise CaError(f"plug-in chain does not end at a self-signed root: the last "
                      f"certificate, {subject_of(top)}, is issued by {top.issuer.rfc4514_string()}")
    for c in path:
        if now >= c.not_valid_after_utc:
            raise CaError(f"plug-in chain certificate {subject_of(c)} expired at "
                          f"{c.not_valid_after_utc.isoformat()}")
        if now < c.not_valid_before_utc:
            raise CaError(f"plug-in chain certificate {subject_of(c)} is not valid until "
                          f"{c.not_valid_before_utc.isoformat()}")
    if trust_domain is not None:
        for uri in _uri_sans(cert):
            if uri.startswith("spiffe://") and uri.rstrip("/") != f"spiffe://{trust_domain}":
                raise CaError(f"plug-in certificate {subject} is for {uri}, "
                              f"not trust domain {trust_domain}")
    return CaKeyPair(cert, key, tuple(chain))


# --- issuing -------------------------------------------------------------------------


def sign_workload_csr(
    ca: CaKeyPair,
    csr_pem: bytes | str,
    identity: SpiffeId,
    now: datetime,
    ttl: timedelta,
    max_ttl: timedelta,
) -> IssuedCert:
    """Sign `csr_pem` for exactly `identity`, or raise CsrRejected saying why.

    Only the CSR's public key and SAN are used: its subject and any other
    extension it asks for (CA=true, other key usages) are ignored, because the
    CA decides what a workload certificate is. The lifetime is the asked ttl,
    capped by max_ttl and by the expiry of the CA's path to the root.
    """
    now = as_utc(now)
    if ttl <= timedelta(0) or max_ttl <= timedelta(0):
        raise CaError("certificate lifetimes must be positive")
    public_key = checked_key(csr_pem, identity)
    not_before = now - CLOCK_SKEW
    not_after = min(now + min(ttl, max_ttl), ca.not_after)
    if not_after <= now:
        raise CaError(f"the signing CA {subject_of(ca.cert)} has expired "
                      f"({ca.not_after.isoformat()}); rotate or replace it")
    leaf = leaf_builder(ca, public_key, not_before, not_after)
    leaf = (
        leaf.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(identity))]),
            critical=False,
        )
        .add_extension(leaf_key_usage(), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                   ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
    )
    cert = leaf.sign(ca.key, hash_for(ca.key))
    return IssuedCert(
        cert=cert,
        chain_pem=pem_of(cert) + "".join(pem_of(c) for c in ca.intermediates),
        serial=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        spiffe_id=identity,
    )


def cert_info(pem: str | bytes) -> dict[str, Any]:
    """JSON-ready facts about the first certificate in `pem`, for the CLI."""
    cert = _certs(pem, "certificate")[0]
    names: list[x509.GeneralName] = []
    with contextlib.suppress(x509.ExtensionNotFound):  # none: no names (not an empty SAN,
        names = list(cert.extensions.get_extension_for_class(  # which cryptography refuses)
            x509.SubjectAlternativeName).value)
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "uri_sans": [n.value for n in names if isinstance(n, x509.UniformResourceIdentifier)],
        "dns_sans": [n.value for n in names if isinstance(n, x509.DNSName)],
        "ip_sans": [str(n.value) for n in names if isinstance(n, x509.IPAddress)],
        "is_ca": _is_ca(cert),
        "fingerprint_sha256": cert.fingerprint(hashes.SHA256()).hex(),
    }


def certs_pem(certs: Iterable[x509.Certificate]) -> str:
    """PEM concatenation of `certs`, in order."""
    return "".join(pem_of(c) for c in certs)


# --- helpers -------------------------------------------------------------------------


def as_utc(now: datetime) -> datetime:
    """Naive datetimes are taken as UTC (cryptography's own convention)."""
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def _serial() -> int:
    """A random positive 128-bit serial (RFC 5280 allows up to 20 octets)."""
    while True:
        serial = secrets.randbits(128)
        if serial:
            return serial


def pem_of(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _text(data: str | bytes) -> str:
    return data.decode("ascii", "replace") if isinstance(data, bytes) else data


def _bytes(data: str | bytes) -> bytes:
    return data.encode("ascii", "replace") if isinstance(data, str) else data


def subject_of(cert: x509.Certificate) -> str:
    return repr(cert.subject.rfc4514_string() or "<empty subject>")


def _certs(pem: str | bytes, what: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(_bytes(pem))
    except ValueError as exc:
        raise CaError(f"{what} is not PEM X.509: {exc}") from None
    if not certs:
        raise CaError(f"{what} holds no certificate")
    return certs


def _one_cert(pem: str | bytes, what: str) -> x509.Certificate:
    certs = _certs(pem, what)
    if len(certs) != 1:
        raise CaError(f"{what} must hold exactly one certificate, not {len(certs)} "
                      "(put the issuers in the chain)")
    return certs[0]


def _load_key(pem: str | bytes) -> CaPrivateKey:
    try:
        key = serialization.load_pem_private_key(_bytes(pem), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CaError(f"not an unencrypted PEM private key ({exc})") from None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise CaError(f"an RSA CA key needs at least {MIN_RSA_BITS} bits, not {key.key_size}")
        return key
    raise CaError(f"unsupported CA key type {type(key).__name__}: use ECDSA or RSA")


def _public_der(key: Any) -> bytes:
    der: bytes = key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return der


def _check_key_matches(cert: x509.Certificate, key: CaPrivateKey) -> None:
    if _public_der(cert.public_key()) != _public_der(key.public_key()):
        raise CaError(f"the key does not match the public key of {subject_of(cert)}")


def _basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def _is_ca(cert: x509.Certificate) -> bool:
    bc = _basic_constraints(cert)
    return bc is not None and bc.ca


def _may_sign_certs(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    except x509.ExtensionNotFound:
        return True  # no KeyUsage: unrestricted (RFC 5280 4.2.1.3)


def _check_path_length(parent: x509.Certificate, depth: int) -> None:
    """`parent` sits above `depth + 1` CA certificates (the plug-in CA and any
    intermediates between), all of which count toward its pathLenConstraint in
    the path of a leaf the plug-in CA signs; such leaves must still verify."""
    bc = _basic_constraints(parent)
    if bc is not None and bc.path_length is not None and bc.path_length < depth + 1:
        raise CaError(f"plug-in chain is broken: {subject_of(parent)} allows "
                      f"{bc.path_length} intermediate CA(s) below it, the chain has {depth + 1}")


def issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    """Does `parent`'s key sign `child` (signature only, no validity or names)?"""
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _uri_sans(cert: x509.Certificate) -> list[str]:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return sans.get_values_for_type(x509.UniformResourceIdentifier)


def leaf_key_usage() -> x509.KeyUsage:
    """Workload and serving certificates alike: TLS with ECDHE or RSA key exchange."""
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=True,
        data_encipherment=False, key_agreement=False, key_cert_sign=False,
        crl_sign=False, encipher_only=False, decipher_only=False,
    )


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )


def hash_for(key: Any) -> hashes.SHA256 | hashes.SHA384:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


def leaf_builder(
    ca: CaKeyPair,
    public_key: Any,
    not_before: datetime,
    not_after: datetime,
    subject: x509.Name | None = None,
) -> x509.CertificateBuilder:
    """What every leaf shares: names, serial, validity, CA=false, key identifiers.

    The subject is O=Gossamer rather than empty: an empty subject would require
    a critical SAN (RFC 5280 4.2.1.6), and the SAN is kept non-critical."""
    try:
        ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(subject or x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)]))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(aki, critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
