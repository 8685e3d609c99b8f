"""`gossamer apply`, `get` and `delete`: resources in the control plane's store."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
import yaml

from gossamer.cli.app import Namespace, Server, app, read_text
from gossamer.cli.client import Api, CliError
from gossamer.model import kind_for, parse_documents


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


_WITH_VIP = ("Service", "ExternalService")


def _wildcard(doc: dict[str, Any]) -> bool:
    """An ExternalService of wildcard hosts has no virtual IP."""
    hosts = doc.get("spec", {}).get("hosts") or []
    return any(isinstance(h, str) and h.startswith("*.") for h in hosts)


def table_columns(kind: str) -> tuple[str, ...]:
    """Services and ExternalServices also show their virtual IP (status.virtualIP)."""
    vip = ("VIRTUAL IP",) if kind in _WITH_VIP else ()
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
        vip = (d.get("status", {}).get("virtualIP", "-" if _wildcard(d) else "<pending>"),
               ) if kind in _WITH_VIP else ()
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


@app.command("export")
def export(workloads: Annotated[bool, typer.Option(
               "--workloads/--no-workloads", help="also the Workloads agents registered "
               "(they come back on their own when their agents heartbeat)")] = False,
           server: Server = None) -> None:
    """Print every resource, as YAML documents `gossamer import` (or apply) takes back.

    Everything users apply, without what the store adds (resourceVersion, status).
    The CA and the tokens are not resources: back them up with the database."""
    api = Api(server)
    docs = []
    for kind in api.call("GET", "/api/v1/kinds"):
        if kind == "Workload" and not workloads:
            continue
        for doc in api.call("GET", f"/api/v1/resources/{kind}"):
            doc.pop("status", None)
            doc.get("metadata", {}).pop("resourceVersion", None)
            docs.append(doc)
    yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)
    print(f"exported {len(docs)} resource(s)", file=sys.stderr)


@app.command("import")
def import_(file: Annotated[str, typer.Option("--file", "-f", help="what `gossamer export` "
                                              "wrote, or - for stdin")],
            server: Server = None) -> None:
    """Apply every resource of an export (checked first: all or nothing)."""
    resources = parse_documents(read_text(file))
    api = Api(server)
    counts: dict[str, int] = {}
    for res in resources:
        result = api.call("POST", "/api/v1/apply", res.to_document())["result"]
        counts[result] = counts.get(result, 0) + 1
    print(f"imported {len(resources)} resource(s): "
          + ", ".join(f"{n} {what}" for what, n in sorted(counts.items())))
