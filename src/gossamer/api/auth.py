"""Who is calling the API, and what they may do.

Every request but liveness, metrics, the trust bundle and the OpenAPI
document carries `Authorization: Bearer <token>`. Scopes: `admin` may do everything; `read`
may only read; `join` (an agent's token, bound to one identity) may read, and
may register, renew and remove only workloads of its own identity.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from gossamer.ca.tokens import Scope, Tokens


class Unauthorized(Exception):
    """401: no token, or one the control plane does not know."""


class Forbidden(Exception):
    """403: a known token whose scope does not allow the call."""


@dataclass(frozen=True)
class Caller:
    scope: Scope
    token_id: str
    namespace: str | None = None
    account: str | None = None

    def require_read(self) -> None:
        """Every scope may read."""

    def require_admin(self) -> None:
        if self.scope is not Scope.ADMIN:
            raise Forbidden(f"a {self.scope.value} token cannot do this; it needs an admin token")

    def require_identity(self, namespace: str, account: str) -> None:
        """Admins may act for anyone; a join token only for its own identity."""
        if self.scope is Scope.ADMIN:
            return
        if self.scope is Scope.JOIN and (self.namespace, self.account) == (namespace, account):
            return
        what = f"{namespace}/{account}"
        if self.scope is Scope.JOIN:
            raise Forbidden(f"this join token is for {self.namespace}/{self.account}, not {what}")
        raise Forbidden(f"a {self.scope.value} token cannot change workloads")


OPEN = Caller(Scope.ADMIN, "auth-disabled")


class Authenticator:
    """`tokens=None` turns authentication off (embedded tests only)."""

    def __init__(self, tokens: Tokens | None) -> None:
        self._tokens = tokens

    async def caller(self, request: Request) -> Caller:
        if self._tokens is None:
            return OPEN
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("this API needs a token: set GOSSAMER_TOKEN "
                               "(Authorization: Bearer <token>)")
        record = await self._tokens.verify(token.strip())
        if record is None:
            raise Unauthorized("the token is not known to this control plane (revoked, or "
                               "from another one)")
        return Caller(record.scope, record.id, record.namespace, record.account)
