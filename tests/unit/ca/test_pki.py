"""The pure issuer: root shape, CSR checks, leaf contents, plug-in validation.

Chains are checked with cryptography's RFC 5280 path validation
(`x509.verification`) and, for what Envoy-like TLS stacks accept, with a real
mutual-TLS handshake through OpenSSL (stdlib `ssl`) in X509_STRICT mode.
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from gossamer.ca import pki, servercert
from gossamer.ca.errors import CaError, CsrRejected, IdentityMismatch
from gossamer.ca.pki import CaKeyPair
from gossamer.contract.spiffe import SpiffeId

NOW = datetime(2030, 5, 1, 12, 0, 0, tzinfo=UTC)
TD = "example.org"
WEB = SpiffeId(TD, "default", "web")
DAY = timedelta(hours=24)
WEEK = timedelta(days=7)


@pytest.fixture(scope="module")
def root() -> CaKeyPair:
    return pki.generate_root(TD, NOW)


def pem_certs(text: str | bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(text.encode() if isinstance(text, str) else text)


def ext(cert: x509.Certificate,
        cls: type[x509.ExtensionType]) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_class(cls)


def verify_client(chain_pem: str | bytes, roots: list[x509.Certificate],
                  at: datetime = NOW) -> list[x509.GeneralName]:
    certs = pem_certs(chain_pem)
    verifier = PolicyBuilder().store(Store(roots)).time(at).build_client_verifier()
    return list(verifier.verify(certs[0], certs[1:]).subjects or [])


def sign(ca: CaKeyPair, csr: bytes, identity: SpiffeId = WEB, ttl: timedelta = DAY,
         max_ttl: timedelta = WEEK) -> pki.IssuedCert:
    return pki.sign_workload_csr(ca, csr, identity, NOW, ttl, max_ttl)


def custom_csr(key: pki.CaPrivateKey | ed25519.Ed25519PrivateKey,
               names: list[x509.GeneralName] | None) -> bytes:
    """`names=[]` writes a SAN extension holding an empty sequence (DER 30 00), which
    cryptography refuses to build as a SubjectAlternativeName but a hostile client can
    send all the same."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if names == []:
        empty = x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x30\x00")
        builder = builder.add_extension(empty, critical=False)
    elif names is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)


# --- the built-in root ------------------------------------------------------------------


