"""A TLS certificate and key, as a Kubernetes `Secret` of type `kubernetes.io/tls`.

Gateways' HTTPS listeners name these in `tls.certificateRefs`. The key material leaves
the control plane only to the Envoy of a gateway whose listener names it (over its
ADS stream, as an SDS secret): the API shows Secrets without `data` (api/app.py).
Checked at apply: both PEM blocks parse, and the key is the certificate's.
"""

from __future__ import annotations

import base64
import binascii
from typing import ClassVar, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import Field, model_validator

from gossamer.model.meta import Resource

TLS_TYPE = "kubernetes.io/tls"
CERT_KEY, KEY_KEY = "tls.crt", "tls.key"


def _decode(data: dict[str, str], key: str) -> bytes:
    try:
        return base64.b64decode(data[key], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"data.{key}: not valid base64") from exc


class Secret(Resource):
    KIND = "Secret"
    API_VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)
    kind: Literal["Secret"] = "Secret"
    type: Literal["kubernetes.io/tls"] = "kubernetes.io/tls"
    data: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _pem(self) -> Secret:
        for key in (CERT_KEY, KEY_KEY):
            if key not in self.data:
                raise ValueError(f"data.{key}: required for type {TLS_TYPE}")
        extra = sorted(set(self.data) - {CERT_KEY, KEY_KEY, "ca.crt"})
        if extra:
            raise ValueError(f"data.{extra[0]}: unknown key (a TLS Secret holds tls.crt, "
                             "tls.key and optionally ca.crt)")
        cert_pem, key_pem = self.certificate_pem, self.key_pem
        try:
            certs = x509.load_pem_x509_certificates(cert_pem)
        except ValueError as exc:
            raise ValueError(f"data.{CERT_KEY}: not a PEM certificate chain") from exc
        try:
            private = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"data.{KEY_KEY}: not an unencrypted PEM private key") from exc
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        if private.public_key().public_bytes(serialization.Encoding.DER, spki) != \
                certs[0].public_key().public_bytes(serialization.Encoding.DER, spki):
            raise ValueError(f"data.{KEY_KEY}: is not the key of the first certificate of "
                             f"data.{CERT_KEY}")
        return self

    @property
    def certificate_pem(self) -> bytes:
        return _decode(self.data, CERT_KEY)

    @property
    def key_pem(self) -> bytes:
        return _decode(self.data, KEY_KEY)
