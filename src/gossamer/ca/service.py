"""The CA's gRPC edge: sign a workload's CSR for exactly the identity its
join token grants, and hand out the trust bundle.

It is served on the control plane's TLS xDS port (see ca/api.py for the
contract). The private key of the workload never comes here: only the CSR.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

import grpc
import grpc.aio
from pydantic import ValidationError

from gossamer.ca import api
from gossamer.ca.authority import MeshCA
from gossamer.ca.errors import CaError, IdentityMismatch
from gossamer.ca.tokens import Scope, TokenRecord, Tokens
from gossamer.contract.spiffe import BadSpiffeId, SpiffeId

log = logging.getLogger(__name__)


def bearer(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def _identity(record: TokenRecord, ca: MeshCA, csr_identity: SpiffeId | None) -> SpiffeId:
    """A join token grants its own identity; an admin token whatever the CSR asks."""
    granted = record.identity(ca.trust_domain)
    if granted is not None:
        return granted
    if record.scope is Scope.ADMIN and csr_identity is not None:
        return csr_identity
    raise PermissionError(f"a {record.scope.value} token cannot obtain certificates")


def _csr_identity(csr_pem: str) -> SpiffeId | None:
    from cryptography import x509

    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
        return SpiffeId.parse(uris[0]) if len(uris) == 1 else None
    except (ValueError, x509.ExtensionNotFound, BadSpiffeId):
        return None


class CaService:
    def __init__(self, ca: MeshCA, tokens: Tokens) -> None:
        self._ca = ca
        self._tokens = tokens

    def handler(self) -> grpc.GenericRpcHandler:
        def raw(b: bytes) -> bytes:
            return b

        return grpc.method_handlers_generic_handler(api.SERVICE, {
            "CreateCertificate": grpc.unary_unary_rpc_method_handler(
                self._create, request_deserializer=raw, response_serializer=raw),
            "GetTrustBundle": grpc.unary_unary_rpc_method_handler(
                self._bundle, request_deserializer=raw, response_serializer=raw),
        })

    async def _caller(self, context: grpc.aio.ServicerContext[bytes, bytes]) -> TokenRecord:
        token = bearer(context.invocation_metadata())
        record = await self._tokens.verify(token) if token else None
        if record is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "missing or unknown token (authorization: Bearer <token>)")
        assert record is not None
        return record

    async def _create(self, body: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        record = await self._caller(context)
        try:
            req = api.CertificateRequest.model_validate_json(body)
        except ValidationError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad request: {exc}")
            raise
        try:
            identity = _identity(record, self._ca, _csr_identity(req.csr_pem))
            ttl = timedelta(seconds=req.ttl_seconds) if req.ttl_seconds else None
            issued = self._ca.sign(req.csr_pem.encode(), identity, ttl, workload=req.workload)
        except (IdentityMismatch, PermissionError) as exc:
            log.warning("refused a certificate to token %s: %s", record.id, exc)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
            raise
        except CaError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise
        return api.CertificateResponse(
            cert_chain_pem=issued.chain_pem, trust_bundle_pem=self._ca.bundle_pem(),
            bundle_version=self._ca.bundle_version(), spiffe_id=str(issued.spiffe_id),
            serial=issued.serial, not_before=issued.not_before.timestamp(),
            not_after=issued.not_after.timestamp()).encode()

    async def _bundle(self, body: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        await self._caller(context)
        return api.TrustBundleResponse(trust_bundle_pem=self._ca.bundle_pem(),
                                       bundle_version=self._ca.bundle_version()).encode()
