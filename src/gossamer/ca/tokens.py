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

Verification keeps the store off the hot path of every request. A control
plane runs `follow`, which keeps every token's record in memory from the
store's watch: a revocation (from any replica) takes effect when its event
arrives, and at once on the replica that revoked. Without it (a `Tokens` that
does not follow, or while the watch is down), a looked-up record is cached
for `cache_seconds` (default 5), and a revocation from another replica takes
effect within that time. `on_revoked` hears of each revocation this process
sees (the control plane ends the xDS streams opened with the token).
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

from gossamer.ca.authority import utcnow
from gossamer.ca.errors import CaError
from gossamer.contract.spiffe import SpiffeId
from gossamer.store.base import (
    Compacted,
    Conflict,
    EventType,
    NotFound,
    ResourceStore,
    StoredObject,
    WatchEvent,
)

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
    # A Kubernetes ServiceAccount token the API server vouched for (a
    # TokenReview), not one of the store's; it grants what a join token would.
    kubernetes: bool = False

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


# A token as `verify` needs it: its record and the SHA-256 of its secret.
_Known = tuple[TokenRecord, str]


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
        # While `follow` runs: every token in the store, by id (else None).
        self._mirror: dict[str, _Known] | None = None
        # Ids revoked here whose DELETE event `follow` has not applied yet.
        self._tombstones: set[str] = set()
        # Told the id of each token revoked (here, or elsewhere while following):
        # the xDS server ends the streams opened with it.
        self.on_revoked: Callable[[str], object] | None = None
        # Who vouches for a bearer that is not one of our tokens (on
        # Kubernetes, a projected ServiceAccount token, by TokenReview); None: nobody.
        self.external: Callable[[str], Awaitable[TokenRecord | None]] | None = None

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
            if self._mirror is not None:  # usable before its event arrives
                self._mirror[record.id] = (record, body["secret_sha256"])
            log.info("created %s token %s", scope.value, record.id)
            return text, record
        raise CaError("could not allocate a token id")

    @property
    def following(self) -> bool:
        """Whether `follow` holds every token in memory now."""
        return self._mirror is not None

    async def verify(self, text: str) -> TokenRecord | None:
        """The record of a valid token text; None if malformed, unknown,
        revoked (see the module docstring for when) or the secret is wrong."""
        parsed = parse(text)
        if parsed is None:
            return None if self.external is None else await self.external(text)
        token_id, secret = parsed
        known = await self._lookup(token_id)
        if known is None or not hmac.compare_digest(_digest(secret), known[1]):
            return None
        return known[0]

    async def _lookup(self, token_id: str) -> _Known | None:
        mirror = self._mirror
        if mirror is not None:
            known = mirror.get(token_id)
            if known is not None or token_id in self._tombstones:
                return known
            # Created on another replica a moment ago? Not kept: its event brings it.
            return await self._read(token_id)
        now = self._monotonic()
        cached = self._cache.get(token_id)
        if cached is None or cached.expires <= now:
            known = await self._read(token_id)
            if known is None:
                self._cache.pop(token_id, None)
                return None
            cached = _Cached(known[0], known[1], now + self._cache_seconds)
            self._cache[token_id] = cached
        return cached.record, cached.digest

    async def _read(self, token_id: str) -> _Known | None:
        stored = await self._store.get(KIND, NAMESPACE, token_id)
        return None if stored is None else _known(stored)

    async def follow(self) -> None:
        """Keep every token's record in memory, following the store; runs until
        the store closes (a task for the control plane's life).

        Theory of operation: list the token kind, then watch the store from that
        revision, applying each token's PUT and DELETE; `Compacted` lists again.
        While it runs, `verify` answers from memory: no store read per connecting
        proxy (a restart's reconnect storm was one read each), and a revocation
        from any replica takes effect when its event arrives, not when a cached
        record expires. An id missing from memory is looked up in the store (a
        token created on another replica whose event is still on its way).
        `revoke` here tombstones the id until its DELETE event is applied, so a
        PUT event still queued for it cannot bring it back. When `follow` ends,
        `verify` falls back to cached store reads.
        """
        try:
            while True:
                objects, revision = await self._store.list(KIND, NAMESPACE)
                listed = {obj.name: known for obj in objects
                          if (known := _known(obj)) is not None}
                self._tombstones &= listed.keys()  # the rest were deleted
                self._mirror = {name: known for name, known in listed.items()
                                if name not in self._tombstones}
                try:
                    async for event in self._store.watch(revision):
                        self._apply(event)
                    return  # the store closed
                except Compacted:
                    log.warning("the token watch fell behind the store's history; relisting")
        finally:
            self._mirror = None
            self._tombstones.clear()

    def _apply(self, event: WatchEvent) -> None:
        obj = event.object
        if obj.kind != KIND or obj.namespace != NAMESPACE or self._mirror is None:
            return
        if event.type is EventType.DELETE:
            self._mirror.pop(obj.name, None)
            self._tombstones.discard(obj.name)
            self._revoked(obj.name)
        elif obj.name not in self._tombstones and (known := _known(obj)) is not None:
            self._mirror[obj.name] = known

    async def revoke(self, token_id: str) -> bool:
        """Delete a token (by id, or by its full text); False if there was none."""
        parsed = parse(token_id)
        if parsed is not None:
            token_id = parsed[0]
        self._cache.pop(token_id, None)
        if not _ID.match(token_id):
            return False
        mirror = self._mirror
        if mirror is not None:
            mirror.pop(token_id, None)
            self._tombstones.add(token_id)
        deleted = False
        try:
            await self._store.delete(KIND, NAMESPACE, token_id)
            deleted = True
        except NotFound:
            return False
        finally:
            if mirror is not None and not deleted:  # no DELETE event will clear it
                self._tombstones.discard(token_id)
        log.info("revoked token %s", token_id)
        self._revoked(token_id)
        return True

    def _revoked(self, token_id: str) -> None:
        if self.on_revoked is not None:
            self.on_revoked(token_id)

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


def _known(stored: StoredObject) -> _Known | None:
    try:
        return _decode(stored)
    except (KeyError, TypeError, ValueError) as exc:
        log.error("stored token %s is malformed: %r", stored.name, exc)
        return None


def _decode(stored: StoredObject) -> _Known:
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
