"""`gossamer capture install`: a pod's capture rules, from its init container.

On Kubernetes only this short-lived container holds NET_ADMIN: it writes the rules
(agent/capture.py, the same ones `gossamer proxy --capture` installs) and exits, and
the sidecar then runs unprivileged with `--capture --capture-installed`. Every
process of the sidecar runs as --proxy-uid, whose traffic the rules leave alone, so
no exception for the control plane is needed.
"""

from __future__ import annotations

from typing import Annotated

import typer

from gossamer.cli.app import app
from gossamer.cli.client import CliError

capture = typer.Typer(no_args_is_help=True, help="Transparent capture's iptables rules.")
app.add_typer(capture, name="capture")


@capture.command("install")
def install(
    inbound_port: Annotated[int, typer.Option(
        "--inbound-port", help="the sidecar's inbound listener; 0: nothing inbound")] = 15006,
    app_port: Annotated[list[int], typer.Option(
        "--app-port", help="a port the app serves: arriving TCP goes to --inbound-port "
        "(repeatable)")] = [],  # noqa: B006
    proxy_uid: Annotated[int, typer.Option(
        "--proxy-uid", help="the uid the sidecar runs as; its traffic is not captured")] = 1337,
    capture_port: Annotated[int, typer.Option(
        "--capture-port", help="the outbound capture listener's port")] = 15001,
    dns_port: Annotated[int, typer.Option(
        "--dns-port", help="the mesh DNS listener's port (UDP)")] = 15053,
    capture_exclude_ports: Annotated[list[str], typer.Option(
        "--capture-exclude-ports", help="outbound TCP ports not captured (comma-separated, "
        "repeatable)")] = [],  # noqa: B006
    capture_exclude_cidrs: Annotated[list[str], typer.Option(
        "--capture-exclude-cidrs", help="outbound destinations not captured, CIDRs "
        "(comma-separated, repeatable)")] = [],  # noqa: B006
) -> None:
    """Install the capture rules in this network namespace and exit (root, NET_ADMIN)."""
    from gossamer.agent import iptables
    from gossamer.agent.capture import CaptureRules
    from gossamer.agent.capturing import CaptureOptions

    try:
        o = CaptureOptions.parse(proxy_uid, capture_exclude_ports, capture_exclude_cidrs,
                                 capture_port, dns_port)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    if any(not 0 < p < 65536 for p in (*app_port, capture_port, dns_port)) \
            or not 0 <= inbound_port < 65536:
        raise CliError("ports must be between 1 and 65535")
    rules = CaptureRules(o.outbound_port, o.dns_port, inbound_port if app_port else 0,
                         tuple(app_port), o.proxy_uid, o.exclude_ports, o.exclude_cidrs)
    try:
        iptables.check_can_capture()
        iptables.install(rules)
    except iptables.CaptureError as exc:
        raise CliError(str(exc)) from exc
    print(f"capture rules installed: outbound tcp -> {o.outbound_port}, dns -> {o.dns_port}"
          + (f", inbound {','.join(map(str, app_port))} -> {inbound_port}" if app_port else ""))
