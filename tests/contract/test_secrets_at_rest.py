"""Secrets at rest on the shared PostgreSQL store: what a dump of the database (or a
read-only user) sees of the mesh CA, migration of a plaintext store, key rotation."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from gossamer.controlplane.server import ControlPlane, ControlPlaneOptions
from gossamer.secrets import KeyRing, generate_key
from gossamer.secrets.keys import parse_keys
from gossamer.store.postgres import PostgresStore
from tests.postgres_server import PostgresServer


def dump(server: PostgresServer, url: str) -> str:
    """Every stored body and event of the CA, as a database dump holds them."""
    database = url.split("/")[3].split("?")[0]
    rows = server.execute("SELECT body FROM gossamer_resources WHERE kind = '_CA' UNION ALL "
                          "SELECT body FROM gossamer_events WHERE kind = '_CA'", database)
    assert rows
    return "\n".join(str(row[0]) for row in rows)


async def start(url: str, tmp_path: Path, keys: KeyRing | None) -> ControlPlane:
    plane = ControlPlane(ControlPlaneOptions(state_dir=tmp_path, xds_port=0, api_port=0,
                                             secrets=keys), store=PostgresStore(url))
    await plane.start()
    return plane


async def test_the_database_never_holds_the_ca_keys_in_plaintext(
        postgres_server: PostgresServer, postgres_url: str, tmp_path: Path) -> None:
    plane = await start(postgres_url, tmp_path, KeyRing(parse_keys(generate_key(), "k")))
    try:
        assert plane.ca is not None
        key_pem = plane.ca.signer.key_pem()
        await plane.ca.begin_root_rotation()  # a second root, a second sealed key
    finally:
        await plane.stop()
    text = dump(postgres_server, postgres_url)
    assert "PRIVATE KEY" not in text
    assert key_pem not in text
    assert "$sealed" in text


async def test_a_plaintext_store_is_sealed_at_start_and_the_key_rotated(
        postgres_server: PostgresServer, postgres_url: str, tmp_path: Path) -> None:
    plane = await start(postgres_url, tmp_path, None)  # a store from before keys
    assert plane.ca is not None
    bundle = plane.ca.bundle_pem()
    await plane.stop()
    assert "PRIVATE KEY" in dump(postgres_server, postgres_url)

    old, new = generate_key(), generate_key()
    plane = await start(postgres_url, tmp_path, KeyRing(parse_keys(old, "k")))
    assert plane.ca is not None
    assert plane.ca.bundle_pem() == bundle
    await plane.stop()
    current = dump(postgres_server, postgres_url).split("\n")[0]
    assert "PRIVATE KEY" not in current

    rotated = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gossamer", "secrets", "rotate-key", "--store", postgres_url],
        env={**os.environ, "GOSSAMER_SECRETS_KEY": f"{new},{old}"},
        capture_output=True, text=True, timeout=60, check=False)
    assert rotated.returncode == 0, rotated.stderr
    new_id = KeyRing(parse_keys(new, "k")).primary
    assert f"sealed 1 document(s) with key {new_id}" in rotated.stdout

    plane = await start(postgres_url, tmp_path, KeyRing(parse_keys(new, "k")))  # old key gone
    try:
        assert plane.ca is not None
        assert plane.ca.bundle_pem() == bundle
    finally:
        await plane.stop()
