"""API route for live tap: newline-delimited JSON events, one per request."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI, Query
from fastapi.responses import StreamingResponse

from gossamer.api.auth import Caller
from gossamer.api.context import ApiContext, ApiError
from gossamer.tap.session import MAX_EVENTS, MAX_SECONDS, TapError, stream, targets


def tap_routes(app: FastAPI, ctx: ApiContext) -> None:
    reader = Depends(ctx.auth.caller)

    @app.get("/api/v1/tap/{namespace}/{service}")
    async def tap(namespace: str, service: str, caller: Caller = reader,
                  path: str | None = Query(default=None, max_length=1024),
                  method: str | None = Query(default=None, max_length=16),
                  bodies: bool = False,
                  limit: int = Query(default=100, ge=1, le=MAX_EVENTS),
                  seconds: float = Query(default=30.0, gt=0, le=MAX_SECONDS),
                  gateway: bool = False,
                  ) -> StreamingResponse:
        """Live requests to a Service as its sidecars see them, or with `gateway` to
        the ingress gateway of that name as its replicas' listeners see them. Admin
        only: request headers (credentials redacted) and, with `bodies`, bodies are
        shown."""
        caller.require_admin()
        tapped = targets(ctx.proxies(), namespace, service, ctx.sidecar_admin.target,
                         gateway)
        if not tapped:
            what = "replica of gateway" if gateway else "sidecar serves"
            raise ApiError(404, f"no connected {what} {namespace}/{service}")

        async def lines() -> AsyncIterator[bytes]:
            # The tap filter runs on these sidecars only while this session does
            # (also when the client goes away: the generator is closed).
            try:
                async with ctx.tapping([t.node_id for t in tapped]):
                    async for event in stream(tapped, path=path, method=method,
                                              bodies=bodies, limit=limit, seconds=seconds):
                        yield (json.dumps(event.to_json()) + "\n").encode()
            except TapError as exc:
                yield (json.dumps({"error": str(exc)}) + "\n").encode()

        return StreamingResponse(lines(), media_type="application/x-ndjson")
