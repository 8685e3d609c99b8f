"""What the CLI reads of sidecars' Envoy admins (`proxy-config`, `identity`), through the
control plane's API, so it works for sidecars on any host from anywhere the API is
reachable; and the agent's ports for other hosts (`gossamer proxy`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from gossamer.cli.client import Api, CliError
from gossamer.proxyadmin import configdump
from gossamer.proxyadmin.target import DEFAULT_ADMIN_TLS_PORT, DEFAULT_PROMETHEUS_PORT

# A config dump of a large mesh takes the control plane a while to read and pass on.
DUMP_TIMEOUT = 60.0


def off_host_ports(admin_tls_port: int | None, prometheus_port: int | None,
                   address: str) -> dict[str, int]:
    """`gossamer proxy`'s --admin-tls-port and --prometheus-port: the defaults on a host
    address, off on loopback (local mode), as asked otherwise."""
    from gossamer.agent.ports import default_off_loopback

    out = {}
    for key, asked, option, default in (
            ("admin_tls_port", admin_tls_port, "--admin-tls-port", DEFAULT_ADMIN_TLS_PORT),
            ("prometheus_port", prometheus_port, "--prometheus-port", DEFAULT_PROMETHEUS_PORT)):
        if asked is not None and not 0 <= asked <= 65535:
            raise CliError(f"{option} {asked}: a port is 1-65535 (0: off)")
        out[key] = default_off_loopback(asked, address, default)
    return out


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
