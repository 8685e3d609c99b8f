"""`gossamer control-plane --kubernetes`: the cluster as a source of the store.

The controller is a source adapter, not a second pipeline: it lists and watches the
cluster (k8s/client.py), keeps the objects in memory, asks k8s/convert.py what the
store should hold, and writes the difference into the control plane's store. From
there the usual path (reconcile -> index -> translate -> xDS) serves it, exactly as
if `gossamer apply` had written it. It owns only documents annotated
`gossamer.dev/source: kubernetes`; what was applied otherwise is left alone (a VM's
Workload, say).

Per kind: list, then watch from the list's resourceVersion, resuming from the last
event's version when the connection ends; on 410 Gone list again (objects deleted
meanwhile are dropped by the replace); on other errors back off (0.5 s doubling to
30 s). The leader (k8s/lease.py) writes the index's conditions back into the
status subresource of the mesh's kinds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from gossamer.k8s.client import WATCHED, Gone, KubeApi, KubeError, Watched
from gossamer.k8s.convert import SOURCE, SOURCE_ANNOTATION, Cluster, Desired, Problem, desired
from gossamer.k8s.lease import LeaderElector
from gossamer.model.meta import GATEWAY_GROUP, ResourceKey
from gossamer.store import ResourceStore, StoreError

log = logging.getLogger(__name__)
# The Gateway API's controllerName of the routes' parent statuses Gossamer writes.
CONTROLLER_NAME = "gossamer.dev/mesh"
StatusOf = Callable[[ResourceKey], dict[str, Any]]


class Controller:
    def __init__(self, api: KubeApi, store: ResourceStore, *, status_of: StatusOf,
                 elector: LeaderElector | None = None,
                 watched: list[Watched] | None = None, debounce: float = 0.05) -> None:
        self.api = api
        self.store = store
        self.status_of = status_of
        self.elector = elector
        self.watched = WATCHED if watched is None else watched
        self.debounce = debounce
        self.cluster = Cluster()
        self.problems: list[Problem] = []
        self.relists: dict[str, int] = {}  # per kind: lists after the first (410s)
        self.synced = asyncio.Event()  # every kind listed once and written to the store
        self._listed: set[str] = set()
        self._dirty = asyncio.Event()
        self._desired = Desired()
        self._written_status: dict[tuple[str, str, str], Any] = {}

    async def run(self) -> None:
        tasks = [asyncio.create_task(self._inform(w), name=f"k8s-{w.key}")
                 for w in self.watched]
        tasks.append(asyncio.create_task(self._sync_loop(), name="k8s-sync"))
        tasks.append(asyncio.create_task(self._status_loop(), name="k8s-status"))
        if self.elector is not None:
            tasks.append(asyncio.create_task(self.elector.run(), name="k8s-lease"))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            if self.elector is not None:
                await self.elector.release()  # hand over at once, not after the lease

    async def _inform(self, w: Watched) -> None:
        delay = 0.5
        listed = False
        while True:
            try:
                items, version = await self.api.list(w)
                if listed:
                    self.relists[w.key] = self.relists.get(w.key, 0) + 1
                listed = True
                self._replace(w.key, items)
                delay = 0.5
                while True:
                    async for kind, obj in self.api.watch(w, version):
                        version = self._event(w.key, kind, obj) or version
            except Gone as exc:
                log.info("kubernetes: %s; listing %s again", exc, w.key)
            except KubeError as exc:
                if exc.code == 404 and not listed:
                    # The kind's CRD is not installed: nothing of it to serve.
                    self._replace(w.key, [])
                log.warning("kubernetes: %s; retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _replace(self, key: str, items: list[dict[str, Any]]) -> None:
        self.cluster.objects[key] = {_ref(o): o for o in items}
        self._listed.add(key)
        self._dirty.set()

    def _event(self, key: str, kind: str, obj: dict[str, Any]) -> str | None:
        if kind == "BOOKMARK":
            return str(obj["metadata"].get("resourceVersion") or "") or None
        objects = self.cluster.of(key)
        if kind == "DELETED":
            objects.pop(_ref(obj), None)
        elif kind in ("ADDED", "MODIFIED"):
            objects[_ref(obj)] = obj
        self._dirty.set()
        return str(obj["metadata"].get("resourceVersion") or "") or None

    async def _sync_loop(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self.debounce)
            self._dirty.clear()
            if not self._listed.issuperset(w.key for w in self.watched):
                continue
            try:
                await self.sync_once()
            except StoreError as exc:
                log.warning("kubernetes: cannot write the store: %s", exc)
                self._dirty.set()
                await asyncio.sleep(1.0)
                continue
            self.synced.set()

    async def sync_once(self) -> None:
        """Write the difference between what the cluster maps to and what the store
        holds from it."""
        want = desired(self.cluster)
        problems = list(want.problems)
        stored, _ = await self.store.list()
        owned = {ResourceKey(o.kind, o.namespace, o.name): o for o in stored}
        for key, body in want.documents.items():
            have = owned.get(key)
            if have is not None and not _ours(have.body):
                problems.append(Problem(*want.origins[key], f"{key} exists in the store and "
                                        "was not made by the controller; left alone"))
                continue
            if have is None or have.body != body:
                await self.store.put(*key, body)
        for key, have in owned.items():
            if _ours(have.body) and key not in want.documents:
                with contextlib.suppress(StoreError):
                    await self.store.delete(*key)
        for p in problems:
            if p not in self.problems:
                log.warning("kubernetes: %s", p)
        self.problems, self._desired = problems, want

    async def _status_loop(self, interval: float = 0.5) -> None:
        while True:
            await asyncio.sleep(interval)
            if self.elector is not None and not self.elector.leading:
                self._written_status.clear()  # a new term starts from the cluster's view
                continue
            with contextlib.suppress(KubeError):
                await self.write_status()

    async def write_status(self) -> int:
        """Patch the status of every mesh object whose conditions differ from the
        index's; returns how many were written."""
        by_key = {w.key: w for w in self.watched if w.status}
        written = 0
        for doc_key, origin in list(self._desired.origins.items()):
            w = next((w for k, w in by_key.items() if k.endswith("/" + origin[0])
                      and (origin[1], origin[2]) in self.cluster.of(k)), None)
            if w is None:
                continue
            obj = self.cluster.of(w.key)[(origin[1], origin[2])]
            raw = self.status_of(doc_key)
            ref = (w.key, origin[1], origin[2])
            if not raw or self._written_status.get(ref) == raw:
                continue
            try:
                await self.api.patch_status(w, origin[1], origin[2], k8s_status(raw, obj))
            except KubeError as exc:
                log.warning("kubernetes: %s", exc)
                continue
            self._written_status[ref] = raw
            written += 1
        return written


