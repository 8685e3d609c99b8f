"""Golden-metrics routes: `/api/v1/stats` (per service, workload, edge) and `/api/v1/graph`."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI

from gossamer.api.auth import Caller
from gossamer.api.context import ApiContext, ApiError
from gossamer.telemetry import golden
from gossamer.translate.mesh import MeshConfig
from gossamer.translate.routes import route_clusters

KINDS = ("service", "workload", "edge")


def telemetry_routes(app: FastAPI, ctx: ApiContext) -> None:
    reader = Depends(ctx.auth.caller)

    def observed() -> list[golden.Observed]:
        if ctx.telemetry is None:
            raise ApiError(503, "this control plane does not scrape proxy stats")
        return ctx.telemetry.observed()

    def window() -> float:
        assert ctx.telemetry is not None
        return ctx.telemetry.options.window

    @app.get("/api/v1/stats")
    async def stats(kind: str = "service", name: str | None = None,
                    namespace: str | None = None, caller: Caller = reader) -> dict[str, Any]:
        """Golden metrics over the sliding window; `name` filters (an edge by destination)."""
        if kind not in KINDS:
            raise ApiError(422, f"kind must be one of {', '.join(KINDS)}, not {kind!r}",
                           [{"path": "kind", "reason": "unknown kind"}])
        seen = observed()
        if kind == "edge":
            rows = golden.by_edge(seen, backends=route_backends(ctx.state.mesh))
        else:
            rows = {"service": golden.by_service, "workload": golden.by_workload}[kind](seen)
        if namespace is not None:
            rows = [r for r in rows if r.get("namespace", r.get("source", {}).get(
                "namespace")) == namespace]
        if name is not None:
            rows = [r for r in rows if _named(r, name)]
        return {"window_seconds": window(), "kind": kind, "items": rows}

    @app.get("/api/v1/graph")
    async def graph(caller: Caller = reader) -> dict[str, Any]:
        """Services and who calls whom, each with golden metrics over the window."""
        return {"window_seconds": window(), **golden.graph(observed())}


def route_backends(mesh: MeshConfig) -> dict[str, tuple[str, ...]]:
    """`SVC.NS` -> the Services its HTTP routes (a consumer route's too) send to (not
    mirror to), for each Service whose routes send anywhere but to itself."""
    out: dict[str, set[str]] = {}
    every = [*mesh.port_routes.items(),
             *((pkey, v.routes) for (_, pkey), v in mesh.consumer_routes.items())]
    for (ns, name, _), routes in every:
        sent = {mesh.cluster_services.get(c) for r in routes for c in route_clusters(r)}
        out.setdefault(f"{name}.{ns}", set()).update(
            f"{svc}.{sns}" for sns, svc in filter(None, sent))
    return {called: tuple(sorted(b)) for called, b in out.items() if b - {called}}


def _named(row: dict[str, Any], name: str) -> bool:
    if row["kind"] == "edge":
        dest = row["destination"]
        return name in (dest, dest.partition(".")[0])
    return bool(row["name"] == name)
