"""A store layer that seals secret fields on the way in and opens them on the way out.

Theory of operation: `SealedStore` wraps any ResourceStore. For the kinds in its
field list it replaces each secret value with a sealed one before `put`, and
opens sealed values in everything it returns (get, list, delete, watch), so
callers above it (the CA, the API) only ever see plaintext and the database,
its dumps and its read-only users only ever see ciphertext. Other kinds pass
through untouched.

Sealing draws a fresh nonce, so the same plaintext never seals to the same
bytes; to keep the contract's no-op puts, a put of a secret kind first reads
the stored document and returns it when its opened body equals the new one.

Values stored before a key was configured stay readable (a plaintext value is
returned as is) and are sealed by `reseal`, which the control plane runs at
start and `gossamer secrets rotate-key` runs on demand: it re-seals every value
that is plaintext or sealed with a key other than the first. Without any key,
writes stay plaintext and a sealed value fails to read with one SecretsError.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, replace
from typing import Any

from gossamer.secrets.fields import SECRET_FIELDS, SecretField, transform, values
from gossamer.secrets.keys import KeyRing, SecretsError, sealed_key
from gossamer.store.base import Conflict, ResourceStore, StoredObject, WatchEvent

log = logging.getLogger(__name__)
# Reads and writes one reseal tries per document while other writers keep winning.
_RESEAL_ATTEMPTS = 5


@dataclass(frozen=True)
class ResealReport:
    sealed: int  # documents written
    unchanged: int  # documents already sealed with the first key


class SealedStore:
    """`inner` with the values named by `fields` sealed by `keys` (None: no key)."""

    def __init__(self, inner: ResourceStore, keys: KeyRing | None,
                 fields: Iterable[SecretField] = SECRET_FIELDS) -> None:
        self.inner = inner
        self.keys = keys
        self._paths: dict[str, list[tuple[str, ...]]] = {}
        for field in fields:
            self._paths.setdefault(field.kind, []).append(field.path)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(sorted(self._paths))

    async def get(self, kind: str, namespace: str, name: str) -> StoredObject | None:
        found = await self.inner.get(kind, namespace, name)
        return None if found is None else self.open(found)

    async def list(
        self, kind: str | None = None, namespace: str | None = None
    ) -> tuple[list[StoredObject], int]:
        objects, revision = await self.inner.list(kind, namespace)
        return [self.open(o) for o in objects], revision

    async def put(
        self,
        kind: str,
        namespace: str,
        name: str,
        body: dict[str, Any],
        expected_revision: int | None = None,
    ) -> StoredObject:
        if kind not in self._paths:
            return await self.inner.put(kind, namespace, name, body, expected_revision)
        current = await self.get(kind, namespace, name)
        if (current is not None and expected_revision in (None, current.revision)
                and current.body == body):
            return current  # a no-op put, as the contract asks
        stored = await self.inner.put(kind, namespace, name,
                                      self.seal(kind, namespace, name, body), expected_revision)
        return replace(stored, body=self.open(stored).body)

    async def delete(
        self, kind: str, namespace: str, name: str, expected_revision: int | None = None
    ) -> StoredObject:
        return self.open(await self.inner.delete(kind, namespace, name, expected_revision))

    async def revision(self) -> int:
        return await self.inner.revision()

    def watch(self, from_revision: int) -> AsyncIterator[WatchEvent]:
        return self._watch(self.inner.watch(from_revision))

    async def _watch(self, events: AsyncIterator[WatchEvent]) -> AsyncIterator[WatchEvent]:
        async for event in events:
            try:
                opened = self.open(event.object)
            except SecretsError as exc:
                # A watcher must not die of one document; readers (the CA) get the error.
                log.error("watch: %s", exc)
                opened = event.object
            yield replace(event, object=opened)

    async def close(self) -> None:
        await self.inner.close()

    def seal(self, kind: str, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        keys = self.keys
        if keys is None:
            return body
        for path in self._paths.get(kind, ()):
            body = transform(body, path, lambda value, where: keys.seal(
                value, _place(kind, namespace, name, where)))
        return body

    def open(self, stored: StoredObject) -> StoredObject:
        paths = self._paths.get(stored.kind)
        if not paths:
            return stored
        body = stored.body
        for path in paths:
            body = transform(body, path, lambda value, where: self._open_value(
                value, _place(stored.kind, stored.namespace, stored.name, where)))
        return stored if body is stored.body else replace(stored, body=body)

    def _open_value(self, value: Any, place: str) -> Any:
        kid = sealed_key(value)
        if kid is None:
            return value  # stored before a key was configured
        if self.keys is None:
            raise SecretsError(f"{place} is sealed (key {kid}) but no secrets key is "
                               "configured: give --secrets-key-file or $GOSSAMER_SECRETS_KEY")
        return self.keys.open(value, place)

    def current(self, stored: StoredObject) -> bool:
        """Whether every secret value of this raw document is sealed with the first key."""
        primary = self.keys.primary if self.keys is not None else None
        return all(sealed_key(value) == primary
                   for path in self._paths.get(stored.kind, ())
                   for value in values(stored.body, path))


async def reseal(store: SealedStore) -> ResealReport:
    """Seal with the first key every secret value that is plaintext or under another
    key; with optimistic concurrency, so replicas doing it at once write each once."""
    if store.keys is None:
        raise SecretsError("no secrets key is configured: give --secrets-key-file or "
                           "$GOSSAMER_SECRETS_KEY")
    sealed = unchanged = 0
    for kind in store.kinds:
        objects, _ = await store.inner.list(kind)
        for raw in objects:
            wrote = await _reseal_one(store, raw)
            sealed += wrote
            unchanged += not wrote
    return ResealReport(sealed, unchanged)


async def _reseal_one(store: SealedStore, raw: StoredObject) -> bool:
    found: StoredObject | None = raw
    for _ in range(_RESEAL_ATTEMPTS):
        if found is None or store.current(found):
            return False
        body = store.open(found).body
        try:
            await store.inner.put(found.kind, found.namespace, found.name,
                                  store.seal(found.kind, found.namespace, found.name, body),
                                  expected_revision=found.revision)
        except Conflict:
            found = await store.inner.get(found.kind, found.namespace, found.name)
            continue
        log.info("sealed the secrets of %s %s/%s with key %s", found.kind, found.namespace,
                 found.name, store.keys.primary if store.keys else "-")
        return True
    raise SecretsError(f"{raw.kind} {raw.namespace}/{raw.name} kept changing while it was "
                       "re-sealed; run it again")


def _place(kind: str, namespace: str, name: str, where: str) -> str:
    return f"{kind}/{namespace}/{name}/{where}"
