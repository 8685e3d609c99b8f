"""Documents of the gateway tests: a Gateway with every listener kind, its routes, and
self-signed TLS Secrets made on the spot (unit, Envoy and e2e tests share them)."""

from __future__ import annotations

import base64
import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

GW = "gateway.networking.k8s.io"


def self_signed(host: str) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for `host`, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def tls_secret(name: str, cert: bytes, key: bytes, namespace: str = "default") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": namespace},
            "data": {"tls.crt": base64.b64encode(cert).decode(),
                     "tls.key": base64.b64encode(key).decode()}}


def gateway(name: str = "edge", listeners: list[dict[str, Any]] | None = None,
            **meta: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GW}/v1", "kind": "Gateway",
            "metadata": {"name": name, **meta},
            "spec": {"gatewayClassName": "gossamer", "listeners": listeners or [
                {"name": "http", "port": 8080, "protocol": "HTTP"},
                {"name": "a", "port": 8443, "protocol": "HTTPS", "hostname": "a.example.com",
                 "tls": {"certificateRefs": [{"name": "cert-a"}]}},
                {"name": "b", "port": 8443, "protocol": "HTTPS", "hostname": "b.example.com",
                 "tls": {"certificateRefs": [{"name": "cert-b"}]}},
                {"name": "pass", "port": 8443, "protocol": "TLS",
                 "hostname": "pass.example.com", "tls": {"mode": "Passthrough"}},
                {"name": "tcp", "port": 9000, "protocol": "TCP"},
            ]}}


def parent(section: str | None = None, name: str = "edge") -> dict[str, Any]:
    return {"group": GW, "kind": "Gateway", "name": name,
            **({"sectionName": section} if section else {})}


def http_route(name: str, parents: list[dict[str, Any]], hostnames: list[str],
               backends: list[tuple[str, int]], **rule: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GW}/v1", "kind": "HTTPRoute", "metadata": {"name": name},
            "spec": {"parentRefs": parents, "hostnames": hostnames, "rules": [{
                "backendRefs": [{"name": n, "port": 80, "weight": w} for n, w in backends],
                **rule}]}}


def service(name: str, protocol: str = "http", port: int = 80) -> dict[str, Any]:
    return {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Service",
            "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": port, "protocol": protocol}]}}


def grpc_route(name: str, parents: list[dict[str, Any]], hostnames: list[str],
               rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": f"{GW}/v1", "kind": "GRPCRoute", "metadata": {"name": name},
            "spec": {"parentRefs": parents, "hostnames": hostnames, "rules": rules}}