def test_root_is_a_p256_self_signed_spiffe_ca(root: CaKeyPair) -> None:
    cert = root.cert
    assert isinstance(root.key, ec.EllipticCurvePrivateKey)
    assert root.key.curve.name == "secp256r1"
    assert root.chain == ()
    assert root.is_root
    cert.verify_directly_issued_by(cert)
    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical
    assert bc.value == x509.BasicConstraints(ca=True, path_length=None)
    ku = ext(cert, x509.KeyUsage)
    assert ku.critical
    assert isinstance(ku.value, x509.KeyUsage)
    assert ku.value.key_cert_sign
    assert ku.value.crl_sign
    assert not ku.value.digital_signature
    ski = ext(cert, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(root.key.public_key())
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Gossamer"
    assert (cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
            == f"Gossamer root CA {TD}")
    san = ext(cert, x509.SubjectAlternativeName).value
    assert isinstance(san, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"spiffe://{TD}"]
    assert cert.not_valid_after_utc == NOW + timedelta(days=3650)
    assert cert.not_valid_before_utc <= NOW
    assert root.root_pem() == root.cert_pem()


def test_root_validity_is_configurable_and_trust_domain_checked() -> None:
    short = pki.generate_root(TD, NOW, timedelta(days=30))
    assert short.cert.not_valid_after_utc == NOW + timedelta(days=30)
    with pytest.raises(ValueError, match="trust domain"):
        pki.generate_root("Not A Domain", NOW)


def test_the_private_key_never_shows_in_repr_or_str(root: CaKeyPair) -> None:
    key_body = root.key_pem().splitlines()[1]
    for text in (repr(root), str(root), repr([root]), f"{root}"):
        assert "PRIVATE" not in text
        assert key_body not in text
        assert "key" not in text.lower().replace("keypair", "")


def test_key_pem_round_trips_through_load_keypair(root: CaKeyPair) -> None:
    assert root.key_pem().startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8, unencrypted
    again = pki.load_keypair(root.cert_pem(), root.key_pem(), root.chain_pem())
    assert again == root
    assert again.fingerprint() == root.fingerprint()
    other = pki.generate_root(TD, NOW)
    with pytest.raises(CaError, match="does not match"):
        pki.load_keypair(root.cert_pem(), other.key_pem())


# --- signing workload CSRs -----------------------------------------------------------


def test_signed_leaf_is_an_x509_svid_that_verifies_against_the_root(root: CaKeyPair) -> None:
    key = pki.generate_workload_key()
    assert key.curve.name == "secp256r1"
    issued = sign(root, pki.make_csr(key, WEB))
    leaf = issued.cert
    assert pem_certs(issued.chain_pem) == [leaf]  # built-in root: no intermediates
    assert verify_client(issued.chain_pem, [root.cert]) == [
        x509.UniformResourceIdentifier(str(WEB))]

    assert leaf.public_key() == key.public_key()
    assert leaf.issuer == root.cert.subject
    assert leaf.subject == x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Gossamer")])
    san = ext(leaf, x509.SubjectAlternativeName)
    assert not san.critical
    assert list(san.value) == [x509.UniformResourceIdentifier(str(WEB))]  # type: ignore[call-overload]
    ku = ext(leaf, x509.KeyUsage)
    assert ku.critical
    assert isinstance(ku.value, x509.KeyUsage)
    assert ku.value.digital_signature
    assert ku.value.key_encipherment
    assert not ku.value.key_cert_sign
    eku = ext(leaf, x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH,  # type: ignore[call-overload]
                         ExtendedKeyUsageOID.CLIENT_AUTH]
    assert ext(leaf, x509.BasicConstraints).value == x509.BasicConstraints(ca=False,
                                                                           path_length=None)
    aki = ext(leaf, x509.AuthorityKeyIdentifier).value
    assert isinstance(aki, x509.AuthorityKeyIdentifier)
    assert aki.key_identifier == ext(root.cert, x509.SubjectKeyIdentifier).value.digest  # type: ignore[attr-defined]

    assert leaf.not_valid_before_utc == NOW - timedelta(seconds=60)
    assert leaf.not_valid_after_utc == NOW + DAY
    assert (issued.not_before, issued.not_after) == (leaf.not_valid_before_utc,
                                                     leaf.not_valid_after_utc)
    assert issued.serial == format(leaf.serial_number, "x")
    assert 0 < leaf.serial_number < 2**128
    assert issued.spiffe_id == WEB
    # The leaf does not outlive its validity, and is not valid before it.
    with pytest.raises(x509.verification.VerificationError):
        verify_client(issued.chain_pem, [root.cert], at=NOW + DAY + timedelta(seconds=1))


def test_serials_are_random(root: CaKeyPair) -> None:
    csr = pki.make_csr(pki.generate_workload_key(), WEB)
    serials = {sign(root, csr).serial for _ in range(20)}
    assert len(serials) == 20


def test_csr_for_another_identity_is_an_identity_mismatch(root: CaKeyPair) -> None:
    key = pki.generate_workload_key()
    for other in (SpiffeId(TD, "default", "db"), SpiffeId(TD, "prod", "web"),
                  SpiffeId("evil.org", "default", "web")):
        with pytest.raises(IdentityMismatch, match=r"asks for .* only obtain"):
            sign(root, pki.make_csr(key, other))


@pytest.mark.parametrize(("names", "reason"), [
    ([x509.UniformResourceIdentifier(str(WEB)), x509.DNSName("web.example.org")],
     "also asks for DNS name 'web.example.org'"),
    ([x509.UniformResourceIdentifier(str(WEB)),
      x509.UniformResourceIdentifier("spiffe://example.org/ns/default/sa/db")],
     "exactly one URI SAN"),
    ([x509.DNSName("web")], "also asks for DNS name"),
    ([], "do not parse"),
    (None, "has no SAN"),
    ([x509.UniformResourceIdentifier("https://example.org/web")], "not a workload SPIFFE ID"),
])
def test_csr_with_other_names_is_rejected(root: CaKeyPair, names: list[x509.GeneralName] | None,
                                          reason: str) -> None:
    csr = custom_csr(pki.generate_workload_key(), names)
    with pytest.raises(CsrRejected, match=reason) as info:
        sign(root, csr)
    assert not isinstance(info.value, IdentityMismatch)


def test_tampered_csr_signature_is_rejected(root: CaKeyPair) -> None:
    csr = x509.load_pem_x509_csr(pki.make_csr(pki.generate_workload_key(), WEB))
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the last byte belongs to the signature's s value
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CsrRejected, match="signature is invalid"):
        sign(root, tampered)


