"""HTTP API: the only way the CLI and agents talk to the control plane.

Errors are JSON `{"error": "...", "fields": [{"path", "reason"}]}` with a 4xx
status, so the CLI can print one clear line.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel

from gossamer import __version__
from gossamer.api.auth import Authenticator, Caller, Forbidden, Unauthorized
from gossamer.api.explain import explain_routes
from gossamer.api.security import security_routes
from gossamer.api.tap import tap_routes
from gossamer.api.telemetry import telemetry_routes
from gossamer.ca.authority import MeshCA
from gossamer.ca.tokens import Scope, Tokens
from gossamer.controlplane.leases import Leases
from gossamer.controlplane.reconcile import Reconciler
from gossamer.dashboard import mount_dashboard
from gossamer.explain.recent import RecentFailures
from gossamer.index import MeshIndex
from gossamer.model import (
    KINDS,
    InvalidResource,
    ResiliencePolicy,
    Resource,
    ResourceKey,
    Workload,
    dump_document,
    kind_for,
    parse_document,
)
from gossamer.model.resilienceeffect import AnyRoute, unapplied
from gossamer.model.workload import Health
from gossamer.store import Conflict, NotFound, ResourceStore, StoredObject
from gossamer.telemetry.scraper import Scraper


class ApiError(Exception):
    """The API edge's one exception type, rendered as a JSON error response."""

    def __init__(self, status: int, message: str, fields: list[dict[str, str]] | None = None):
        super().__init__(message)
        self.status = status
        self.fields = fields or []


@dataclass
class ApiContext:
    store: ResourceStore
    reconciler: Reconciler
    leases: Leases
    proxies: Callable[[], list[dict[str, Any]]]
    xds_address: tuple[str, int] = ("127.0.0.1", 15010)
    metrics: CollectorRegistry | None = None
    auth: Authenticator = field(default_factory=lambda: Authenticator(None))
    tokens: Tokens | None = None
    ca: MeshCA | None = None
    telemetry: Scraper | None = None
    failures: RecentFailures | None = None


class ApplyResult(BaseModel):
    result: str  # created | configured | unchanged
    resource: dict[str, Any]
    # What of the document will have no effect, and why (the CLI prints each).
    warnings: list[str] = []


class HealthReport(BaseModel):
    health: Health


def _doc(ctx: ApiContext, obj: StoredObject) -> dict[str, Any]:
    body = dict(obj.body)
    meta = dict(body.get("metadata", {}))
    meta["resourceVersion"] = str(obj.revision)
    body["metadata"] = meta
    status = ctx.reconciler.index.status(ResourceKey(obj.kind, obj.namespace, obj.name))
    if status:
        body["status"] = status
    return body


def _canonical_kind(kind: str) -> str:
    try:
        return kind_for(kind).KIND
    except InvalidResource as exc:
        raise ApiError(404, str(exc.errors[0].reason)) from exc


def _workload_identity(res: Workload) -> tuple[str, str]:
    account = getattr(res.spec, "service_account", None) or res.spec.service
    return res.metadata.namespace, account


def _check_join_workload(caller: Caller, res: Workload) -> None:
    """A join token registers only workloads of its own service, labelled as such.

    Service selectors match labels, and callers trust every identity among a
    service's workloads; so a token for `a` must not register a workload
    that claims to be `b`, or carries `b`'s app label, to squat on b's traffic.
    """
    if caller.scope is not Scope.JOIN:
        return
    service, labels = res.spec.service, res.metadata.labels
    if service != caller.account or labels.get("app", service) != service:
        raise Forbidden(f"a join token for {caller.namespace}/{caller.account} registers only "
                        f"workloads of service {caller.account!r} (label app={caller.account})")


async def _apply(ctx: ApiContext, doc: dict[str, Any], caller: Caller) -> ApplyResult:
    try:
        res = parse_document(doc)
    except InvalidResource as exc:
        fields = [{"path": e.path, "reason": e.reason} for e in exc.errors]
        raise ApiError(422, str(exc), fields) from exc
    if isinstance(res, Workload):
        caller.require_identity(*_workload_identity(res))
        _check_join_workload(caller, res)
    else:
        caller.require_admin()
    expected = int(res.metadata.resource_version) if res.metadata.resource_version else None
    body = dump_document(res.with_revision(0))
    body["metadata"].pop("resourceVersion", None)
    before = await ctx.store.get(*res.key)
    try:
        stored = await ctx.store.put(*res.key, body, expected_revision=expected)
    except Conflict as exc:
        raise ApiError(409, f"{res.kind} {res.metadata.name!r} was changed by someone else "
                            f"(resourceVersion {expected} is stale); get it and apply again"
                       ) from exc
    result = "created" if before is None else (
        "unchanged" if before.revision == stored.revision else "configured")
    if isinstance(res, Workload):
        ctx.leases.renew(res.key)
    return ApplyResult(result=result, resource=_doc(ctx, stored),
                       warnings=_warnings(ctx.reconciler.index, res))


