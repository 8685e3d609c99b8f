"""TLS between sidecars: certificates over SDS from each proxy's own agent.

The private key never leaves the workload, so Envoy never gets key material
from the control plane: it asks its agent (static cluster `gossamer_sds`, a
gRPC SDS server on a unix socket) for the secrets `default` (its certificate)
and `ROOTCA` (the trust bundle). Every hop is TLS 1.3; the caller checks the
peer's SPIFFE ID against the identities the destination service may have,
and the server accepts any certificate that chains to the bundle
(AuthorizationPolicy decides who may do what).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from envoy.config.core.v3.base_pb2 import TransportSocket
from envoy.extensions.transport_sockets.tls.v3.common_pb2 import SubjectAltNameMatcher
from envoy.extensions.transport_sockets.tls.v3.tls_pb2 import UpstreamTlsContext

from gossamer.contract.names import CERT_SECRET, ROOT_SECRET, sds_config
from gossamer.translate.protos import DOWNSTREAM_TLS, TLS_INSPECTOR, UPSTREAM_TLS, build

TLS_SOCKET = "envoy.transport_sockets.tls"
# Where every secret comes from: the proxy's own agent.
AGENT_SDS: dict[str, Any] = sds_config()
# Both bounds: Envoy's default maximum for clients is TLS 1.2, so a minimum of
# 1.3 alone leaves an upstream context no version at all.
TLS_PARAMS: dict[str, Any] = {"tlsMinimumProtocolVersion": "TLSv1_3",
                              "tlsMaximumProtocolVersion": "TLSv1_3"}
# Tells TLS from plaintext on the inbound port so filter chains can match on it.
TLS_INSPECTOR_FILTER: dict[str, Any] = {
    "name": "envoy.filters.listener.tls_inspector",
    "typedConfig": {"@type": TLS_INSPECTOR},
}


def sds_secret(name: str) -> dict[str, Any]:
    return {"name": name, "sdsConfig": AGENT_SDS}


def _socket(type_url: str, context: dict[str, Any]) -> dict[str, Any]:
    return {"name": TLS_SOCKET, "typedConfig": {"@type": type_url, **context}}


def upstream_mtls(spiffe_ids: Sequence[str], *, h2: bool) -> dict[str, Any]:
    """Transport socket of a cluster to mesh workloads: only the listed identities pass."""
    sans = [{"sanType": "URI", "matcher": {"exact": sid}} for sid in spiffe_ids]
    return _socket(UPSTREAM_TLS, {"commonTlsContext": {
        "tlsParams": TLS_PARAMS,
        "tlsCertificateSdsSecretConfigs": [sds_secret(CERT_SECRET)],
        "combinedValidationContext": {
            "defaultValidationContext": {"matchTypedSubjectAltNames": sans},
            "validationContextSdsSecretConfig": sds_secret(ROOT_SECRET),
        },
        "alpnProtocols": ["h2"] if h2 else ["http/1.1"],
    }})


@lru_cache(maxsize=2)
def _upstream_template(h2: bool) -> UpstreamTlsContext:
    context = UpstreamTlsContext()
    build(TransportSocket, upstream_mtls([], h2=h2)).typed_config.Unpack(context)
    return context


@lru_cache(maxsize=4096)
def upstream_mtls_socket(spiffe_ids: tuple[str, ...], *, h2: bool) -> TransportSocket:
    """`upstream_mtls` as a message, made without parsing a dict: one per service
    made that a large share of a mesh's translation time. Copy it, never change it."""
    context = UpstreamTlsContext()
    context.CopyFrom(_upstream_template(h2))
    sans = context.common_tls_context.combined_validation_context \
        .default_validation_context.match_typed_subject_alt_names
    for sid in spiffe_ids:
        sans.add(san_type=SubjectAltNameMatcher.URI).matcher.exact = sid
    socket = TransportSocket(name=TLS_SOCKET)
    socket.typed_config.Pack(context, deterministic=True)
    return socket


def downstream_mtls() -> dict[str, Any]:
    """Transport socket of the inbound TLS chain: a client certificate is required."""
    return _socket(DOWNSTREAM_TLS, {
        "requireClientCertificate": True,
        "commonTlsContext": {
            "tlsParams": TLS_PARAMS,
            "tlsCertificateSdsSecretConfigs": [sds_secret(CERT_SECRET)],
            "validationContextSdsSecretConfig": sds_secret(ROOT_SECRET),
            "alpnProtocols": ["h2", "http/1.1"],
        },
    })


def server_tls(host: str, *, is_ip: bool, ca_file: str | None) -> dict[str, Any]:
    """Transport socket to a public https server (a JWKS endpoint), checked by name."""
    # Public servers may still speak only TLS 1.2; allow 1.3 too.
    context: dict[str, Any] = {"commonTlsContext": {"tlsParams": {
        "tlsMaximumProtocolVersion": "TLSv1_3"}}}
    if not is_ip:
        context["sni"] = host
    if ca_file is not None:
        context["commonTlsContext"]["validationContext"] = {
            "trustedCa": {"filename": ca_file},
            "matchTypedSubjectAltNames": [
                {"sanType": "IP_ADDRESS" if is_ip else "DNS", "matcher": {"exact": host}}],
        }
    return _socket(UPSTREAM_TLS, context)
