"""The SMI Traffic Metrics API (metrics.smi-spec.io/v1alpha1) over the golden metrics:
a namespace's Services or Workloads, one of them, and its edges (smi/metrics.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import Depends, FastAPI

from gossamer.api.auth import Caller
from gossamer.api.context import ApiContext, ApiError
from gossamer.smi import metrics
from gossamer.telemetry import golden

BASE = "/apis/metrics.smi-spec.io/v1alpha1/namespaces/{namespace}/{resource}"


def smi_routes(app: FastAPI, ctx: ApiContext) -> None:
    reader = Depends(ctx.auth.caller)

    def observed(resource: str) -> tuple[list[golden.Observed], float, str]:
        if resource not in metrics.RESOURCES:
            raise ApiError(404, f"no traffic metrics of {resource!r}; served: "
                                f"{', '.join(metrics.RESOURCES)}")
        if ctx.telemetry is None:
            raise ApiError(503, "this control plane does not scrape proxy stats")
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return ctx.telemetry.observed(), ctx.telemetry.options.window, now

    def rows(seen: list[golden.Observed], resource: str) -> list[dict[str, Any]]:
        return golden.by_service(seen) if resource == "services" else golden.by_workload(seen)

    @app.get(BASE)
    async def listing(namespace: str, resource: str,
                      caller: Caller = reader) -> dict[str, Any]:
        seen, window, now = observed(resource)
        return metrics.traffic_metrics_list(rows(seen, resource), metrics.RESOURCES[resource],
                                            namespace, window, now)

    @app.get(BASE + "/{name}")
    async def one(namespace: str, resource: str, name: str,
                  caller: Caller = reader) -> dict[str, Any]:
        seen, window, now = observed(resource)
        row = next((r for r in rows(seen, resource)
                    if (r["namespace"], r["name"]) == (namespace, name)), None)
        if row is None:
            raise ApiError(404, f"no traffic metrics of {resource} {namespace}/{name}")
        return metrics.traffic_metrics(row, window, now)

    @app.get(BASE + "/{name}/edges")
    async def edge_list(namespace: str, resource: str, name: str,
                        caller: Caller = reader) -> dict[str, Any]:
        seen, window, now = observed(resource)
        kind = metrics.RESOURCES[resource]
        per_workload = kind == "Workload"
        edges = golden.by_edge(seen, per_workload=per_workload, routed=False)
        return metrics.edges(metrics.reference(kind, namespace, name), edges, window, now)