@pytest.mark.parametrize("garbage", [b"", b"hello", b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
                                                    b"-----END CERTIFICATE REQUEST-----\n"])
def test_garbage_is_rejected(root: CaKeyPair, garbage: bytes) -> None:
    with pytest.raises(CsrRejected, match="not a PEM certificate signing request"):
        sign(root, garbage)


def test_weak_or_unusual_keys_are_rejected(root: CaKeyPair) -> None:
    rsa1024 = rsa.generate_private_key(65537, 1024)
    with pytest.raises(CsrRejected, match="1024 bits is too weak"):
        sign(root, pki.make_csr(rsa1024, WEB))
    p521 = ec.generate_private_key(ec.SECP521R1())
    with pytest.raises(CsrRejected, match="secp521r1 is not accepted"):
        sign(root, pki.make_csr(p521, WEB))
    edkey = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(CsrRejected, match="is not accepted"):
        sign(root, custom_csr(edkey, [x509.UniformResourceIdentifier(str(WEB))]))


def test_strong_rsa_and_p384_keys_are_accepted(root: CaKeyPair) -> None:
    for key in (rsa.generate_private_key(65537, 2048), ec.generate_private_key(ec.SECP384R1())):
        issued = sign(root, pki.make_csr(key, WEB))
        verify_client(issued.chain_pem, [root.cert])


def test_csr_subject_and_extensions_are_ignored(root: CaKeyPair) -> None:
    key = pki.generate_workload_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin")]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(WEB))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    )
    leaf = sign(root, csr).cert
    assert ext(leaf, x509.BasicConstraints).value == x509.BasicConstraints(ca=False,
                                                                           path_length=None)
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME) == []


def test_lifetime_is_capped_by_max_ttl_and_ca_expiry(root: CaKeyPair) -> None:
    csr = pki.make_csr(pki.generate_workload_key(), WEB)
    assert sign(root, csr, ttl=timedelta(minutes=5)).not_after == NOW + timedelta(minutes=5)
    assert sign(root, csr, ttl=timedelta(days=30), max_ttl=WEEK).not_after == NOW + WEEK
    short = pki.generate_root(TD, NOW, validity=timedelta(hours=2))
    assert sign(short, csr, ttl=DAY).not_after == NOW + timedelta(hours=2)
    expired = pki.generate_root(TD, NOW - timedelta(days=2), validity=DAY)
    with pytest.raises(CaError, match="has expired"):
        sign(expired, csr)
    with pytest.raises(CaError, match="positive"):
        sign(root, csr, ttl=timedelta(0))


# --- plug-in CAs ---------------------------------------------------------------------


def make_ca(
    name: str,
    issuer: tuple[x509.Certificate, pki.CaPrivateKey] | None,
    *,
    ca: bool | None = True,
    path_length: int | None = None,
    not_before: datetime = NOW - timedelta(days=1),
    not_after: datetime = NOW + timedelta(days=365),
    key_cert_sign: bool = True,
    sans: list[x509.GeneralName] | None = None,
    rsa_key: bool = False,
) -> tuple[x509.Certificate, pki.CaPrivateKey]:
    """An organisation's CA certificate (self-signed when issuer is None)."""
    key: pki.CaPrivateKey = (rsa.generate_private_key(65537, 2048) if rsa_key
                             else ec.generate_private_key(ec.SECP256R1()))
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme"),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_cert, issuer_key = issuer or (None, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer_key.public_key()), critical=False)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign,
            crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=path_length
                                                              if ca else None), critical=True)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()), key


