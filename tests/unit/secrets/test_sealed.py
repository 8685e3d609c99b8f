"""Secrets at rest (secrets/): the key ring, and the store layer sealing the CA's keys."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gossamer.ca.authority import MeshCA
from gossamer.secrets import KeyRing, SealedStore, SecretField, SecretsError, load_keyring
from gossamer.secrets.keys import MARKER, generate_key
from gossamer.secrets.store import reseal
from gossamer.store.memory import MemoryStore

OLD_KEY, NEW_KEY = os.urandom(32), os.urandom(32)
OLD, NEW = KeyRing([OLD_KEY]), KeyRing([NEW_KEY])

TD = "example.org"


def raw_text(inner: MemoryStore) -> str:
    return json.dumps([o.body for o in inner._objects.values()])


def test_a_sealed_value_opens_only_in_its_place_and_with_its_key() -> None:
    sealed = OLD.seal({"tls.key": "secret"}, "Secret/default/web/data")
    assert "secret" not in json.dumps(sealed)
    assert OLD.open(sealed, "Secret/default/web/data") == {"tls.key": "secret"}
    with pytest.raises(SecretsError, match="moved from another document"):
        OLD.open(sealed, "Secret/default/other/data")
    with pytest.raises(SecretsError, match="not configured"):
        NEW.open(sealed, "Secret/default/web/data")
    both = KeyRing([NEW_KEY, OLD_KEY])
    assert both.open(sealed, "Secret/default/web/data") == {"tls.key": "secret"}


def test_keys_are_read_from_a_private_file_or_the_environment(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "key"
    path.write_text(f"# the mesh's key\n{key}\n")
    path.chmod(0o644)
    with pytest.raises(SecretsError, match="readable by others"):
        load_keyring(path)
    path.chmod(0o600)
    from_file = load_keyring(path)
    from_env = load_keyring(None, {"GOSSAMER_SECRETS_KEY": key})
    assert from_file is not None
    assert from_env is not None
    assert from_file.primary == from_env.primary
    assert load_keyring(None, {}) is None
    with pytest.raises(SecretsError, match="key 1 is not 32 bytes"):
        load_keyring(None, {"GOSSAMER_SECRETS_KEY": "c2hvcnQ="})


async def test_the_ca_keys_never_reach_the_store_in_plaintext() -> None:
    inner = MemoryStore()
    ca = await MeshCA.open(SealedStore(inner, OLD), TD)
    assert "PRIVATE KEY" not in raw_text(inner)
    assert MARKER in raw_text(inner)
    # Also not in the history a watcher (or the events table) replays.
    events = []
    async for event in inner.watch(0):
        events.append(event)
        break
    assert "PRIVATE KEY" not in json.dumps(events[0].object.body)
    again = await MeshCA.open(SealedStore(inner, OLD), TD)
    assert again.signer.key_pem() == ca.signer.key_pem()
    with pytest.raises(SecretsError, match="no secrets key is configured"):
        await MeshCA.open(SealedStore(inner, None), TD)
    with pytest.raises(SecretsError, match="not configured"):
        await MeshCA.open(SealedStore(inner, NEW), TD)


async def test_a_plaintext_store_keeps_working_and_is_sealed_by_reseal() -> None:
    inner = MemoryStore()
    ca = await MeshCA.open(inner, TD)  # a store from before keys existed
    assert "PRIVATE KEY" in raw_text(inner)
    sealed = SealedStore(inner, OLD)
    assert (await MeshCA.open(sealed, TD)).signer.key_pem() == ca.signer.key_pem()
    assert (await reseal(sealed)).sealed == 1
    assert "PRIVATE KEY" not in raw_text(inner)
    assert (await reseal(sealed)).sealed == 0  # nothing left to do: no write
    assert (await MeshCA.open(SealedStore(inner, OLD), TD)).signer.key_pem() == ca.signer.key_pem()


async def test_rotating_the_key_reseals_everything_under_the_new_one() -> None:
    inner = MemoryStore()
    ca = await MeshCA.open(SealedStore(inner, OLD), TD)
    await ca.begin_root_rotation()  # two roots, two sealed keys
    rotating = SealedStore(inner, KeyRing([NEW_KEY, OLD_KEY]))
    report = await reseal(rotating)
    assert (report.sealed, report.unchanged) == (1, 0)
    reopened = await MeshCA.open(SealedStore(inner, NEW), TD)  # the old key is gone
    assert [r.key_pem() for r in reopened.state.roots] == [r.key_pem() for r in ca.state.roots]


async def test_a_put_of_the_same_secrets_uses_no_revision() -> None:
    store = SealedStore(MemoryStore(), OLD, [SecretField("Secret", ("data",))])
    body = {"type": "kubernetes.io/tls", "data": {"tls.key": "k", "tls.crt": "c"}}
    first = await store.put("Secret", "default", "web", body)
    again = await store.put("Secret", "default", "web", body)
    assert again.revision == first.revision == await store.revision()
    got = await store.get("Secret", "default", "web")
    assert got is not None
    assert again.body == body == got.body
    raw = await store.inner.get("Secret", "default", "web")
    assert raw is not None
    assert raw.body["type"] == "kubernetes.io/tls"
    assert set(raw.body["data"]) == {MARKER}
    assert OLD.seal(body, "p") != OLD.seal(body, "p")


async def test_tls_secrets_are_sealed_by_default() -> None:
    """A Gateway's certificate key is as sensitive as the CA's: the default field list
    seals every Secret's `data`."""
    store = SealedStore(MemoryStore(), OLD)
    body = {"type": "kubernetes.io/tls", "data": {"tls.key": "a2V5LXBlbQ==", "tls.crt": "Yw=="}}
    await store.put("Secret", "default", "web", body)
    assert "a2V5LXBlbQ==" not in raw_text(store.inner)
    got = await store.get("Secret", "default", "web")
    assert got is not None
    assert got.body == body
