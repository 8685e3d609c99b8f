"""The `gossamer` Typer app, and what every command module shares: the options
every client command takes (and the root command's), and reading a file argument."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from gossamer.cli.client import OPTIONS, CliError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Gossamer service mesh.")
Server = Annotated[str | None, typer.Option("--server", help="control-plane API URL "
                                            "(default $GOSSAMER_SERVER or http://127.0.0.1:15080)")]
Namespace = Annotated[str, typer.Option("--namespace", "-n")]


@app.callback()
def _options(ca_file: Annotated[Path | None, typer.Option(
        "--ca-file", envvar="GOSSAMER_CA_FILE", show_envvar=True,
        help="PEM bundle that verifies an https:// control plane (before the command)")]
        = None) -> None:
    OPTIONS.ca_file = ca_file


def read_text(path: str) -> str:
    """A file (or stdin for `-`) as UTF-8 text, or one line saying why not."""
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        what = "standard input" if path == "-" else path
        raise CliError(f"{what} is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset "
                       f"{exc.start} ({exc.reason})") from exc
