"""API routes of `gossamer explain`: the failed requests the sidecars logged, and why
one of them failed."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, Query

from gossamer.api.auth import Caller
from gossamer.api.context import ApiContext, ApiError
from gossamer.explain.reasons import explain
from gossamer.explain.recent import Query as Failures


def explain_routes(app: FastAPI, ctx: ApiContext) -> None:
    reader = Depends(ctx.auth.caller)

    def query(namespace: str | None, service: str | None, request_id: str | None,
              status: int | None, path: str | None) -> Failures:
        if ctx.failures is None:
            raise ApiError(503, "this control plane does not collect failed requests")
        return Failures(namespace=namespace, service=service, request_id=request_id,
                        status=status, path_prefix=path)

    @app.get("/api/v1/failures")
    async def failures(namespace: str | None = None, service: str | None = None,
                       request_id: str | None = None, status: int | None = None,
                       path: str | None = Query(default=None, max_length=1024),
                       limit: int = Query(default=20, ge=1, le=500),
                       caller: Caller = reader) -> dict[str, Any]:
        """Recent failed requests, newest first, one row per request. Admin only:
        paths and request ids of live traffic are shown."""
        caller.require_admin()
        q = query(namespace, service, request_id, status, path)
        assert ctx.failures is not None
        rows: list[dict[str, Any]] = []
        seen: set[str] = set()
        for entry in ctx.failures.find(q, limit=limit * 4):
            key = entry.request_id or f"{entry.reporter.node_id}@{entry.start_time}"
            if key not in seen and len(rows) < limit:
                seen.add(key)
                rows.append(entry.to_json())
        return {"items": rows}

    @app.get("/api/v1/explain")
    async def explain_request(namespace: str | None = None, service: str | None = None,
                              request_id: str | None = None, status: int | None = None,
                              path: str | None = Query(default=None, max_length=1024),
                              caller: Caller = reader) -> dict[str, Any]:
        """Why the newest failed request that matches failed (by `request_id`: that one).
        A failure (status >= 400, or none) comes before a success with a response flag."""
        caller.require_admin()
        q = query(namespace, service, request_id, status, path)
        assert ctx.failures is not None
        newest = ctx.failures.newest_failure(q)
        if newest is None:
            what = f"request {request_id!r}" if request_id else "a failed request matching that"
            raise ApiError(404, f"no record of {what}: the control plane keeps the last "
                                f"{ctx.failures.capacity} failures the sidecars reported")
        hops = ctx.failures.hops(newest.request_id) or [newest]
        return explain(hops, ctx.state.index, ctx.state.proxies).to_json()
