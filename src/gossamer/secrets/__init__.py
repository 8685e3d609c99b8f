"""Secrets at rest: fields of stored documents sealed with a key the replicas hold."""

from gossamer.secrets.fields import SECRET_FIELDS, SecretField
from gossamer.secrets.keys import KeyRing, SecretsError, generate_key, load_keyring
from gossamer.secrets.store import SealedStore, reseal

__all__ = [
    "SECRET_FIELDS",
    "KeyRing",
    "SealedStore",
    "SecretField",
    "SecretsError",
    "generate_key",
    "load_keyring",
    "reseal",
]
