"""How clients of the control plane's API (the CLI, agents) trust it.

The API is served over TLS beyond loopback with a certificate from the mesh CA
(controlplane/apitls.py), so clients verify it with the mesh's trust bundle,
not the system's roots. A failed verification is a configuration error that
no retry fixes; `verify_failure` finds it in a chained HTTP error by type, so
callers can say so in one line instead of retrying or quoting a stack.
"""

from __future__ import annotations

import ssl
from pathlib import Path


class TrustError(Exception):
    """The bundle to verify the control plane with cannot be used."""


def read_bundle(path: Path, option: str = "--ca-file") -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise TrustError(f"cannot read {option} {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise TrustError(f"{option} {path} is not a PEM file (not text)") from exc


def client_context(bundle_pem: str, what: str = "the CA bundle") -> ssl.SSLContext:
    """Verify the server's chain against exactly `bundle_pem`, and its name against
    the host dialled (the certificate names the advertised address)."""
    try:
        return ssl.create_default_context(cadata=bundle_pem)
    except (ssl.SSLError, ValueError) as exc:
        raise TrustError(f"{what} holds no usable certificate: {exc}") from exc


def verify_failure(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification error behind `exc` (httpx chains it), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def describe(error: ssl.SSLCertVerificationError) -> str:
    """OpenSSL's reason, without the Python wrapper's decoration."""
    return str(error.verify_message or error.reason or error)