def _warnings(index: MeshIndex, res: Resource) -> list[str]:
    """Said at apply, from the mesh as it is (the resource's status says it once the
    index has it): a ResiliencePolicy whose cluster settings do nothing."""
    if not isinstance(res, ResiliencePolicy):
        return []
    key = (res.metadata.namespace, res.spec.target_ref.name)
    routes: list[AnyRoute] = [
        *index.routes_by_parent.get(key, ()), *index.grpc_routes_by_parent.get(key, ()),
        *(r for pkey, r in index.tcp_routes.items() if pkey[:2] == key)]
    why = unapplied(res, index.services.get(key), routes)
    return [why] if why is not None else []


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(title="Gossamer control plane", version=__version__)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": str(exc), "fields": exc.fields}, status_code=exc.status)

    @app.exception_handler(Unauthorized)
    async def _unauthorized(_: Request, exc: Unauthorized) -> JSONResponse:
        return JSONResponse({"error": str(exc), "fields": []}, status_code=401,
                            headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(Forbidden)
    async def _forbidden(_: Request, exc: Forbidden) -> JSONResponse:
        return JSONResponse({"error": str(exc), "fields": []}, status_code=403)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness; open, so probes need no token. `pid` lets whoever started this
        control plane tell it from another one on the same port."""
        return {"status": "ok", "version": __version__, "revision": ctx.reconciler.index.revision,
                "proxies": len(ctx.reconciler.proxies), "pid": os.getpid()}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        """Prometheus exposition of the control plane's own counters (xDS pushes, NACKs)."""
        body = generate_latest(ctx.metrics) if ctx.metrics is not None else b""
        return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)

    _resource_routes(app, ctx)
    _workload_routes(app, ctx)
    security_routes(app, ctx)
    tap_routes(app, ctx)
    telemetry_routes(app, ctx)
    explain_routes(app, ctx)
    mount_dashboard(app)
    return app


def _resource_routes(app: FastAPI, ctx: ApiContext) -> None:
    reader = Depends(ctx.auth.caller)

    @app.get("/api/v1/mesh")
    async def mesh(caller: Caller = reader) -> dict[str, Any]:
        """What an agent needs to join: where the xDS server listens, and the trust domain."""
        host, port = ctx.xds_address
        return {"xds": {"host": host, "port": port, "tls": ctx.ca is not None},
                "trust_domain": ctx.ca.trust_domain if ctx.ca else None,
                "version": __version__}

    @app.get("/api/v1/kinds")
    async def kinds(caller: Caller = reader) -> list[str]:
        return list(KINDS)

    @app.post("/api/v1/apply")
    async def apply(doc: dict[str, Any], caller: Caller = reader) -> ApplyResult:
        return await _apply(ctx, doc, caller)

    @app.get("/api/v1/resources/{kind}")
    async def list_resources(kind: str, namespace: str | None = None,
                             caller: Caller = reader) -> list[dict[str, Any]]:
        objs, _ = await ctx.store.list(_canonical_kind(kind), namespace)
        return [_doc(ctx, o) for o in objs]

    @app.get("/api/v1/resources/{kind}/{namespace}/{name}")
    async def get_resource(kind: str, namespace: str, name: str,
                           caller: Caller = reader) -> dict[str, Any]:
        canonical = _canonical_kind(kind)
        obj = await ctx.store.get(canonical, namespace, name)
        if obj is None:
            raise ApiError(404, f"{canonical} {namespace}/{name} not found")
        return _doc(ctx, obj)

    @app.delete("/api/v1/resources/{kind}/{namespace}/{name}")
    async def delete_resource(kind: str, namespace: str, name: str,
                              caller: Caller = reader) -> dict[str, Any]:
        canonical = _canonical_kind(kind)
        obj = await ctx.store.get(canonical, namespace, name)
        if obj is None:
            raise ApiError(404, f"{canonical} {namespace}/{name} not found")
        if canonical == "Workload":
            caller.require_identity(*_workload_identity(_parse_stored(obj)))
        else:
            caller.require_admin()
        try:
            obj = await ctx.store.delete(canonical, namespace, name)
        except NotFound as exc:
            raise ApiError(404, f"{canonical} {namespace}/{name} not found") from exc
        ctx.leases.forget(ResourceKey(canonical, namespace, name))
        return {"deleted": _doc(ctx, obj)}


def _parse_stored(obj: StoredObject) -> Workload:
    res = parse_document(obj.body)
    assert isinstance(res, Workload)
    return res


def _workload_routes(app: FastAPI, ctx: ApiContext) -> None:
    reader = Depends(ctx.auth.caller)

    @app.post("/api/v1/workloads/{namespace}/{name}/heartbeat")
    async def heartbeat(namespace: str, name: str, report: HealthReport,
                        caller: Caller = reader) -> dict[str, Any]:
        """Renews the workload's lease and records its probe result."""
        obj = await ctx.store.get("Workload", namespace, name)
        if obj is None:
            raise ApiError(404, f"Workload {namespace}/{name} is not registered")
        caller.require_identity(*_workload_identity(_parse_stored(obj)))
        key = ResourceKey("Workload", namespace, name)
        ctx.leases.renew(key)
        if obj.body.get("spec", {}).get("health") != report.health.value:
            body = dict(obj.body)
            body["spec"] = {**body["spec"], "health": report.health.value}
            try:
                obj = await ctx.store.put(*key, body, expected_revision=obj.revision)
            except Conflict as exc:
                raise ApiError(409, "workload changed concurrently; retry") from exc
        return _doc(ctx, obj)

    @app.get("/api/v1/proxies")
    async def proxies(caller: Caller = reader) -> list[dict[str, Any]]:
        return ctx.proxies()

    @app.get("/api/v1/proxies/{node_id}/snapshot")
    async def proxy_snapshot(node_id: str, caller: Caller = reader) -> dict[str, Any]:
        """What the control plane would send this proxy now (names and versions)."""
        proxy = ctx.reconciler.proxies.get(node_id)
        if proxy is None:
            raise ApiError(404, f"proxy {node_id!r} is not connected")
        from gossamer.translate import translate_proxy
        from gossamer.xds.types import SHORT

        snap = translate_proxy(ctx.reconciler.mesh, proxy).snapshot
        return {SHORT[t]: {"version": snap.version(t),
                           "resources": {n: r.version for n, r in snap.of(t).items()}}
                for t in snap.resources}