def pem(*certs: x509.Certificate) -> str:
    return pki.certs_pem(certs)


def key_pem(key: pki.CaPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.fixture(scope="module")
def org() -> dict[str, tuple[x509.Certificate, pki.CaPrivateKey]]:
    """Acme's PKI: an RSA root, a policy CA under it, and the mesh's CA under that."""
    root = make_ca("Acme Root", None, rsa_key=True)
    policy = make_ca("Acme Policy CA", root, path_length=1)
    mesh = make_ca("Acme Mesh CA", policy, path_length=0)
    return {"root": root, "policy": policy, "mesh": mesh}


def test_plugin_intermediate_chains_leaves_to_the_org_root(
        org: dict[str, tuple[x509.Certificate, pki.CaPrivateKey]]) -> None:
    mesh, policy, root = org["mesh"], org["policy"], org["root"]
    ca = pki.load_plugin(pem(mesh[0]), key_pem(mesh[1]), pem(policy[0], root[0]), NOW)
    assert ca.cert == mesh[0]
    assert ca.chain == (policy[0], root[0])
    assert ca.root_pem() == pem(root[0])
    assert not ca.is_root
    issued = sign(ca, pki.make_csr(pki.generate_workload_key(), WEB))
    # Leaf, the plug-in CA and the intermediates; never the org root.
    assert pem_certs(issued.chain_pem) == [issued.cert, mesh[0], policy[0]]
    assert verify_client(issued.chain_pem, [root[0]]) == [
        x509.UniformResourceIdentifier(str(WEB))]
    # Istio's cert-chain.pem starts with the CA itself: accepted the same.
    again = pki.load_plugin(pem(mesh[0]), key_pem(mesh[1]), pem(mesh[0], policy[0], root[0]),
                            NOW)
    assert again == ca


def test_plugin_directly_under_the_root_and_plugin_root(
        org: dict[str, tuple[x509.Certificate, pki.CaPrivateKey]]) -> None:
    root = org["root"]
    inter = make_ca("Acme Mesh CA 2", root)
    ca = pki.load_plugin(pem(inter[0]), key_pem(inter[1]), pem(root[0]), NOW)
    issued = sign(ca, pki.make_csr(pki.generate_workload_key(), WEB))
    assert pem_certs(issued.chain_pem) == [issued.cert, inter[0]]
    verify_client(issued.chain_pem, [root[0]])
    # An organisation may also hand over a root itself (no chain).
    own = pki.load_plugin(pem(root[0]), key_pem(root[1]), "", NOW)
    assert own.is_root
    assert own.cert == root[0]


def test_plugin_failures_each_say_what_is_wrong(
        org: dict[str, tuple[x509.Certificate, pki.CaPrivateKey]]) -> None:
    mesh, policy, root = org["mesh"], org["policy"], org["root"]
    chain = pem(policy[0], root[0])
    other_root = make_ca("Other Root", None)
    leafish = make_ca("Acme web server", policy, ca=False)
    no_bc = make_ca("Acme no BC", policy, ca=None)
    no_sign = make_ca("Acme no keyCertSign", policy, key_cert_sign=False)
    expired = make_ca("Acme old CA", policy, not_after=NOW - timedelta(seconds=1))
    future = make_ca("Acme future CA", policy, not_before=NOW + timedelta(days=1))
    too_deep = make_ca("Acme too deep", mesh)  # mesh has pathlen 0
    encrypted = mesh[1].private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")).decode()
    cases: list[tuple[tuple[str, str, str], str]] = [
        ((pem(mesh[0]), key_pem(other_root[1]), chain), "key does not match"),
        ((pem(leafish[0]), key_pem(leafish[1]), chain), "is not a CA"),
        ((pem(no_bc[0]), key_pem(no_bc[1]), chain), "is not a CA"),
        ((pem(no_sign[0]), key_pem(no_sign[1]), chain), "lacks keyCertSign"),
        ((pem(mesh[0]), key_pem(mesh[1]), pem(other_root[0])), "chain is broken: .* not signed"),
        ((pem(mesh[0]), key_pem(mesh[1]), pem(root[0], policy[0])), "chain is broken"),
        ((pem(mesh[0]), key_pem(mesh[1]), pem(policy[0])), "does not end at a self-signed root"),
        ((pem(mesh[0]), key_pem(mesh[1]), ""), "does not end at a self-signed root"),
        ((pem(expired[0]), key_pem(expired[1]), chain), "expired at"),
        ((pem(future[0]), key_pem(future[1]), chain), "is not valid until"),
        ((pem(too_deep[0]), key_pem(too_deep[1]), pem(mesh[0], policy[0], root[0])),
         "allows 0 intermediate"),
        ((pem(mesh[0]), encrypted, chain), "not an unencrypted PEM private key"),
        (("not a cert", key_pem(mesh[1]), chain), "does not parse"),
        ((pem(mesh[0], policy[0]), key_pem(mesh[1]), chain), "exactly one certificate"),
        ((pem(mesh[0]), key_pem(mesh[1]), "garbage"), "not PEM X.509"),
    ]
    messages = set()
    for args, reason in cases:
        with pytest.raises(CaError, match=reason) as info:
            pki.load_plugin(*args, NOW)
        messages.add(str(info.value))
    assert len(messages) == len(cases)
    # The whole chain is checked for expiry, not only the plug-in certificate.
    old_root = make_ca("Acme Old Root", None, not_after=NOW + timedelta(days=10))
    under_old = make_ca("Acme Mesh CA 3", old_root)
    with pytest.raises(CaError, match="'CN=Acme Old Root,O=Acme' expired"):
        pki.load_plugin(pem(under_old[0]), key_pem(under_old[1]), pem(old_root[0]),
                        NOW + timedelta(days=20))


def test_plugin_for_another_trust_domain_is_refused(
        org: dict[str, tuple[x509.Certificate, pki.CaPrivateKey]]) -> None:
    root = org["root"]
    ca = make_ca("Acme other", root, sans=[x509.UniformResourceIdentifier("spiffe://other.org")])
    args = (pem(ca[0]), key_pem(ca[1]), pem(root[0]), NOW)
    with pytest.raises(CaError, match=r"not trust domain example\.org"):
        pki.load_plugin(*args, trust_domain=TD)
    assert pki.load_plugin(*args, trust_domain="other.org").cert == ca[0]


def test_leaf_lifetime_is_capped_by_the_plugin_chain(
        org: dict[str, tuple[x509.Certificate, pki.CaPrivateKey]]) -> None:
    root = org["root"]
    inter = make_ca("Acme short", root, not_after=NOW + timedelta(hours=3))
    ca = pki.load_plugin(pem(inter[0]), key_pem(inter[1]), pem(root[0]), NOW)
    issued = sign(ca, pki.make_csr(pki.generate_workload_key(), WEB), ttl=DAY)
    assert issued.not_after == NOW + timedelta(hours=3)


# --- the control plane's serving certificate, cert_info --------------------------------


def test_server_cert_serves_its_dns_names_and_addresses(root: CaKeyPair) -> None:
    chain, key = servercert.issue_server_cert(root, ["gossamer-control-plane", "cp.example.org"],
                                       ["127.0.0.1", "::1"], NOW, DAY)
    certs = pem_certs(chain)
    assert serialization.load_pem_private_key(key, None).public_key() == certs[0].public_key()
    assert key.startswith(b"-----BEGIN PRIVATE KEY-----")
    for name in (x509.DNSName("gossamer-control-plane"), x509.DNSName("cp.example.org")):
        verifier = PolicyBuilder().store(Store([root.cert])).time(NOW).build_server_verifier(name)
        verifier.verify(certs[0], certs[1:])
    eku = ext(certs[0], x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]  # type: ignore[call-overload]
    info = pki.cert_info(chain)
    assert info["ip_sans"] == ["127.0.0.1", "::1"]
    assert info["dns_sans"] == ["gossamer-control-plane", "cp.example.org"]
    assert info["not_after"] == (NOW + DAY).isoformat()
    with pytest.raises(CaError, match="at least one"):
        servercert.issue_server_cert(root, [], [], NOW, DAY)
    with pytest.raises(CaError, match="bad IP address"):
        servercert.issue_server_cert(root, ["x"], ["not-an-ip"], NOW, DAY)


def test_cert_info(root: CaKeyPair) -> None:
    issued = sign(root, pki.make_csr(pki.generate_workload_key(), WEB))
    info = pki.cert_info(issued.chain_pem)
    assert info["serial"] == issued.serial
    assert info["uri_sans"] == [str(WEB)]
    assert info["issuer"] == root.cert.subject.rfc4514_string()
    assert datetime.fromisoformat(info["not_before"]) == issued.not_before
    assert datetime.fromisoformat(info["not_after"]) == issued.not_after
    assert info["is_ca"] is False
    assert pki.cert_info(root.cert_pem())["is_ca"] is True


# --- what a real TLS stack accepts -----------------------------------------------------


def _tls_context(server: bool, chain: str, key: pki.CaPrivateKey, bundle: str,
                 directory: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = False  # SVIDs name a SPIFFE ID, checked by the peer's policy
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.load_verify_locations(cadata=bundle)
    name = "server" if server else "client"
    (directory / f"{name}.pem").write_text(chain)
    (directory / f"{name}.key").write_text(key_pem(key))
    ctx.load_cert_chain(directory / f"{name}.pem", directory / f"{name}.key")
    return ctx


def _handshake(client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext) -> tuple[bytes, bytes]:
    """Mutual TLS through memory BIOs; returns each side's view of the peer (DER)."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_side=False)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for side, obj in (("client", client), ("server", server)):
            if not done[side]:
                try:
                    obj.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    peer_of_client = client.getpeercert(binary_form=True)
    peer_of_server = server.getpeercert(binary_form=True)
    assert peer_of_client is not None
    assert peer_of_server is not None
    return peer_of_client, peer_of_server


def test_mutual_tls_through_openssl_with_plugin_chain(tmp_path: Path) -> None:
    now = datetime.now(UTC)  # OpenSSL checks validity against the real clock
    start, end = now - timedelta(days=1), now + timedelta(days=30)
    root = make_ca("Acme Root", None, rsa_key=True, not_before=start, not_after=end)
    policy = make_ca("Acme Policy CA", root, path_length=1, not_before=start, not_after=end)
    mesh = make_ca("Acme Mesh CA", policy, path_length=0, not_before=start, not_after=end)
    ca = pki.load_plugin(pem(mesh[0]), key_pem(mesh[1]), pem(policy[0], root[0]), now)
    keys = {name: pki.generate_workload_key() for name in ("web", "db")}
    ids = {name: SpiffeId(TD, "default", name) for name in keys}
    chains = {name: pki.sign_workload_csr(ca, pki.make_csr(keys[name], ids[name]), ids[name],
                                          now, DAY, WEEK).chain_pem for name in keys}
    bundle = ca.root_pem()
    server = _tls_context(True, chains["db"], keys["db"], bundle, tmp_path)
    client = _tls_context(False, chains["web"], keys["web"], bundle, tmp_path)
    seen_by_client, seen_by_server = _handshake(client, server)
    assert x509.load_der_x509_certificate(seen_by_client).public_key() == keys["db"].public_key()
    assert x509.load_der_x509_certificate(seen_by_server).public_key() == keys["web"].public_key()


def test_openssl_rejects_a_leaf_from_another_root(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    ours, theirs = pki.generate_root(TD, now), pki.generate_root(TD, now)
    key = pki.generate_workload_key()
    chain = pki.sign_workload_csr(theirs, pki.make_csr(key, WEB), WEB, now, DAY, WEEK).chain_pem
    okey = pki.generate_workload_key()
    ochain = pki.sign_workload_csr(ours, pki.make_csr(okey, WEB), WEB, now, DAY, WEEK).chain_pem
    server = _tls_context(True, ochain, okey, ours.root_pem(), tmp_path)
    client = _tls_context(False, chain, key, ours.root_pem(), tmp_path)
    with pytest.raises(ssl.SSLError):
        _handshake(client, server)
