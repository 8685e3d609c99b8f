"""`gossamer token`, `gossamer identity`, `gossamer authz`, `gossamer ca`."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

import typer

from gossamer.cli.app import Server, app
from gossamer.cli.client import Api, CliError

token_app = typer.Typer(help="Create, list and revoke API and join tokens.", no_args_is_help=True)
authz_app = typer.Typer(help="Ask how the mesh's authorization policies decide.",
                        no_args_is_help=True)
ca_app = typer.Typer(help="The mesh certificate authority.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(authz_app, name="authz")
app.add_typer(ca_app, name="ca")


@token_app.command("create")
def token_create(
    service: Annotated[str | None, typer.Option("--service", help="join token: the service "
                                                "identity it grants")] = None,
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = "default",
    service_account: Annotated[str | None, typer.Option("--service-account",
                                                        help="default: the service")] = None,
    scope: Annotated[str, typer.Option("--scope", help="join | read | admin")] = "join",
    description: Annotated[str, typer.Option("--description")] = "",
    server: Server = None,
) -> None:
    """Print a new token (shown once). A join token lets one agent run as one service."""
    if scope not in ("join", "read", "admin"):
        raise CliError("--scope must be join, read or admin")
    if scope == "join" and not service:
        raise CliError("a join token needs --service")
    out = Api(server).call("POST", "/api/v1/tokens", {
        "scope": scope, "service": service, "namespace": namespace,
        "service_account": service_account, "description": description})
    print(out["token"])
    if out.get("identity"):
        typer.echo(f"# grants {out['identity']}", err=True)


@token_app.command("list")
def token_list(server: Server = None) -> None:
    """Token ids and scopes (never the secrets)."""
    for t in Api(server).call("GET", "/api/v1/tokens"):
        who = f" {t['namespace']}/{t['account']}" if t.get("account") else ""
        print(f"{t['id']}  {t['scope']}{who}  {t['description']}")


@token_app.command("revoke")
def token_revoke(token_id: str, server: Server = None) -> None:
    Api(server).call("DELETE", f"/api/v1/tokens/{token_id}")
    print(f"token {token_id} revoked")


@app.command()
def identity(workload: str, namespace: Annotated[str, typer.Option("--namespace", "-n")] =
             "default", server: Server = None) -> None:
    """The certificate a workload's sidecar serves now: SPIFFE ID, serial, expiry."""
    from gossamer.cli.proxyadmin import certs as read_certs

    certs = read_certs(server, workload, namespace)
    leaf = _leaf(certs)
    if leaf is None:
        raise CliError(f"{workload}'s sidecar has no workload certificate yet")
    uris = [s["uri"] for s in leaf.get("subject_alt_names", []) if "uri" in s]
    print(f"spiffe id:  {', '.join(uris)}")
    print(f"serial:     {leaf.get('serial_number')}")
    print(f"valid from: {leaf.get('valid_from')}")
    expires = str(leaf.get("expiration_time", ""))
    left = ""
    if expires:
        when = datetime.fromisoformat(expires.replace("Z", "+00:00"))
        left = f" (in {int((when - datetime.now(UTC)).total_seconds())} s)"
    print(f"expires:    {expires}{left}")


def _leaf(certs: dict[str, Any]) -> dict[str, Any] | None:
    for entry in certs.get("certificates", []):
        for cert in entry.get("cert_chain", []):
            if any("uri" in s for s in cert.get("subject_alt_names", [])):
                found: dict[str, Any] = cert
                return found
    return None


@authz_app.command("check")
def authz_check(
    source: Annotated[str | None, typer.Option("--from", help="calling service (omit: a "
                                               "caller without mesh identity)")] = None,
    to: Annotated[str, typer.Option("--to", help="destination service")] = "",
    path: Annotated[str, typer.Option("--path")] = "/",
    method: Annotated[str, typer.Option("--method")] = "GET",
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="of --to")] = "default",
    from_namespace: Annotated[str, typer.Option("--from-namespace")] = "default",
    port: Annotated[int, typer.Option("--port", help="service port (default: its first)")] = 0,
    server: Server = None,
) -> None:
    """Would this request be allowed? Which policy decides, and why. Exit 1 when denied."""
    if not to:
        raise CliError("--to is required")
    query = {"to": to, "namespace": namespace, "path": path, "method": method.upper(),
             "source_namespace": from_namespace, "port": str(port)}
    if source:
        query["source"] = source
    out = Api(server).call("GET", "/api/v1/authz/check?" + urlencode(query))
    verdict = "ALLOWED" if out["allowed"] else f"DENIED ({out['status']})"
    print(f"{verdict}: {out['reason']}" + (f" [policy {out['policy']}]" if out["policy"] else ""))
    if not out["allowed"]:
        raise typer.Exit(1)


@ca_app.command("status")
def ca_status(server: Server = None) -> None:
    """Trust domain, rotation phase, and the roots in the trust bundle."""
    out = Api(server).call("GET", "/api/v1/ca")
    print(json.dumps({k: v for k, v in out.items() if k != "bundle_pem"}, indent=2))


@ca_app.command("rotate")
def ca_rotate(step: Annotated[str, typer.Argument(help="begin | switch | finish")],
              server: Server = None) -> None:
    """Root rotation, one step at a time: `begin` adds a new root to every trust bundle;
    once every proxy has it, `switch` signs with the new root; once every workload has
    renewed, `finish` drops the old root."""
    if step not in ("begin", "switch", "finish"):
        raise CliError("step must be begin, switch or finish")
    out = Api(server).call("POST", "/api/v1/ca/rotate", {"step": step})
    print(f"phase {out['phase']}, bundle {out['bundle_version']}")


@ca_app.command("bundle")
def ca_bundle(server: Server = None, ca_fingerprint: Annotated[str | None, typer.Option(
        "--ca-fingerprint", help="on a host without the bundle: fetch it unauthenticated "
        "and print it only if it holds the certificate of this SHA-256")] = None) -> None:
    """Print the trust bundle (PEM): what agents need as --ca-file. Public data."""
    if ca_fingerprint is None:
        print(Api(server).call("GET", "/api/v1/ca")["bundle_pem"], end="")
        return
    from gossamer.agent.join import JoinError, trust_bundle
    from gossamer.cli.client import server_url

    try:
        bundle = asyncio.run(trust_bundle(server_url(server), None, ca_fingerprint, 10.0))
    except JoinError as exc:
        raise CliError(str(exc)) from exc
    print(bundle, end="")


@ca_app.command("fingerprint")
def ca_fingerprint(server: Server = None, file: Annotated[str | None, typer.Option(
        "--file", "-f", help="a PEM bundle to read instead of asking the control plane "
        "(e.g. <state-dir>/ca-bundle.pem)")] = None) -> None:
    """The SHA-256 fingerprint of each root in the trust bundle, one per line: what
    `gossamer proxy --ca-fingerprint` pins."""
    from gossamer.ca import fingerprint
    from gossamer.cli.app import read_text

    bundle = read_text(file) if file else Api(server).call("GET", "/api/v1/ca")["bundle_pem"]
    try:
        digests = fingerprint.of_bundle(bundle)
    except fingerprint.BadBundle as exc:
        raise CliError(f"{file or 'the trust bundle'}: {exc}") from exc
    for digest in digests:
        print(fingerprint.show(digest))
