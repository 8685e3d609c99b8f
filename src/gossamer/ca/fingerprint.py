"""Pinning the mesh's trust bundle by fingerprint.

A new host has nothing to verify the control plane with. Rather than copying
the bundle file to every host, an operator can hand out the SHA-256
fingerprint of a root certificate (one line, easy to paste, as kubeadm's
`--discovery-token-ca-cert-hash`): the agent fetches the bundle without
verification and keeps it only if one of its certificates has that
fingerprint. The fingerprint is the one `openssl x509 -fingerprint -sha256`
prints, so it can be checked by hand.
"""

from __future__ import annotations

import hmac
import re

from cryptography import x509
from cryptography.hazmat.primitives import hashes

PREFIX = "sha256:"
_HEX = re.compile(r"^[0-9a-f]{64}$")


class BadFingerprint(ValueError):
    """The text is not a SHA-256 fingerprint."""


class BadBundle(ValueError):
    """The text is not a PEM bundle of at least one certificate."""


def parse(text: str) -> bytes:
    """The 32 bytes of `sha256:HEX`, `HEX`, or openssl's `AA:BB:...` (any case)."""
    value = text.strip().lower()
    value = value.removeprefix(PREFIX).removeprefix("sha256=").replace(":", "")
    if not _HEX.match(value):
        raise BadFingerprint(f"{text.strip()!r} is not a SHA-256 fingerprint (64 hex digits, "
                             f"optionally as {PREFIX}HEX or AA:BB:...)")
    return bytes.fromhex(value)


def show(digest: bytes) -> str:
    return PREFIX + digest.hex()


def certificates(bundle_pem: str | bytes) -> list[x509.Certificate]:
    data = bundle_pem.encode() if isinstance(bundle_pem, str) else bundle_pem
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:  # cryptography's text is about its own internals
        raise BadBundle("not a PEM certificate bundle") from exc
    if not certs:
        raise BadBundle("the bundle holds no certificate")
    return certs


def of_bundle(bundle_pem: str | bytes) -> list[bytes]:
    """The SHA-256 of each certificate's DER in the bundle, in bundle order."""
    return [cert.fingerprint(hashes.SHA256()) for cert in certificates(bundle_pem)]


def pinned(bundle_pem: str | bytes, pin: bytes) -> bool:
    """Whether a certificate of the bundle has the pinned fingerprint. Every
    candidate is compared in constant time, so the answer's timing says nothing
    about how much of the pin a forged bundle got right."""
    found = False
    for digest in of_bundle(bundle_pem):
        found |= hmac.compare_digest(digest, pin)
    return found
