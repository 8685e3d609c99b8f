"""API routes that read a sidecar's Envoy admin for the CLI (`proxy-config`, `identity`)
and the dashboard, on whichever host the sidecar runs: the control plane dials its
`gossamer_admin` listener over mTLS (proxyadmin/), so no client needs to reach a
sidecar itself. Read scope: the config dump is shown redacted (proxyadmin/configdump.py)."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, Query

from gossamer.api.auth import Caller
from gossamer.api.context import ApiContext, ApiError
from gossamer.envoy.admin import get_json
from gossamer.envoy.errors import AdminError
from gossamer.proxyadmin import configdump
from gossamer.proxyadmin.target import AdminTarget

ADMIN_TIMEOUT = 30.0


def proxy_admin_routes(app: FastAPI, ctx: ApiContext) -> None:
    reader = Depends(ctx.auth.caller)

    def target(node_id: str) -> AdminTarget:
        proxy = next((p for p in ctx.proxies() if p.get("node_id") == node_id
                      and p.get("connected")), None)
        if proxy is None:
            raise ApiError(404, f"proxy {node_id!r} is not connected")
        found = ctx.sidecar_admin.target(proxy.get("metadata") or {})
        if found is None:
            raise ApiError(404, f"proxy {node_id!r} reports no admin endpoint this control "
                                "plane can reach")
        return found

    async def read(node_id: str, path: str, limit: int = configdump.CONFIG_DUMP_LIMIT) -> Any:
        where = target(node_id)
        try:
            return await get_json(where.host, where.port, path, timeout=ADMIN_TIMEOUT,
                                  limit=limit, tls=where.tls)
        except AdminError as exc:
            raise ApiError(502, f"cannot read the Envoy admin of {node_id} at {where}: "
                                f"{exc}") from exc

    @app.get("/api/v1/proxies/{node_id}/config_dump")
    async def config_dump(node_id: str, caller: Caller = reader,
                          section: str = Query(default="all", max_length=16)) -> dict[str, Any]:
        """The config the sidecar's Envoy runs now: one section, or all (with endpoints)."""
        try:
            path = configdump.target(section)
        except configdump.BadSection as exc:
            raise ApiError(422, str(exc), [{"path": "section", "reason": "unknown section"}]
                           ) from exc
        return configdump.select(await read(node_id, path), section)

    @app.get("/api/v1/proxies/{node_id}/certs")
    async def certs(node_id: str, caller: Caller = reader) -> dict[str, Any]:
        """The certificates the sidecar's Envoy holds now (Envoy's /certs: no keys)."""
        found: dict[str, Any] = await read(node_id, "/certs", limit=1024 * 1024)
        return found
