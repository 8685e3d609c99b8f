"""HTTP API: the only way the CLI and agents talk to the control plane.

Errors are JSON `{"error": "...", "fields": [{"path", "reason"}]}` with a 4xx
status, so the CLI can print one clear line.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from pydantic_core import PydanticSerializationError, to_json

from gossamer import __version__
from gossamer.api.auth import Caller, Forbidden, Unauthorized
from gossamer.api.context import ApiContext, ApiError
from gossamer.api.explain import explain_routes
from gossamer.api.gateways import redacted, with_programmed
from gossamer.api.kubernetes import kubernetes_routes
from gossamer.api.limits import MAX_JOIN_WORKLOAD_BYTES, MAX_JOIN_WORKLOADS, BodyLimit
from gossamer.api.proxies import proxy_admin_routes
from gossamer.api.security import security_routes
from gossamer.api.smi import smi_routes
from gossamer.api.tap import tap_routes
from gossamer.api.telemetry import telemetry_routes
from gossamer.ca.tokens import Scope
from gossamer.dashboard import mount_dashboard
from gossamer.index import MeshIndex
from gossamer.model import (
    KINDS,
    Gateway,
    InvalidResource,
    ResiliencePolicy,
    Resource,
    ResourceKey,
    Workload,
    dump_document,
    kind_for,
    parse_document,
)
from gossamer.model.limits import document_bytes, size_text
from gossamer.model.resilienceeffect import AnyRoute, unapplied
from gossamer.model.workload import Health
from gossamer.store import Conflict, NotFound, StoredObject, StoreUnavailable
from gossamer.virtualips.assign import virtual_ip_taken

log = logging.getLogger(__name__)


class ErrorResponse(JSONResponse):
    """JSON escaped to ASCII: an error may quote the caller's input, and input with
    a lone surrogate would make the UTF-8 of a plain JSONResponse fail (a 500)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


class ApplyResult(BaseModel):
    result: str  # created | configured | unchanged
    resource: dict[str, Any]
    # What of the document will have no effect, and why (the CLI prints each).
    warnings: list[str] = []


class HealthReport(BaseModel):
    health: Health


def _doc(ctx: ApiContext, obj: StoredObject) -> dict[str, Any]:
    """The stored object as the API shows it. One that cannot be shown (text that is
    not valid Unicode, stored before apply refused it) is shown as a stub saying so,
    so that it never fails a response (a listing above all), and can still be found
    and deleted."""
    body = _shown(ctx, obj)
    return body if _render(body) is not None else _unreadable(obj)


def _shown(ctx: ApiContext, obj: StoredObject) -> dict[str, Any]:
    body = redacted(dict(obj.body))  # no Secret data
    meta = dict(body.get("metadata", {}))
    meta["resourceVersion"] = str(obj.revision)
    body["metadata"] = meta
    status = ctx.state.index.status(ResourceKey(obj.kind, obj.namespace, obj.name))
    if obj.kind == Gateway.KIND and status:
        status = with_programmed(obj.kind, obj.namespace, obj.name, status, ctx.proxies())
    if status:
        body["status"] = status
    return body


def _render(content: Any) -> bytes | None:
    """JSON as a response carries it, or None if it cannot be (a lone surrogate)."""
    try:
        return to_json(content)
    except PydanticSerializationError:
        return None


def _listing(ctx: ApiContext, objs: list[StoredObject]) -> Response:
    """Rendered once, here: a listing of thousands costs one serialization, and only
    when that fails is each document checked (and the bad ones stubbed)."""
    docs = [_shown(ctx, o) for o in objs]
    body = _render(docs)
    if body is None:
        body = _render([d if _render(d) is not None else _unreadable(o)
                        for d, o in zip(docs, objs, strict=True)])
        assert body is not None  # every item renders now
    return Response(body, media_type="application/json")


def _unreadable(obj: StoredObject) -> dict[str, Any]:
    # The key comes from the store's columns, validated as names when written.
    return {"kind": obj.kind,
            "metadata": {"name": obj.name, "namespace": obj.namespace,
                         "resourceVersion": str(obj.revision)},
            "spec": {},
            "status": {"conditions": [{
                "type": "Readable", "status": "False", "reason": "InvalidText",
                "message": "the stored document has text that is not valid Unicode and "
                           "cannot be shown; delete it and apply it again"}]}}


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


