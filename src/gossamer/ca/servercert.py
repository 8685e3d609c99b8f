"""The control plane's own serving certificate, signed by the mesh CA.

Not an X.509-SVID: its names are the DNS names and addresses agents and Envoy dial
(`contract.names.CONTROL_PLANE_NAME` above all), and it serves only TLS server
authentication. `ca/authority.py` renews it; this is the pure signing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gossamer.ca.errors import CaError
from gossamer.ca.pki import (
    CLOCK_SKEW,
    ORGANIZATION,
    CaKeyPair,
    as_utc,
    hash_for,
    leaf_builder,
    leaf_key_usage,
    pem_of,
    subject_of,
)


def issue_server_cert(
    ca: CaKeyPair,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str | ipaddress.IPv4Address | ipaddress.IPv6Address],
    now: datetime,
    ttl: timedelta,
) -> tuple[bytes, bytes]:
    """A serving certificate (and its new key) for the control plane's own TLS.

    Returns (certificate chain PEM, private key PEM as PKCS#8): the chain is
    the leaf then the intermediates, without the root. Note that grpc's
    `ssl_server_credentials` wants the pair the other way round, (key, chain).
    """
    now = as_utc(now)
    if not dns_names and not ip_addresses:
        raise CaError("a server certificate needs at least one DNS name or IP address")
    if ttl <= timedelta(0):
        raise CaError("certificate lifetimes must be positive")
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    try:
        names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    except ValueError as exc:
        raise CaError(f"bad IP address for the server certificate: {exc}") from None
    not_after = min(now + ttl, ca.not_after)
    if not_after <= now:
        raise CaError(f"the signing CA {subject_of(ca.cert)} has expired")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)])
    if dns_names:
        subject = x509.Name([*subject, x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0][:64])])
    cert = (
        leaf_builder(ca, key.public_key(), now - CLOCK_SKEW, not_after, subject)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(leaf_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca.key, hash_for(ca.key))
    )
    chain = pem_of(cert) + "".join(pem_of(c) for c in ca.intermediates)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return chain.encode("ascii"), key_pem
