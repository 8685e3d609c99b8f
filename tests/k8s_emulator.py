"""A Kubernetes API server emulated at the HTTP level, for the controller's tests.

No API server can run here, and PyPI's `kmock` has no real resourceVersions nor
label selectors, so this is a small one (Starlette on uvicorn, in the test's loop).
What it emulates (docs/kubernetes.md lists it too):

- any resource under `/api/v1/...` and `/apis/GROUP/VERSION/...`, namespaced
  (`namespaces/NS/PLURAL`) or cluster-wide, and all namespaces at once;
- list with `labelSelector` (equality terms `k=v`, `k!=v`, `k`), whose
  `metadata.resourceVersion` is the store's; list and watch with `fieldSelector`
  equality terms (`type=kubernetes.io/tls`, `metadata.name=x`), on any field;
- one global, strictly increasing resourceVersion, bumped by every write;
- watch (`?watch=1&resourceVersion=N`): every event after N, then live ones, until
  `timeoutSeconds`; a version older than the kept history gets the API server's
  answer, an ERROR event with a `410 Expired` Status (`compact()` drops the history);
  `drop_watches()` ends every open watch as a restarting API server would;
- get, create (409 if it exists), replace (409 on a stale resourceVersion), merge
  PATCH of the object or of its `status` subresource (which changes only status),
  delete; `metadata.generation` counts spec changes;
- `TokenReview`: tokens the test registers, with their user and audiences;
- `SubjectAccessReview`: RBAC as the API server evaluates it, from the
  ClusterRoles, Roles and their bindings stored in the emulator (users and
  ServiceAccounts as subjects; no groups, no aggregation, no resourceNames);
- `fail_next`: that many next requests answered 500.

Not emulated: authentication of the client and RBAC on its requests, field selectors
other than `=`/`==`, which fields each kind may select on, strategic
merge and server-side apply, admission, garbage collection, bookmarks.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

PLURALS = {"Endpoints": "endpoints", "NetworkPolicy": "networkpolicies"}
Key = tuple[str, str]  # (group, plural)


def plural_of(kind: str) -> str:
    from gossamer.k8s.crds import PLURALS as MESH

    if kind in PLURALS:
        return PLURALS[kind]
    if kind in MESH:
        return MESH[kind]
    return kind.lower() + ("es" if kind.endswith("s") else "s")


@dataclass
class _Watch:
    key: Key
    namespace: str | None
    selector: str | None
    fields: str | None = None
    queue: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def _fields_match(obj: dict[str, Any], selector: str | None) -> bool:
    for term in filter(None, (selector or "").split(",")):
        path, _, want = term.replace("==", "=").partition("=")
        value: Any = obj
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if str(value if value is not None else "") != want:
            return False
    return True


def _matches(labels: dict[str, str], selector: str | None) -> bool:
    for term in filter(None, (selector or "").split(",")):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.split("=", 1)
            if labels.get(k.rstrip("=")) != v:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


class KubeEmulator:
    def __init__(self) -> None:
        self.objects: dict[Key, dict[tuple[str, str], dict[str, Any]]] = {}
        self.revision = 100
        self.history: list[tuple[int, Key, str, dict[str, Any]]] = []
        self.oldest = 0  # watches from a version below this get 410
        self.watches: list[_Watch] = []
        self.tokens: dict[str, tuple[str, list[str]]] = {}
        self.reviewed: list[str] = []  # every token a TokenReview asked about, in order
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self.lists: list[str] = []  # path of every list
        self.watch_starts: list[tuple[str, int]] = []  # (path, from version) of every watch
        self.fail_next = 0  # answer this many next requests 500, as an overloaded server
        self.port = 0
        self.host = "127.0.0.1"
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    # -- the test's side -------------------------------------------------------------

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object as a cluster component would (no checks)."""
        key = self._key_of(obj)
        meta = obj.setdefault("metadata", {})
        ref = (meta.get("namespace", ""), meta["name"])
        old = self.objects.get(key, {}).get(ref)
        return self._write(key, ref, obj, "MODIFIED" if old else "ADDED")

    def delete(self, obj: dict[str, Any]) -> None:
        key = self._key_of(obj)
        meta = obj["metadata"]
        ref = (meta.get("namespace", ""), meta["name"])
        gone = self.objects.get(key, {}).pop(ref)
        self._emit(key, "DELETED", gone)

    def delete_unseen(self, obj: dict[str, Any]) -> None:
        """Delete while no watch is looking, and forget the history: as a watcher
        disconnected for longer than the API server keeps events. Its watches end, and
        their resumes get 410 Gone."""
        key = self._key_of(obj)
        meta = obj["metadata"]
        self.objects.get(key, {}).pop((meta.get("namespace", ""), meta["name"]))
        self.revision += 1
        self.compact()
        self.drop_watches()

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        key = (api_version.rsplit("/", 1)[0] if "/" in api_version else "", plural_of(kind))
        return self.objects.get(key, {}).get((namespace, name))

    def compact(self) -> None:
        """Forget the history: a watch from any version before now gets 410 Gone."""
        self.history.clear()
        self.oldest = self.revision + 1

    def drop_watches(self) -> None:
        for w in self.watches:
            w.queue.put_nowait(None)

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
            "clusters": [{"name": "emulator",
                          "cluster": {"server": f"http://{self.host}:{self.port}"}}],
            "users": [{"name": "controller", "user": {"token": "controller-token"}}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator",
                                                          "user": "controller"}}]}))
        return path

    async def start(self, host: str = "127.0.0.1") -> None:
        self.host = host
        app = Starlette(routes=[Route("/{path:path}", self._handle,
                                      methods=["GET", "POST", "PUT", "PATCH", "DELETE"])])
        config = uvicorn.Config(app, host=host, port=0, log_level="warning",
                                lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.drop_watches()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.wait_for(self._task, 10)

    # -- storage ---------------------------------------------------------------------

    @staticmethod
    def _key_of(obj: dict[str, Any]) -> Key:
        api_version = str(obj["apiVersion"])
        group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
        return group, plural_of(str(obj["kind"]))

    def _write(self, key: Key, ref: tuple[str, str], obj: dict[str, Any],
               kind: str) -> dict[str, Any]:
        old = self.objects.get(key, {}).get(ref)
        obj = copy.deepcopy(obj)
        meta = obj["metadata"]
        self.revision += 1
        meta["resourceVersion"] = str(self.revision)
        meta.setdefault("uid", f"uid-{self.revision}")
        meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        generation = int((old or {}).get("metadata", {}).get("generation") or 0)
        if old is None or old.get("spec") != obj.get("spec"):
            generation += 1
        meta["generation"] = generation
        self.objects.setdefault(key, {})[ref] = obj
        self._emit(key, kind, obj, bump=False)
        return obj

    def _emit(self, key: Key, kind: str, obj: dict[str, Any], bump: bool = True) -> None:
        if bump:
            self.revision += 1
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = str(self.revision)
        self.history.append((self.revision, key, kind, obj))
        for w in self.watches:
            if self._wants(w, obj) and w.key == key:
                w.queue.put_nowait({"type": kind, "object": obj})

    @staticmethod
    def _wants(w: _Watch, obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        return (w.namespace is None or meta.get("namespace") == w.namespace) and \
            _matches(meta.get("labels") or {}, w.selector) and _fields_match(obj, w.fields)

    # -- HTTP ------------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        parts = request.url.path.strip("/").split("/")
        self.requests.append((request.method, request.url.path))
        if self.fail_next > 0:
            self.fail_next -= 1
            return JSONResponse(_status(500, "InternalError", "emulated failure"), 500)
        if parts[0] == "api":
            group, rest = "", parts[2:]
        elif parts[0] == "apis" and len(parts) >= 3:
            group, rest = parts[1], parts[3:]
        else:
            return JSONResponse(_status(404, "NotFound", "no such path"), 404)
        namespace = None
        if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) != 2:
            namespace, rest = rest[1], rest[2:]
        if not rest:
            return JSONResponse(_status(404, "NotFound", "no such path"), 404)
        key = (group, rest[0])
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if key == ("authentication.k8s.io", "tokenreviews"):
            return await self._token_review(request)
        if key == ("authorization.k8s.io", "subjectaccessreviews"):
            body = await request.json()
            allowed = self.allowed(body.get("spec") or {})
            return JSONResponse({**body, "status": {"allowed": allowed}}, 201)
        if name is None:
            if request.method == "POST":
                return await self._create(request, key, namespace)
            if request.query_params.get("watch") in ("1", "true"):
                return self._watch(request, key, namespace)
            return self._list(request, key, namespace)
        return await self._one(request, key, (namespace or "", name), sub)

    def _list(self, request: Request, key: Key, namespace: str | None) -> Response:
        self.lists.append(request.url.path)
        selector = request.query_params.get("labelSelector")
        items = [o for (ns, _), o in sorted(self.objects.get(key, {}).items())
                 if (namespace is None or ns == namespace)
                 and _matches(o["metadata"].get("labels") or {}, selector)
                 and _fields_match(o, request.query_params.get("fieldSelector"))]
        return JSONResponse({"apiVersion": "v1", "kind": "List", "items": items,
                             "metadata": {"resourceVersion": str(self.revision)}})

    def _watch(self, request: Request, key: Key, namespace: str | None) -> Response:
        since = int(request.query_params.get("resourceVersion") or self.revision)
        self.watch_starts.append((request.url.path, since))
        timeout = float(request.query_params.get("timeoutSeconds") or 300)
        w = _Watch(key, namespace, request.query_params.get("labelSelector"),
                   request.query_params.get("fieldSelector"))

        async def stream() -> AsyncIterator[bytes]:
            if since < self.oldest - 1:
                yield json.dumps({"type": "ERROR", "object": _status(
                    410, "Expired", f"too old resource version: {since} "
                    f"({self.oldest})")}).encode() + b"\n"
                return
            for rev, k, kind, obj in list(self.history):
                if rev > since and k == key and self._wants(w, obj):
                    yield json.dumps({"type": kind, "object": obj}).encode() + b"\n"
            self.watches.append(w)
            try:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + timeout
                while True:
                    event = await asyncio.wait_for(w.queue.get(),
                                                   max(0.01, deadline - loop.time()))
                    if event is None:
                        return
                    yield json.dumps(event).encode() + b"\n"
            except TimeoutError:
                return
            finally:
                self.watches.remove(w)

        return StreamingResponse(stream(), media_type="application/json")

    async def _create(self, request: Request, key: Key, namespace: str | None) -> Response:
        obj = await request.json()
        meta = obj.setdefault("metadata", {})
        if namespace:
            meta["namespace"] = namespace
        ref = (meta.get("namespace", ""), meta["name"])
        if ref in self.objects.get(key, {}):
            return JSONResponse(_status(409, "AlreadyExists", f"{ref} exists"), 409)
        meta.pop("resourceVersion", None)
        return JSONResponse(self._write(key, ref, obj, "ADDED"), 201)

    async def _one(self, request: Request, key: Key, ref: tuple[str, str],
                   sub: str | None) -> Response:
        old = self.objects.get(key, {}).get(ref)
        if old is None:
            return JSONResponse(_status(404, "NotFound", f"{key[1]} {ref} not found"), 404)
        if request.method == "GET":
            return JSONResponse(old)
        if request.method == "DELETE":
            self.delete(old)
            return JSONResponse(old)
        body = await request.json()
        if request.method == "PUT":
            wanted = (body.get("metadata") or {}).get("resourceVersion")
            if wanted and wanted != old["metadata"]["resourceVersion"]:
                return JSONResponse(_status(409, "Conflict", "the object has been "
                                            "modified; please apply your changes to the "
                                            "latest version and try again"), 409)
            new = body if sub is None else {**old, "status": body.get("status")}
        else:  # merge PATCH
            if sub == "status":
                body = {"status": body.get("status")}
            else:
                body.pop("status", None)
            new = _merge(copy.deepcopy(old), body)
        new["metadata"] = {**new.get("metadata", {}), "name": ref[1]}
        if ref[0]:
            new["metadata"]["namespace"] = ref[0]
        for k in ("uid", "creationTimestamp"):
            new["metadata"][k] = old["metadata"][k]
        new["metadata"]["generation"] = old["metadata"]["generation"]
        return JSONResponse(self._write(key, ref, new, "MODIFIED"))

    def allowed(self, spec: dict[str, Any]) -> bool:
        return _allowed(self.objects, spec)

    async def _token_review(self, request: Request) -> Response:
        body = await request.json()
        spec = body.get("spec") or {}
        self.reviewed.append(str(spec.get("token", "")))
        found = self.tokens.get(spec.get("token", ""))
        wanted = spec.get("audiences") or []
        status: dict[str, Any] = {"authenticated": False}
        if found is not None and (not wanted or set(wanted) & set(found[1])):
            status = {"authenticated": True, "user": {"username": found[0]},
                      "audiences": sorted(set(wanted) & set(found[1])) or found[1]}
        elif found is not None:
            status["error"] = "token audiences do not match"
        return JSONResponse({**body, "status": status}, 201)


_RBAC = "rbac.authorization.k8s.io"


def _binds(binding: dict[str, Any], user: str) -> bool:
    for s in binding.get("subjects") or ():
        if s.get("kind") == "User" and s.get("name") == user:
            return True
        if s.get("kind") == "ServiceAccount" and \
                user == f"system:serviceaccount:{s.get('namespace')}:{s.get('name')}":
            return True
    return False


def _grants(rule: dict[str, Any], verb: str, group: str, resource: str) -> bool:
    return all(want in (rule.get(field) or ()) or "*" in (rule.get(field) or ())
               for field, want in (("verbs", verb), ("apiGroups", group),
                                   ("resources", resource)))


def _allowed(objects: dict[Key, dict[tuple[str, str], dict[str, Any]]],
             spec: dict[str, Any]) -> bool:
    """RBAC's decision for a SubjectAccessReview's spec, from the stored roles."""
    attrs = spec.get("resourceAttributes") or {}
    user, ns = str(spec.get("user") or ""), str(attrs.get("namespace") or "")
    resource = attrs.get("resource", "") + ("/" + attrs["subresource"]
                                            if attrs.get("subresource") else "")
    roles: list[dict[str, Any]] = []
    for plural, scoped in (("clusterrolebindings", False), ("rolebindings", True)):
        for (bns, _), b in objects.get((_RBAC, plural), {}).items():
            if not _binds(b, user) or (scoped and bns != ns):
                continue
            ref = b.get("roleRef") or {}
            where = (_RBAC, "roles") if ref.get("kind") == "Role" else (_RBAC, "clusterroles")
            role = objects.get(where, {}).get((bns if where[1] == "roles" else "",
                                               ref.get("name", "")))
            roles += [role] if role else []
    return any(_grants(rule, attrs.get("verb", ""), attrs.get("group", ""), resource)
               for role in roles for rule in role.get("rules") or ())


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch."""
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, dict) and isinstance(target.get(k), dict):
            target[k] = _merge(target[k], v)
        else:
            target[k] = copy.deepcopy(v)
    return target
