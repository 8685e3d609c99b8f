"""`gossamer`: the command line. Errors are one line on stderr and exit 1."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from gossamer.cli.client import OPTIONS, Api, CliError
from gossamer.model import InvalidResource, kind_for, parse_documents

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


@app.command()
def apply(file: Annotated[str, typer.Option("--file", "-f", help="YAML file, or - for stdin")],
          server: Server = None) -> None:
    """Create or update resources from a file."""
    resources = parse_documents(read_text(file))  # validate locally first: all or nothing
    api = Api(server)
    for res in resources:
        out = api.call("POST", "/api/v1/apply", res.to_document())
        print(f"{res.kind.lower()}/{res.metadata.name} {out['result']}")
        for warning in out.get("warnings", ()):
            print(f"warning: {res.kind.lower()}/{res.metadata.name}: {warning}",
                  file=sys.stderr)


def table_columns(kind: str) -> tuple[str, ...]:
    """Services also show their virtual IP (status.virtualIP, issue 21)."""
    vip = ("VIRTUAL IP",) if kind == "Service" else ()
    return ("NAMESPACE", "KIND", "NAME", *vip, "REVISION", "STATUS")


def _table(docs: list[dict[str, Any]], kind: str = "") -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for col in table_columns(kind):
        table.add_column(col)
    for d in docs:
        conds = d.get("status", {}).get("conditions", [])
        bad = [f"{c['type']}={c['status']} ({c['reason']})" for c in conds
               if c["status"] != "True"]
        health = d.get("spec", {}).get("health") if d["kind"] == "Workload" else None
        status = "; ".join(bad) or (health or "OK")
        vip = (d.get("status", {}).get("virtualIP", "<pending>"),) if kind == "Service" else ()
        table.add_row(d["metadata"]["namespace"], d["kind"], d["metadata"]["name"], *vip,
                      d["metadata"].get("resourceVersion", ""), status)
    Console(width=200).print(table)


@app.command()
def get(kind: str, name: Annotated[str | None, typer.Argument()] = None,
        namespace: Namespace = "default",
        output: Annotated[str, typer.Option("--output", "-o",
                                            help="table, yaml or json")] = "table",
        all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A")] = False,
        server: Server = None) -> None:
    """Show resources of a kind (Service, Workload, HTTPRoute)."""
    cls = kind_for(kind)
    canonical, namespace = cls.KIND, cls.CLUSTER_NAMESPACE or namespace
    all_namespaces = all_namespaces and cls.CLUSTER_NAMESPACE is None
    api = Api(server)
    if name:
        docs = [api.call("GET", f"/api/v1/resources/{canonical}/{namespace}/{name}")]
    else:
        query = "" if all_namespaces else f"?namespace={namespace}"
        docs = api.call("GET", f"/api/v1/resources/{canonical}{query}")
    if output == "json":
        print(json.dumps(docs[0] if name else docs, indent=2))
    elif output == "yaml":
        print(yaml.safe_dump_all(docs, sort_keys=False), end="")
    elif output == "table":
        _table(docs, canonical)
    else:
        raise CliError(f"unknown output format {output!r}; use table, yaml or json")


@app.command()
def delete(kind: str, name: str, namespace: Namespace = "default", server: Server = None) -> None:
    """Delete one resource."""
    cls = kind_for(kind)
    canonical, namespace = cls.KIND, cls.CLUSTER_NAMESPACE or namespace
    Api(server).call("DELETE", f"/api/v1/resources/{canonical}/{namespace}/{name}")
    print(f"{canonical.lower()}/{name} deleted")


def main() -> None:
    # The agent forks Envoy and the app (with a pre-exec hook) while gRPC threads
    # run; gRPC's own fork handlers can abort the child then, and log every fork.
    # Our children exec at once, so they need none of it. Must precede `import grpc`.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    from gossamer.cli import (  # noqa: F401 - registers commands
        commands,
        dashboard,
        explain,
        golden,
        k8s,
        local,
        proxyadmin,
        security,
        tap,
        top,
    )

    try:
        app()
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except InvalidResource as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
