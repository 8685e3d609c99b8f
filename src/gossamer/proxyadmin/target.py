"""Where a sidecar's admin is reached, from its node metadata (pure; the agent writes
these keys, contract/node.py, the control plane and `gossamer prometheus-config` read
them).

`admin_tls_address`/`admin_tls_port`: the `gossamer_admin` mTLS listener;
`prometheus_address`/`prometheus_port`: the `/stats/prometheus`-only listener;
`admin_port`: Envoy's own admin, on the sidecar's loopback. A sidecar on
loopback itself (`inbound_address`; local mode, where the control plane runs on
the same machine) is reached on that loopback admin. One on another address
without the mTLS listener is not reached at all: its loopback is not ours, and
dialling our own would read some other process.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gossamer.contract.node import (
    ADMIN_PORT,
    ADMIN_TLS_ADDRESS,
    ADMIN_TLS_PORT,
    PROMETHEUS_ADDRESS,
    PROMETHEUS_PORT,
)
from gossamer.envoy.admin import PeerTls

ADMIN_TLS_LISTENER = "gossamer_admin"
PROMETHEUS_LISTENER = "gossamer_prometheus"
ADMIN_CLUSTER = "gossamer_admin_loopback"
DEFAULT_ADMIN_TLS_PORT = 15091
DEFAULT_PROMETHEUS_PORT = 15090
PROMETHEUS_PATH = "/stats/prometheus"
LOOPBACK = "127.0.0.1"


# What `gossamer_admin` passes on to Envoy's admin: (method, match, path), match
# being Envoy's route match kind. Everything else is answered 403 by the listener.
ALLOWED: tuple[tuple[str, str, str], ...] = (
    ("GET", "prefix", "/stats"),
    ("GET", "prefix", "/config_dump"),
    ("GET", "path", "/clusters"),
    ("GET", "path", "/certs"),
    ("GET", "path", "/ready"),
    ("GET", "path", "/server_info"),
    ("POST", "path", "/tap"),
)


@dataclass(frozen=True)
class AdminTarget:
    """One sidecar's admin as the control plane dials it; `tls` None: plain, on loopback."""

    host: str
    port: int
    tls: PeerTls | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" + (" (mTLS)" if self.tls else "")


def _port(meta: Mapping[str, Any], key: str) -> int | None:
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) <= 0:
        return None
    return int(value)


def tls_admin(meta: Mapping[str, Any]) -> tuple[str, int] | None:
    """The `gossamer_admin` listener's address, when the sidecar serves one."""
    port, host = _port(meta, ADMIN_TLS_PORT), meta.get(ADMIN_TLS_ADDRESS)
    return (host, port) if port and isinstance(host, str) and host else None


def on_loopback(meta: Mapping[str, Any]) -> bool:
    """Whether the sidecar serves on loopback (local mode): its address, as the agent
    reports it (`inbound_address`; absent means loopback, as translation reads it)."""
    address = meta.get("inbound_address") or LOOPBACK
    try:
        return ipaddress.ip_address(str(address)).is_loopback
    except ValueError:
        return address == "localhost"


def loopback_admin(meta: Mapping[str, Any]) -> tuple[str, int] | None:
    """Envoy's own admin, for a sidecar on this machine's loopback (local mode)."""
    port = _port(meta, ADMIN_PORT)
    return (LOOPBACK, port) if port and on_loopback(meta) else None


def prometheus_target(meta: Mapping[str, Any]) -> tuple[str, int] | None:
    """Where Prometheus scrapes `/stats/prometheus`: the plain listener on the workload's
    address, else (local mode) the loopback admin, which serves that path too."""
    port, host = _port(meta, PROMETHEUS_PORT), meta.get(PROMETHEUS_ADDRESS)
    if port and isinstance(host, str) and host:
        return host, port
    return loopback_admin(meta)
