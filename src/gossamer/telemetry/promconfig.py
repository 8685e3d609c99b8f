"""A Prometheus scrape configuration for the mesh, from the control plane's proxy list.

Two jobs: the control plane's own `/metrics`, and every connected sidecar's
Envoy `/stats/prometheus` (its admin endpoint, on the sidecar's host) labelled
with the workload's namespace, service and workload, so PromQL can group Envoy's
own stat names by who emitted them. The sidecar targets are static, or written
to a file_sd file that Prometheus re-reads: run the command again (e.g. from
cron) and the file follows the mesh without restarting Prometheus.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

SIDECAR_JOB = "gossamer-sidecars"
CONTROL_PLANE_JOB = "gossamer-control-plane"


class BadServer(ValueError):
    """The control plane URL has no host:port Prometheus can scrape."""


def sidecar_targets(proxies: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """file_sd entries: one per connected proxy that reports an admin port."""
    out = []
    for p in proxies:
        meta = p.get("metadata", {})
        port = meta.get("admin_port")
        if not p.get("connected") or not isinstance(port, int | float) or int(port) <= 0:
            continue
        host = str(meta.get("admin_address") or "127.0.0.1")
        out.append({"targets": [f"{host}:{int(port)}"], "labels": {
            "namespace": str(meta.get("namespace", "default")),
            "service": str(meta.get("service", "")),
            "workload": str(meta.get("workload", p.get("node_id", ""))),
            "node_id": str(p.get("node_id", ""))}})
    return sorted(out, key=lambda t: t["labels"]["node_id"])


def scrape_config(server: str, proxies: Iterable[Mapping[str, Any]], *,
                  interval: str = "15s", file_sd: str | None = None) -> dict[str, Any]:
    """The whole prometheus.yml; with `file_sd`, sidecars come from that file."""
    url = urlsplit(server)
    if not url.hostname or not url.port:
        raise BadServer(f"control plane URL {server!r} needs a host and a port")
    control_plane = {"job_name": CONTROL_PLANE_JOB, "scheme": url.scheme or "http",
                     "metrics_path": "/metrics",
                     "static_configs": [{"targets": [f"{url.hostname}:{url.port}"]}]}
    sidecars: dict[str, Any] = {"job_name": SIDECAR_JOB, "metrics_path": "/stats/prometheus"}
    if file_sd is not None:
        sidecars["file_sd_configs"] = [{"files": [file_sd], "refresh_interval": "30s"}]
    else:
        sidecars["static_configs"] = sidecar_targets(proxies)
    return {"global": {"scrape_interval": interval, "evaluation_interval": interval},
            "scrape_configs": [control_plane, sidecars]}
