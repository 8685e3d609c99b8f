"""`gossamer install`'s release record, as Helm keeps one: what the last install
applied, so that an upgrade deletes what the new render no longer makes and
`gossamer uninstall` removes exactly what was installed.

The record is the ConfigMap `gossamer-release` in the release namespace: the chart's
name and version, a revision that counts installs, a status, and every object applied
(apiVersion, kind, namespace, name). It holds no values (they include the CA's key).
CustomResourceDefinitions are recorded but never deleted, by an upgrade or an
uninstall, as Helm does: deleting a CRD deletes every object of its kind in the
cluster. An install first records what was there and what it is about to apply
(`pending-upgrade`), so an install that fails half-way still leaves everything it
created in the record; once applied and pruned, the record is the new set
(`deployed`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lightkube.resources.core_v1 import ConfigMap

from gossamer.k8s.client import KubeApi

RECORD = "gossamer-release"
KEPT_KINDS = frozenset({"CustomResourceDefinition", "Namespace"})
Ref = tuple[str, str, str, str]  # apiVersion, kind, namespace, name
Report = Callable[[str], None]


@dataclass
class Release:
    chart: str = ""
    version: str = ""
    revision: int = 0
    status: str = ""
    objects: list[Ref] = field(default_factory=list)

    def config_map(self, namespace: str) -> dict[str, Any]:
        body = {"chart": self.chart, "version": self.version, "revision": self.revision,
                "status": self.status, "updated": datetime.now(UTC).isoformat(),
                "objects": [dict(zip(("apiVersion", "kind", "namespace", "name"), r,
                                     strict=True)) for r in self.objects]}
        return {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": RECORD, "namespace": namespace,
                             "labels": {"app.kubernetes.io/managed-by": "gossamer-install",
                                        "app.kubernetes.io/part-of": "gossamer"}},
                "data": {"release": json.dumps(body, indent=1, sort_keys=True)}}


def ref(doc: dict[str, Any]) -> Ref:
    meta = doc.get("metadata") or {}
    return (str(doc["apiVersion"]), str(doc["kind"]), str(meta.get("namespace") or ""),
            str(meta["name"]))


def parse(cm: dict[str, Any] | None) -> Release | None:
    """The record in the ConfigMap, or None without one (a first install)."""
    if cm is None:
        return None
    try:
        body = json.loads((cm.get("data") or {})["release"])
        objects = [(o["apiVersion"], o["kind"], o.get("namespace") or "", o["name"])
                   for o in body["objects"]]
        return Release(str(body.get("chart", "")), str(body.get("version", "")),
                       int(body.get("revision", 0)), str(body.get("status", "")), objects)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"ConfigMap {RECORD}: not a release record ({exc})") from exc


def stale(old: Iterable[Ref], new: Iterable[Ref]) -> list[Ref]:
    """What the old release made and the new one does not, in reverse install order
    (the webhook first, the ServiceAccounts last); never CRDs nor Namespaces."""
    keep = set(new)
    gone = [r for r in old if r not in keep and r[1] not in KEPT_KINDS]
    return list(reversed(gone))


async def read(api: KubeApi, namespace: str) -> Release | None:
    return parse(await api.get(ConfigMap, RECORD, namespace))


async def install(api: KubeApi, docs: list[dict[str, Any]], namespace: str, chart: str,
                  version: str, apply: Callable[[dict[str, Any]], Awaitable[None]],
                  report: Report) -> Release:
    """Apply `docs` (through `apply`), delete what the previous release made and
    these do not, and record the release."""
    old = await read(api, namespace)
    new_refs = [ref(d) for d in docs]
    old_refs = old.objects if old is not None else []
    revision = (old.revision if old is not None else 0) + 1
    pending = Release(chart, version, revision, "pending-upgrade",
                      list(dict.fromkeys([*old_refs, *new_refs])))
    await api.apply(pending.config_map(namespace))
    for doc in docs:
        await apply(doc)
    for gone in stale(old_refs, new_refs):
        await _delete(api, gone, report)
    done = Release(chart, version, revision, "deployed", new_refs)
    await api.apply(done.config_map(namespace))
    return done


async def uninstall(api: KubeApi, namespace: str, report: Report) -> Release | None:
    """Delete what the record lists (but CRDs), then the record; None without one."""
    old = await read(api, namespace)
    if old is None:
        return None
    for gone in stale(old.objects, []):
        await _delete(api, gone, report)
    await api.delete("v1", "ConfigMap", RECORD, namespace)
    return old


async def _delete(api: KubeApi, r: Ref, report: Report) -> None:
    found = await api.delete(r[0], r[1], r[3], r[2] or None)
    report(f"{r[1]}/{r[3]} {'deleted' if found else 'already gone'}")