def _ref(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name"))


def _ours(body: dict[str, Any]) -> bool:
    return bool(((body.get("metadata") or {}).get("annotations") or {})
                .get(SOURCE_ANNOTATION) == SOURCE)


def k8s_status(status: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
    """The index's status as the object's schema has it: conditions with the
    generation they were computed for and their last transition time (kept while
    their status holds); for Gateway API routes, per parent (`status.parents`); for a
    Gateway, its own conditions and each listener's."""
    old_status = obj.get("status") or {}
    generation = int((obj.get("metadata") or {}).get("generation") or 0)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if obj.get("kind") == "Gateway" and "conditions" in status:
        old_listeners = {lis.get("name"): lis.get("conditions") or ()
                         for lis in old_status.get("listeners") or ()}
        listeners = [{**lis, "conditions": _stamped(lis.get("conditions") or (),
                                                    old_listeners.get(lis.get("name"), ()),
                                                    generation, now)}
                     for lis in status.get("listeners") or ()]
        return {**status, "listeners": listeners, "conditions": _stamped(
            status["conditions"], old_status.get("conditions") or (), generation, now)}
    if str(obj.get("apiVersion", "")).startswith(GATEWAY_GROUP + "/"):
        return {"parents": _route_parents(status, obj, generation, now)}
    if "conditions" not in status:
        return status
    conds = _stamped(status["conditions"], old_status.get("conditions") or (), generation, now)
    return {**status, "conditions": conds}


def _route_parents(status: dict[str, Any], obj: dict[str, Any], generation: int,
                   now: str) -> list[dict[str, Any]]:
    """A route's `status.parents`: for each Gateway parent what the gateway index
    says of it, for each Service parent (GAMMA) the mesh's conditions."""
    ns = str((obj.get("metadata") or {}).get("namespace") or "")

    def ref_key(ref: dict[str, Any]) -> tuple[str, str, str, str]:
        return (str(ref.get("name")), str(ref.get("namespace") or ns),
                str(ref.get("sectionName") or ""), str(ref.get("port") or ""))

    old = {ref_key(p.get("parentRef") or {}): p.get("conditions") or ()
           for p in (obj.get("status") or {}).get("parents") or ()}
    by_gateway = {ref_key(p["parentRef"]): p for p in status.get("parents") or ()}
    out = []
    for ref in (obj.get("spec") or {}).get("parentRefs") or ():
        key = ref_key(ref)
        given = by_gateway.get(key)
        conds = given["conditions"] if given is not None else status.get("conditions")
        if conds:
            out.append({"parentRef": ref, "controllerName": (given or {}).get(
                "controllerName", CONTROLLER_NAME),
                        "conditions": _stamped(conds, old.get(key, ()), generation, now)})
    return out

def _stamped(conditions: Iterable[dict[str, Any]], before: Iterable[dict[str, Any]],
             generation: int, now: str) -> list[dict[str, Any]]:
    """Conditions as the API has them: observedGeneration, and a lastTransitionTime
    that moves only when the condition's status does."""
    old = {c.get("type"): c for c in before}
    out = []
    for c in conditions:
        prior = old.get(c["type"]) or {}
        same = prior.get("status") == c["status"]
        out.append({**c, "observedGeneration": generation,
                    "lastTransitionTime": prior.get("lastTransitionTime", now)
                    if same else now})
    return out
