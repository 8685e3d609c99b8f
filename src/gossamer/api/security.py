"""API routes for tokens, the CA and authorization checks."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI
from fastapi.responses import PlainTextResponse
from pydantic import AfterValidator, BaseModel, Field

from gossamer.api.auth import Caller
from gossamer.api.context import ApiContext, ApiError
from gossamer.ca.tokens import Scope
from gossamer.contract.checks import DNS_LABEL
from gossamer.contract.spiffe import CONTROL_PLANE_ACCOUNT, CONTROL_PLANE_NAMESPACE
from gossamer.model.limits import check_text


class TokenRequest(BaseModel):
    scope: Scope = Scope.JOIN
    # For join tokens: the identity granted (service account defaults to the service).
    service: str | None = Field(default=None, max_length=63)
    namespace: str = Field(default="default", max_length=63)
    service_account: str | None = Field(default=None, max_length=63)
    description: Annotated[str, AfterValidator(check_text)] = Field(default="", max_length=200)


class RotateRequest(BaseModel):
    step: Literal["begin", "switch", "finish"]


def _check_label(value: str, what: str) -> None:
    if not DNS_LABEL.match(value):
        raise ApiError(422, f"{what} {value!r} is not a DNS label",
                       [{"path": what, "reason": "must be a DNS label"}])


def security_routes(app: FastAPI, ctx: ApiContext) -> None:
    reader = Depends(ctx.auth.caller)

    def tokens() -> Any:
        if ctx.tokens is None:
            raise ApiError(404, "tokens are disabled on this control plane")
        return ctx.tokens

    @app.post("/api/v1/tokens")
    async def create_token(req: TokenRequest, caller: Caller = reader) -> dict[str, Any]:
        """The secret is returned once and never stored, only its hash."""
        caller.require_admin()
        namespace = account = None
        if req.scope is Scope.JOIN:
            if not req.service:
                raise ApiError(422, "a join token needs a service",
                               [{"path": "service", "reason": "required for scope join"}])
            namespace, account = req.namespace, req.service_account or req.service
            _check_label(namespace, "namespace")
            _check_label(account, "service_account")
            if (namespace, account) == (CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_ACCOUNT):
                raise ApiError(422, f"{namespace}/{account} is the control plane's own "
                                    "identity; no join token grants it",
                               [{"path": "service_account", "reason": "reserved"}])
        text, record = await tokens().create(req.scope, namespace=namespace, account=account,
                                             description=req.description)
        ident = record.identity(ctx.ca.trust_domain) if ctx.ca else None
        return {"token": text, "id": record.id, "scope": record.scope.value,
                "identity": str(ident) if ident else None}

    @app.get("/api/v1/tokens")
    async def list_tokens(caller: Caller = reader) -> list[dict[str, Any]]:
        caller.require_admin()
        return [{"id": r.id, "scope": r.scope.value, "namespace": r.namespace,
                 "account": r.account, "description": r.description,
                 "created_at": str(r.created_at)} for r in await tokens().list()]

    @app.delete("/api/v1/tokens/{token_id}")
    async def revoke_token(token_id: str, caller: Caller = reader) -> dict[str, str]:
        caller.require_admin()
        if not await tokens().revoke(token_id):
            raise ApiError(404, f"no token with id {token_id!r}")
        return {"revoked": token_id}

    @app.get("/api/v1/ca")
    async def ca_info(caller: Caller = reader) -> dict[str, Any]:
        """The public half only: trust domain, bundle, rotation phase."""
        if ctx.ca is None:
            raise ApiError(404, "this control plane runs without a CA")
        return {"trust_domain": ctx.ca.trust_domain, "bundle_pem": ctx.ca.bundle_pem(),
                "bundle_version": ctx.ca.bundle_version(), "phase": str(ctx.ca.phase),
                "issued": ctx.ca.issued()}

    @app.get("/api/v1/ca/bundle", response_class=PlainTextResponse)
    async def ca_bundle() -> PlainTextResponse:
        """The trust bundle (PEM), open: a joining host has no credential it may send
        before it trusts this server. It pins the bundle by fingerprint
        (`gossamer proxy --ca-fingerprint`), so an impostor's bundle is refused."""
        if ctx.ca is None:
            raise ApiError(404, "this control plane runs without a CA")
        return PlainTextResponse(ctx.ca.bundle_pem(), media_type="application/x-pem-file")

    @app.post("/api/v1/ca/rotate")
    async def ca_rotate(req: RotateRequest, caller: Caller = reader) -> dict[str, Any]:
        caller.require_admin()
        if ctx.ca is None:
            raise ApiError(404, "this control plane runs without a CA")
        from gossamer.ca.errors import CaError

        step = {"begin": ctx.ca.begin_root_rotation, "switch": ctx.ca.switch_signer,
                "finish": ctx.ca.finish_root_rotation}[req.step]
        try:
            await step()
        except CaError as exc:
            raise ApiError(409, str(exc)) from exc
        return {"phase": str(ctx.ca.phase), "bundle_version": ctx.ca.bundle_version()}

    @app.get("/api/v1/authz/check")
    async def authz_check(to: str, path: str = "/", method: str = "GET",
                          source: str | None = None, source_namespace: str = "default",
                          namespace: str = "default", port: int = 0,
                          caller: Caller = reader) -> dict[str, Any]:
        """Evaluated on the translated Envoy RBAC config the destination's sidecar runs."""
        from gossamer.explain.authz import check

        decision = check(ctx.state.mesh, from_service=source,
                         from_namespace=source_namespace, to_service=to,
                         to_namespace=namespace, port=port, method=method, path=path)
        return {"allowed": decision.allowed, "status": decision.status,
                "policy": decision.policy, "reason": decision.reason}
