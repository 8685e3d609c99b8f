"""What the CLI reads of sidecars' Envoy admins (`proxy-config`, `identity`), through the
control plane's API, so it works for sidecars on any host from anywhere the API is
reachable; and the agent's ports for other hosts (`gossamer proxy`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from gossamer.cli.client import Api, CliError
from gossamer.proxyadmin import configdump

# A config dump of a large mesh takes the control plane a while to read and pass on.
DUMP_TIMEOUT = 60.0


def off_host_port(asked: int | None, option: str) -> int | None:
    """`gossamer proxy`'s --admin-tls-port or --prometheus-port, checked; None (not
    given) is settled by the agent (agent/ports.py, off_host_port)."""
    if asked is not None and not 0 <= asked <= 65535:
        raise CliError(f"{option} {asked}: a port is 1-65535 (0: off)")
    return asked


def node_id(api: Api, workload: str, namespace: str) -> str:
    """The node id of the workload's connected sidecar."""
    for p in api.call("GET", "/api/v1/proxies"):
        meta = p.get("metadata") or {}
        if meta.get("workload") == workload and meta.get("namespace", "default") == namespace \
                and p.get("connected"):
            return str(p["node_id"])
    raise CliError(f"no connected proxy for workload {namespace}/{workload}")


def config_dump(server: str | None, workload: str, namespace: str,
                section: str) -> dict[str, Any]:
    if section not in configdump.CHOICES:
        raise CliError(f"unknown section {section!r}; use {', '.join(configdump.SECTIONS)} "
                       "or all")
    api = Api(server, timeout=DUMP_TIMEOUT)
    node = quote(node_id(api, workload, namespace), safe="")
    dump: dict[str, Any] = api.call("GET", f"/api/v1/proxies/{node}/config_dump?section={section}")
    return dump


def certs(server: str | None, workload: str, namespace: str) -> dict[str, Any]:
    api = Api(server)
    node = quote(node_id(api, workload, namespace), safe="")
    found: dict[str, Any] = api.call("GET", f"/api/v1/proxies/{node}/certs")
    return found
