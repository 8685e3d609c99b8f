"""What `gossamer proxy-config` shows of a sidecar's `/config_dump` (pure).

The dump is read by the control plane (API `/api/v1/proxies/{node}/config_dump`)
and handed to any caller with read scope, so credentials are taken out first:
Envoy redacts private keys itself, but not the join token the bootstrap sends
as gRPC metadata on the xDS stream (`initial_metadata`), which would let a
reader act as every workload's agent.
"""

from __future__ import annotations

from typing import Any

# An unscoped sidecar of a large mesh dumps tens of MB.
CONFIG_DUMP_LIMIT = 256 * 1024 * 1024
SECTIONS = {"clusters": "dynamic_active_clusters", "listeners": "dynamic_listeners",
            "routes": "dynamic_route_configs", "endpoints": "dynamic_endpoint_configs"}
CHOICES = (*SECTIONS, "all")
REDACTED = "[redacted]"


class BadSection(ValueError):
    pass


def target(section: str) -> str:
    """The admin path to read for `section` (endpoints only with `include_eds`)."""
    if section not in CHOICES:
        raise BadSection(f"unknown section {section!r}; use {', '.join(SECTIONS)} or all")
    return "/config_dump" + ("?include_eds" if section in ("endpoints", "all") else "")


def select(dump: Any, section: str) -> dict[str, Any]:
    """The dump's config kinds (`dynamic_listeners`, ...) the section asks for, redacted."""
    out: dict[str, Any] = {}
    for config in dump.get("configs", []) if isinstance(dump, dict) else []:
        for key, value in config.items():
            if key != "@type" and (section == "all" or key == SECTIONS[section]):
                out[key] = redact(value)
    return out


def redact(value: Any) -> Any:
    """`value` with the value of every `initial_metadata` entry replaced."""
    if isinstance(value, list):
        return [redact(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        if key == "initial_metadata" and isinstance(item, list):
            out[key] = [{**m, "value": REDACTED} if isinstance(m, dict) else REDACTED
                        for m in item]
        else:
            out[key] = redact(item)
    return out
