"""A Prometheus scrape configuration for the mesh, from the control plane's proxy list.

Two jobs: the control plane's own `/metrics` (over TLS when its API is, verified
with the mesh's bundle), and every connected sidecar's Envoy `/stats/prometheus`
labelled with the workload's namespace, service and workload, so PromQL can group
Envoy's own stat names by who emitted them. A sidecar on a host address is scraped
at its `gossamer_prometheus` listener (port 15090 by default), which serves that
path and nothing else; one in local mode at its loopback admin (proxyadmin/target.py).
The sidecar targets are static, or written to a file_sd file that Prometheus
re-reads: run the command again (e.g. from cron) and the file follows the mesh
without restarting Prometheus.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from gossamer.proxyadmin.target import PROMETHEUS_PATH, prometheus_target

SIDECAR_JOB = "gossamer-sidecars"
CONTROL_PLANE_JOB = "gossamer-control-plane"


class BadServer(ValueError):
    """The control plane URL has no host:port Prometheus can scrape."""


def sidecar_targets(proxies: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """file_sd entries: one per connected proxy Prometheus can scrape."""
    out = []
    for p in proxies:
        meta = p.get("metadata") or {}
        where = prometheus_target(meta)
        if not p.get("connected") or where is None:
            continue
        host, port = where
        host = f"[{host}]" if ":" in host else host
        out.append({"targets": [f"{host}:{port}"], "labels": {
            "namespace": str(meta.get("namespace", "default")),
            "service": str(meta.get("service", "")),
            "workload": str(meta.get("workload", p.get("node_id", ""))),
            "node_id": str(p.get("node_id", ""))}})
    return sorted(out, key=lambda t: t["labels"]["node_id"])


def scrape_config(server: str, proxies: Iterable[Mapping[str, Any]], *,
                  interval: str = "15s", file_sd: str | None = None,
                  ca_file: str | None = None) -> dict[str, Any]:
    """The whole prometheus.yml; with `file_sd`, sidecars come from that file. `ca_file`:
    the bundle Prometheus verifies an https:// control plane with (None: its system
    roots, as the CLI without --ca-file)."""
    url = urlsplit(server)
    if not url.hostname or not url.port:
        raise BadServer(f"control plane URL {server!r} needs a host and a port")
    host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
    control_plane: dict[str, Any] = {
        "job_name": CONTROL_PLANE_JOB, "scheme": url.scheme or "http",
        "metrics_path": "/metrics", "static_configs": [{"targets": [f"{host}:{url.port}"]}]}
    if url.scheme == "https" and ca_file is not None:
        control_plane["tls_config"] = {"ca_file": ca_file}
    sidecars: dict[str, Any] = {"job_name": SIDECAR_JOB, "metrics_path": PROMETHEUS_PATH}
    if file_sd is not None:
        sidecars["file_sd_configs"] = [{"files": [file_sd], "refresh_interval": "30s"}]
    else:
        sidecars["static_configs"] = sidecar_targets(proxies)
    return {"global": {"scrape_interval": interval, "evaluation_interval": interval},
            "scrape_configs": [control_plane, sidecars]}