def _check_join_quota(ctx: ApiContext, caller: Caller, body: dict[str, Any],
                      creates: bool) -> None:
    """A join token is an agent's credential, and a leaked one should not be able to
    fill the store: it may store small Workloads (an agent's are a few hundred
    bytes), and only so many for its identity. They are counted in the index (no
    store read per registration), which trails the store by the reconcile delay,
    well under a second."""
    if caller.scope is not Scope.JOIN:
        return
    size = document_bytes(body)
    if size > MAX_JOIN_WORKLOAD_BYTES:
        limit = size_text(MAX_JOIN_WORKLOAD_BYTES)
        raise ApiError(422, f"a Workload registered with a join token may be at most {limit}; "
                            f"this one is {size} bytes",
                       [{"path": "", "reason": f"larger than {limit}, the limit for a join "
                                               "token"}])
    if not creates:
        return
    held = ctx.state.index.workloads_by_account.get(
        (caller.namespace or "", caller.account or ""), 0)
    if held >= MAX_JOIN_WORKLOADS:
        raise Forbidden(f"{caller.namespace}/{caller.account} already has {held} Workloads "
                        f"registered, the most a join token may register "
                        f"({MAX_JOIN_WORKLOADS}); remove some, or register with an admin token")


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
    if (taken := virtual_ip_taken(ctx.state.index.virtual_ips, res)) is not None:
        raise ApiError(422, f"invalid Service {res.metadata.name!r}: spec.virtualIP: {taken}",
                       [{"path": "spec.virtualIP", "reason": taken}])
    expected = int(res.metadata.resource_version) if res.metadata.resource_version else None
    body = dump_document(res.with_revision(0))
    body["metadata"].pop("resourceVersion", None)
    before = await ctx.store.get(*res.key)
    if isinstance(res, Workload) and caller.scope is not Scope.ADMIN:
        # Nor may it replace a workload of another identity (or one whose identity
        # cannot be read): put only over the very registration it checked, or only
        # if there is none.
        if before is not None:
            registered = _parse_stored(before)
            if registered is None:
                caller.require_admin()
            else:
                caller.require_identity(*_workload_identity(registered))
        if expected is None:
            expected = before.revision if before is not None else 0
    if isinstance(res, Workload):
        _check_join_quota(ctx, caller, body, creates=before is None)
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
                       warnings=_warnings(ctx.state.index, res))


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
    app.add_middleware(BodyLimit)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return ErrorResponse({"error": str(exc), "fields": exc.fields}, status_code=exc.status)

    @app.exception_handler(Unauthorized)
    async def _unauthorized(_: Request, exc: Unauthorized) -> JSONResponse:
        return ErrorResponse({"error": str(exc), "fields": []}, status_code=401,
                             headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(Forbidden)
    async def _forbidden(_: Request, exc: Forbidden) -> JSONResponse:
        return ErrorResponse({"error": str(exc), "fields": []}, status_code=403)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's own answer, which quotes the input back, rendered so that
        quoting text that is not valid Unicode cannot fail."""
        return ErrorResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)

    @app.exception_handler(StoreUnavailable)
    async def _store_unavailable(_: Request, exc: StoreUnavailable) -> JSONResponse:
        # The detail names the database: for the operator's log, not for API clients.
        log.error("%s", exc)
        return JSONResponse({"error": "the control plane's store is unavailable; try again "
                             "later", "fields": []}, status_code=503)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness; open, so probes need no token. `pid` lets whoever started this
        control plane tell it from another one on the same port."""
        return {"status": "ok", "version": __version__, "revision": ctx.state.index.revision,
                "proxies": len(ctx.state.proxies), "pid": os.getpid(), **ctx.replica()}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        """Prometheus exposition of the control plane's own counters (xDS pushes, NACKs)."""
        body = generate_latest(ctx.metrics) if ctx.metrics is not None else b""
        return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)

    _resource_routes(app, ctx)
    _workload_routes(app, ctx)
    security_routes(app, ctx)
    tap_routes(app, ctx)
    proxy_admin_routes(app, ctx)
    telemetry_routes(app, ctx)
    smi_routes(app, ctx)
    explain_routes(app, ctx)
    kubernetes_routes(app, ctx)
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

    @app.get("/api/v1/resources/{kind}", response_model=list[dict[str, Any]])
    async def list_resources(kind: str, namespace: str | None = None,
                             caller: Caller = reader) -> Response:
        objs, _ = await ctx.store.list(_canonical_kind(kind), namespace)
        return _listing(ctx, objs)

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
        expected = None
        stored = _parse_stored(obj) if canonical == "Workload" else None
        if stored is not None:
            caller.require_identity(*_workload_identity(stored))
            if caller.scope is not Scope.ADMIN:
                expected = obj.revision  # the registration it checked, not a newer one
        else:  # not a Workload, or one whose identity cannot be read: admins only
            caller.require_admin()
        try:
            obj = await ctx.store.delete(canonical, namespace, name, expected_revision=expected)
        except NotFound as exc:
            raise ApiError(404, f"{canonical} {namespace}/{name} not found") from exc
        except Conflict as exc:
            raise ApiError(409, f"{canonical} {namespace}/{name} changed concurrently; "
                                "retry") from exc
        ctx.leases.forget(ResourceKey(canonical, namespace, name))
        return {"deleted": _doc(ctx, obj)}


def _parse_stored(obj: StoredObject) -> Workload | None:
    """The stored Workload, or None when it no longer parses (see `_doc`)."""
    try:
        res = parse_document(obj.body, stored=True)
    except InvalidResource:
        return None
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
        stored = _parse_stored(obj)
        if stored is None:
            raise ApiError(409, f"the stored Workload {namespace}/{name} is not valid; "
                                "register it again")
        caller.require_identity(*_workload_identity(stored))
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
        proxy = ctx.state.proxies.get(node_id)
        if proxy is None:
            raise ApiError(404, f"proxy {node_id!r} is not connected")
        from gossamer.translate import translate_proxy
        from gossamer.xds.types import SHORT

        snap = translate_proxy(ctx.state.mesh, proxy).snapshot
        return {SHORT[t]: {"version": snap.version(t),
                           "resources": {n: r.version for n, r in snap.of(t).items()}}
                for t in snap.resources}
