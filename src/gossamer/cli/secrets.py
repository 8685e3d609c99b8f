"""`gossamer secrets`: the key that seals the store's secrets, and its rotation."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from gossamer.cli.app import app
from gossamer.cli.client import CliError

secrets_app = typer.Typer(help="The key that seals the CA's private keys in the store.",
                          no_args_is_help=True)
app.add_typer(secrets_app, name="secrets")

KeyFile = Annotated[Path | None, typer.Option(
    "--secrets-key-file", help="keys, one per line, the first sealing (mode 0600); "
    "default: $GOSSAMER_SECRETS_KEY")]


@secrets_app.command("generate-key")
def generate_key() -> None:
    """Print a new random key (32 bytes, urlsafe base64) for --secrets-key-file."""
    from gossamer.secrets import generate_key as new_key

    print(new_key())


@secrets_app.command("rotate-key")
def rotate_key(
    store: Annotated[str | None, typer.Option(
        "--store", help="the store's URL, as given to the control plane")] = None,
    state_dir: Annotated[Path, typer.Option(
        "--state-dir", help="the SQLite store's directory, unless --store")] = Path(".gossamer"),
    secrets_key_file: KeyFile = None,
) -> None:
    """Re-seal every secret with the first key of the ring (and seal plaintext ones).

    Run it once every replica holds the new key first and the old one after it; when
    it reports nothing left under the old key, drop the old key from every replica."""
    from gossamer.secrets import SealedStore, SecretsError, load_keyring, reseal
    from gossamer.store import StoreError, open_store

    try:
        keys = load_keyring(secrets_key_file)
    except SecretsError as exc:
        raise CliError(str(exc)) from exc
    if keys is None:
        raise CliError("no key: give --secrets-key-file or $GOSSAMER_SECRETS_KEY")

    async def run() -> tuple[int, int]:
        sealed = SealedStore(open_store(store or str(state_dir / "gossamer.db")), keys)
        try:
            report = await reseal(sealed)
        finally:
            await sealed.close()
        return report.sealed, report.unchanged

    try:
        written, unchanged = asyncio.run(run())
    except StoreError as exc:
        raise CliError(f"store: {exc}") from exc
    print(f"sealed {written} document(s) with key {keys.primary}; {unchanged} already were; "
          "every secret is now under that key")
