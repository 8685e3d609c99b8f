"""Bearer tokens for the HTTP API, the CA and xDS.

A token reads `gst_<id>_<secret>`: `id` is 12 hex characters and names the
token (safe to log, list and revoke by); `secret` is 32 random bytes in
urlsafe base64 without padding. The store keeps, per token, only the
SHA-256 of the secret (kind `_Token`, namespace `gossamer-system`, name
`<id>`), so reading the store does not yield usable tokens. A plain hash
without salt or stretching is enough because the secret is 256 random bits:
there is nothing to guess a dictionary for.

Scopes: `admin` may do everything, `read` may only read, `join` is an agent's
token bound to one identity (namespace + service account), the only identity
the CA will sign for it.

Verification caches a looked-up record for `cache_seconds` (default 5) to
keep the store off the hot path of every request; a revocation (from any
replica) therefore takes effect everywhere within that time, and at once on
the replica that revoked.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

from gossamer.ca.authority import utcnow
from gossamer.ca.pki import CaError
from gossamer.identity import SpiffeId
from gossamer.store.base import Conflict, NotFound, ResourceStore, StoredObject

log = logging.getLogger(__name__)

KIND = "_Token"
NAMESPACE = "gossamer-system"
PREFIX = "gst_"
CACHE_SECONDS = 5.0

_ID = re.compile(r"^[0-9a-f]{12}\Z")
_TOKEN = re.compile(r"^gst_([0-9a-f]{12})_([A-Za-z0-9_-]{43})\Z")
# Kubernetes rules: a namespace is a DNS label, a service account a DNS subdomain.
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_ACCOUNT = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")


class Scope(str, Enum):
    ADMIN = "admin"
    READ = "read"
    JOIN = "join"


@dataclass(frozen=True)
class TokenRecord:
    """What the control plane knows about a token: everything but its secret."""

    id: str
    scope: Scope
    namespace: str | None
    account: str | None
    created_at: datetime
    description: str = ""

    def identity(self, trust_domain: str) -> SpiffeId | None:
        """The SPIFFE ID a join token grants; None for other scopes."""
        if self.scope is not Scope.JOIN or self.namespace is None or self.account is None:
            return None
        return SpiffeId(trust_domain, self.namespace, self.account)

    def allows_write(self) -> bool:
        """Whether the token may change the desired state (only admin tokens;
        join tokens' narrow writes for their own identity are checked by the API)."""
        return self.scope is Scope.ADMIN


@dataclass(frozen=True)
class _Cached:
    record: TokenRecord
    digest: str
    expires: float


def parse(text: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed token text, else None."""
    m = _TOKEN.match(text.strip())
    return (m.group(1), m.group(2)) if m else None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


class Tokens:
    """Create, verify, list and revoke tokens kept (hashed) in the store."""

    def __init__(
        self,
        store: ResourceStore,
        *,
        cache_seconds: float = CACHE_SECONDS,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._monotonic = monotonic
        self._cache: dict[str, _Cached] = {}

    async def create(
        self,
        scope: Scope,
        *,
        namespace: str | None = None,
        account: str | None = None,
        description: str = "",
    ) -> tuple[str, TokenRecord]:
        """A new token: (its text, shown once and never stored; its record)."""
        scope = Scope(scope)
        if scope is Scope.JOIN:
            if not namespace or not account:
                raise CaError("a join token needs a namespace and a service account")
            if not _NAMESPACE.match(namespace) or len(namespace) > 63:
                raise CaError(f"namespace {namespace!r} is not a DNS label")
            if not _ACCOUNT.match(account) or len(account) > 253:
                raise CaError(f"service account {account!r} is not a DNS name")
        elif namespace is not None or account is not None:
            raise CaError(f"a {scope.value} token is not bound to an identity; "
                          "namespace and account are for join tokens")
        for _ in range(3):
            text, record, body = self._mint(scope, namespace, account, description)
            try:
                await self._store.put(KIND, NAMESPACE, record.id, body, expected_revision=0)
            except Conflict:
                continue  # a 48-bit id collision: draw again
            log.info("created %s token %s", scope.value, record.id)
            return text, record
        raise CaError("could not allocate a token id")

    async def verify(self, text: str) -> TokenRecord | None:
        """The record of a valid token text; None if malformed, unknown,
        revoked (within the cache time) or the secret is wrong."""
        parsed = parse(text)
        if parsed is None:
            return None
        token_id, secret = parsed
        now = self._monotonic()
        cached = self._cache.get(token_id)
        if cached is None or cached.expires <= now:
            stored = await self._store.get(KIND, NAMESPACE, token_id)
            if stored is None:
                self._cache.pop(token_id, None)
                return None
            try:
                record, digest = _decode(stored)
            except (KeyError, TypeError, ValueError) as exc:
                log.error("stored token %s is malformed: %r", token_id, exc)
                return None
            cached = _Cached(record, digest, now + self._cache_seconds)
            self._cache[token_id] = cached
        if not hmac.compare_digest(_digest(secret), cached.digest):
            return None
        return cached.record

    async def revoke(self, token_id: str) -> bool:
        """Delete a token (by id, or by its full text); False if there was none."""
        parsed = parse(token_id)
        if parsed is not None:
            token_id = parsed[0]
        self._cache.pop(token_id, None)
        if not _ID.match(token_id):
            return False
        try:
            await self._store.delete(KIND, NAMESPACE, token_id)
        except NotFound:
            return False
        log.info("revoked token %s", token_id)
        return True

    async def get(self, token_id: str) -> TokenRecord | None:
        if not _ID.match(token_id):
            return None
        stored = await self._store.get(KIND, NAMESPACE, token_id)
        return None if stored is None else _decode(stored)[0]

    async def list(self) -> list[TokenRecord]:
        """Every token, oldest first."""
        objects, _ = await self._store.list(KIND, NAMESPACE)
        records = []
        for obj in objects:
            try:
                records.append(_decode(obj)[0])
            except (KeyError, TypeError, ValueError) as exc:
                log.error("stored token %s is malformed: %r", obj.name, exc)
        return sorted(records, key=lambda r: (r.created_at, r.id))

    async def ensure_admin(self, path: Path) -> str | None:
        """On first start (no admin token in the store), create one, write it
        to `path` (mode 0600, parent directories created) and return it. If an
        admin token exists, return None: secrets are never shown twice.

        The file is written before the record is stored, so a failure never
        leaves an admin token nobody knows. Replicas starting together may each
        create one (each writes its own file); both are valid admin tokens.
        """
        if any(r.scope is Scope.ADMIN for r in await self.list()):
            return None
        text, record, body = self._mint(Scope.ADMIN, None, None, "bootstrap admin token")
        await asyncio.to_thread(_write_private, path, text + "\n")
        try:
            await self._store.put(KIND, NAMESPACE, record.id, body, expected_revision=0)
        except BaseException:
            await asyncio.to_thread(path.unlink, missing_ok=True)
            raise
        log.info("created the bootstrap admin token %s in %s", record.id, path)
        return text

    def _mint(
        self, scope: Scope, namespace: str | None, account: str | None, description: str
    ) -> tuple[str, TokenRecord, dict[str, Any]]:
        token_id = secrets.token_hex(6)
        secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")
        record = TokenRecord(token_id, scope, namespace, account,
                             self._clock().replace(microsecond=0), description)
        body = {
            "scope": scope.value,
            "namespace": namespace,
            "account": account,
            "created_at": record.created_at.isoformat(),
            "description": description,
            "secret_sha256": _digest(secret),
        }
        return f"{PREFIX}{token_id}_{secret}", record, body


def _decode(stored: StoredObject) -> tuple[TokenRecord, str]:
    body = stored.body
    record = TokenRecord(
        id=stored.name,
        scope=Scope(body["scope"]),
        namespace=body.get("namespace"),
        account=body.get("account"),
        created_at=datetime.fromisoformat(body["created_at"]),
        description=body.get("description", ""),
    )
    digest = body["secret_sha256"]
    if not isinstance(digest, str):
        raise TypeError("secret_sha256 is not a string")
    return record, digest


def _write_private(path: Path, text: str) -> None:
    """Write `text` readable by the owner only, even if the file existed."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("ascii"))
    finally:
        os.close(fd)
