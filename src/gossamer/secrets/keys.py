"""The at-rest keys, and sealing one JSON value with them (AES-256-GCM).

A key is 32 random bytes, written as urlsafe base64 (`gossamer secrets
generate-key`). Its id is the first 8 hex digits of its SHA-256, so a key file
names no ids and a sealed value says which key opens it. A key ring is one or
more keys: the first seals, every one opens. Rotation therefore is: put the new
key first and keep the old one after it on every replica, re-seal
(`gossamer secrets rotate-key`), then drop the old key.

A sealed value is `{"$sealed": "v1:<key id>:<base64 nonce+ciphertext>"}`. The
associated data binds it to its place (kind, namespace, name, field path), so a
value copied into another document or field does not open there.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gossamer.store.base import StoreError

ENV = "GOSSAMER_SECRETS_KEY"
MARKER = "$sealed"
_VERSION = "v1"
_KEY_BYTES = 32
_NONCE_BYTES = 12


class SecretsError(StoreError):
    """A key that cannot be read, or a sealed value no configured key opens."""


@dataclass(frozen=True)
class _Key:
    id: str
    aead: AESGCM


def key_id(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:8]


def generate_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(_KEY_BYTES)).decode("ascii")


class KeyRing:
    """Seals with the first key; opens with whichever key a value names."""

    def __init__(self, raw_keys: Sequence[bytes]) -> None:
        if not raw_keys:
            raise SecretsError("a secrets key ring needs at least one key")
        keys = [_Key(key_id(raw), AESGCM(raw)) for raw in raw_keys]
        self._keys = {key.id: key for key in keys}
        self.primary = keys[0].id
        self.ids = tuple(key.id for key in keys)

    def seal(self, value: Any, place: str) -> dict[str, str]:
        nonce = os.urandom(_NONCE_BYTES)
        plain = json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
        sealed = self._keys[self.primary].aead.encrypt(nonce, plain, place.encode())
        text = base64.b64encode(nonce + sealed).decode("ascii")
        return {MARKER: f"{_VERSION}:{self.primary}:{text}"}

    def open(self, sealed: Mapping[str, Any], place: str) -> Any:
        _version, kid, data = _parts(sealed, place)
        key = self._keys.get(kid)
        if key is None:
            raise SecretsError(f"{place} is sealed with key {kid}, which is not configured "
                               f"(keys: {', '.join(self.ids)})")
        try:
            raw = base64.b64decode(data, validate=True)
            plain = key.aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], place.encode())
        except (InvalidTag, binascii.Error, ValueError) as exc:
            raise SecretsError(f"{place}: key {kid} does not open it (tampered with, or "
                               "moved from another document)") from exc
        return json.loads(plain)


def sealed_key(value: Any) -> str | None:
    """The id of the key that sealed `value`, or None when it is not sealed."""
    if isinstance(value, Mapping) and set(value) == {MARKER}:
        text = value[MARKER]
        if isinstance(text, str) and text.count(":") >= 2:
            return text.split(":", 2)[1]
    return None


def _parts(sealed: Mapping[str, Any], place: str) -> tuple[str, str, str]:
    text = sealed.get(MARKER)
    parts = text.split(":", 2) if isinstance(text, str) else []
    if len(parts) != 3 or parts[0] != _VERSION:
        raise SecretsError(f"{place}: not a sealed value of format {_VERSION}")
    return parts[0], parts[1], parts[2]


def parse_keys(text: str, source: str) -> list[bytes]:
    """Keys, one per line or comma-separated; blank lines and `#` comments skipped."""
    out = []
    for number, item in enumerate(text.replace(",", "\n").splitlines(), 1):
        item = item.split("#", 1)[0].strip()
        if not item:
            continue
        try:
            raw = base64.urlsafe_b64decode(item.encode("ascii"))
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raw = b""
        if len(raw) != _KEY_BYTES:
            raise SecretsError(f"{source}: key {number} is not {_KEY_BYTES} bytes in urlsafe "
                               "base64 (make one with `gossamer secrets generate-key`)")
        out.append(raw)
    if not out:
        raise SecretsError(f"{source}: no key in it")
    return out


def load_keyring(path: Path | None = None,
                 environ: Mapping[str, str] | None = None) -> KeyRing | None:
    """The ring from `path` (`--secrets-key-file`), else from $GOSSAMER_SECRETS_KEY,
    else None (secrets stay plaintext, as before). A key file readable by others is
    refused: it opens the mesh's root of trust."""
    env = os.environ if environ is None else environ
    if path is not None:
        try:
            mode = path.stat().st_mode
            text = path.read_text("ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretsError(f"cannot read the secrets key file {path}: {exc}") from exc
        if mode & 0o077:
            raise SecretsError(f"the secrets key file {path} is readable by others (mode "
                               f"{mode & 0o777:o}): chmod 600 it")
        return KeyRing(parse_keys(text, str(path)))
    if env.get(ENV):
        return KeyRing(parse_keys(env[ENV], f"${ENV}"))
    return None
