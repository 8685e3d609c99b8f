"""Reconcile: store events -> mesh index -> translated snapshots per proxy.

Theory of operation: one task follows the store's watch. Each event updates an
in-memory map of resources and marks the state dirty; the loop then waits for
a quiet period (`debounce`) but never longer than `max_delay` after the first
unpublished change, rebuilds the index once, translates the shared mesh
config once, and publishes a snapshot for every connected proxy. The first
change after `idle_after` without a build waits only the short quiet period
(`endpoint_debounce`): after an idle spell a change is most likely a lone
`apply`, and the long wait was a third of its propagation time. A second
change inside that short period, or any change soon after a build, marks a
burst, which waits for the long quiet period and builds once. Snapshots are
content-versioned, so a proxy whose config did not change gets nothing, and an
endpoint-only change moves only the EDS version. A proxy that connects is
translated against the current mesh config immediately. If the watch falls
behind the store's history (Compacted), the loop relists.

When every change since the last build only turned workloads healthy or
unhealthy (heartbeats, the common case under churn), nothing but endpoints can
differ: the build then patches the last index (`with_health`) rather than
re-reading the store, updates the mesh's endpoints (`update_endpoints`) and
gives each proxy that holds a changed Service its last snapshot with the new
endpoints, instead of translating every proxy again (O(1) rather than
O(translation) per proxy). Such a build also waits a shorter quiet period
(`endpoint_debounce`): it is cheap, and a heartbeat is one change, not the
first document of a larger apply.

Any other build translates the mesh again, and then each proxy only if what its
translation reads changed (`proxy_inputs`: its scope's clusters, its route
configs, every policy, its own Services and Workload). A route change on one
Service re-translates the callers that have it in scope; the others keep their
config with the new endpoints.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable

from gossamer.contract.node import BadNodeMetadata, NodeMetadata
from gossamer.index import MeshIndex, build_index, with_health
from gossamer.model import InvalidResource, Resource, ResourceKey, Workload, parse_document
from gossamer.store import Compacted, EventType, ResourceStore, StoredObject
from gossamer.translate import InconsistentConfig, MeshConfig, translate_mesh, translate_proxy
from gossamer.translate.mesh import only_services_changed, update_endpoints
from gossamer.translate.proxy import ProxyConfig, proxy_inputs, with_endpoints
from gossamer.translate.settings import MeshSettings
from gossamer.virtualips.table import TABLE_KIND, load_table
from gossamer.xds.types import ENDPOINT, Snapshot

log = logging.getLogger(__name__)
Publish = Callable[[str, Snapshot], None]


def health_only(old: Resource | None, new: Resource | None) -> bool:
    """Is `new` the workload `old` with nothing but its health changed?"""
    if not isinstance(old, Workload) or not isinstance(new, Workload):
        return False
    if old.spec.health is new.spec.health:
        return old.spec == new.spec and _same_meta(old, new)
    return old.spec.model_copy(update={"health": new.spec.health}) == new.spec \
        and _same_meta(old, new)


def _same_meta(old: Workload, new: Workload) -> bool:
    return old.metadata.model_copy(
        update={"resource_version": new.metadata.resource_version}) == new.metadata


class Reconciler:
    def __init__(self, store: ResourceStore, publish: Publish, *, debounce: float = 0.03,
                 endpoint_debounce: float = 0.005, max_delay: float = 0.3,
                 idle_after: float = 1.0, settings: MeshSettings | None = None) -> None:
        self.settings = settings or MeshSettings()
        self._store = store
        self._publish = publish
        self._debounce = debounce
        self._endpoint_debounce = endpoint_debounce
        self._max_delay = max_delay
        self._idle_after = idle_after
        self._last_build = float("-inf")  # loop time the last debounced build ended
        self._objects: dict[ResourceKey, Resource] = {}
        self._revision = 0
        self._dirty = asyncio.Event()
        self._ready = asyncio.Event()
        self.mesh: MeshConfig = translate_mesh(build_index([], 0), self.settings)
        self.proxies: dict[str, NodeMetadata] = {}
        # The last config published to each proxy.
        self._published: dict[str, ProxyConfig] = {}
        # When every change since the last build only turned workloads healthy or
        # unhealthy: those workloads as they are now; otherwise empty.
        self._health_changes: dict[ResourceKey, Workload] = {}
        self.rejected: dict[str, str] = {}  # node id -> why its config was not published
        # node id -> tap sessions of it running (`tapping`): not stored, so a restart
        # starts with nothing tapped, as the sessions' admin connections are gone too.
        self._tapped: Counter[str] = Counter()
        self.builds = 0
        self.reused = 0  # proxies a full build found unchanged (`_push_changed`)
        self.untouched = 0  # ...and those it did not even look at (`_untouched`)
        self.health_builds = 0  # builds that patched the last index (`with_health`)
        self.last_build_seconds = 0.0
        # Called after each build, and each connecting proxy's first config, has been
        # published (the control plane's GC policy, controlplane/gcpause.py).
        self.after_publish: Callable[[], None] | None = None
        # time.monotonic() of the oldest store change not yet built, and, while a
        # build publishes, of the oldest change it carries (push latency starts there).
        self._changed_at: float | None = None
        self.building_since: float | None = None

    @property
    def index(self) -> MeshIndex:
        return self.mesh.index

    def workload(self, namespace: str, name: str) -> Workload | None:
        """The Workload as the store has it now (the index has it after the next build)."""
        res = self._objects.get(ResourceKey(Workload.KIND, namespace, name))
        return res if isinstance(res, Workload) else None

    async def wait_ready(self) -> None:
        await self._ready.wait()

    def _load(self, obj: StoredObject) -> Resource | None:
        if obj.kind == TABLE_KIND:  # virtual IPs reach the index
            table = load_table(obj.body)
            return table.with_revision(obj.revision) if table is not None else None
        if obj.kind.startswith("_"):  # internal state (CA, tokens): never mesh config
            return None
        try:
            return parse_document(obj.body, stored=True).with_revision(obj.revision)
        except InvalidResource as exc:  # written by an older version, say; skip, don't crash
            log.error("ignoring invalid stored %s/%s/%s: %s", obj.kind, obj.namespace,
                      obj.name, exc)
            return None

    async def _relist(self) -> None:
        objects, revision = await self._store.list()
        self._objects = {}
        for obj in objects:
            res = self._load(obj)
            if res is not None:
                self._objects[res.key] = res
        self._revision = revision
        self._health_changes = {}
        self._rebuild()

    def _rebuild(self) -> None:
        started = time.perf_counter()
        self.building_since, self._changed_at = self._changed_at or time.monotonic(), None
        changes, self._health_changes = self._health_changes, {}
        try:
            if changes:
                index = with_health(self.index, changes.values(), self._revision)
                self.health_builds += 1
                self.mesh = update_endpoints(self.mesh, index)
                for node_id, proxy in list(self.proxies.items()):
                    self._push_endpoints(node_id, proxy)
            else:
                index = build_index(self._objects.values(), self._revision, self.index,
                                    self.settings.trust_domain)
                previous, self.mesh = self.mesh, translate_mesh(index, self.settings, self.mesh)
                quiet = only_services_changed(previous, self.mesh)
                for node_id, proxy in list(self.proxies.items()):
                    if quiet and self._untouched(node_id, proxy):
                        self.untouched += 1
                    else:
                        self._push_changed(node_id, proxy)
        finally:
            self.building_since = None
        self.builds += 1
        self.last_build_seconds = time.perf_counter() - started
        if self.after_publish is not None:
            self.after_publish()

    def _last(self, node_id: str, proxy: NodeMetadata) -> ProxyConfig | None:
        """The config last published to the proxy as it is now, if it was published."""
        last = self._published.get(node_id)
        if last is None or last.proxy != proxy or node_id in self.rejected:
            return None
        return last

    def _push_endpoints(self, node_id: str, proxy: NodeMetadata) -> None:
        last = self._last(node_id, proxy)
        if last is None:
            self._push(node_id, proxy)  # not published as it is now: translate it whole
            return
        held = last.snapshot.of(ENDPOINT)
        if any(c in held for c in self.mesh.endpoint_changes):
            self._keep(node_id, proxy, last)
        # else none of its clusters changed: its config is still exact

    def _untouched(self, node_id: str, proxy: NodeMetadata) -> bool:
        """After a build where only some Services changed (`only_services_changed`):
        is this proxy's published config exact as it is, without even computing its
        inputs? Only for a scoped proxy, whose scope is a few Services."""
        last = self._last(node_id, proxy)
        # With the same Workloads and Services, no endpoint changed either.
        return last is not None and last.scope is not None \
            and last.scope.isdisjoint(self.mesh.changed_services)

    def _push_changed(self, node_id: str, proxy: NodeMetadata) -> None:
        last = self._last(node_id, proxy)
        if last is None or last.inputs != proxy_inputs(self.mesh, proxy,
                                                       node_id in self._tapped):
            self._push(node_id, proxy)
            return
        self.reused += 1
        self._keep(node_id, proxy, last)

    def _keep(self, node_id: str, proxy: NodeMetadata, last: ProxyConfig) -> None:
        """Publish the proxy's last config with this mesh's endpoints."""
        config = with_endpoints(self.mesh, proxy, last)
        self._published[node_id] = config
        self._publish(node_id, config.snapshot)

    def _push(self, node_id: str, proxy: NodeMetadata) -> None:
        try:
            config = translate_proxy(self.mesh, proxy, self._published.get(node_id),
                                     node_id in self._tapped)
        except InconsistentConfig as exc:
            # Keep the proxy on its last good snapshot rather than push a broken one.
            self.rejected[node_id] = str(exc)
            log.error("not publishing config for %s: %s", node_id, exc)
            return
        self.rejected.pop(node_id, None)
        self._published[node_id] = config
        self._publish(node_id, config.snapshot)

    def tapping(self, node_ids: Iterable[str], running: bool) -> None:
        """A tap session of these proxies starts (`running`) or ends. While one runs,
        a proxy's inbound route keeps the tap filter on (translate/listeners.py
        TAP_OFF); the change is published at once, as a route (RDS) change."""
        changed = []
        for node_id in node_ids:
            before = node_id in self._tapped
            self._tapped[node_id] += 1 if running else -1
            if self._tapped[node_id] <= 0:
                del self._tapped[node_id]
            if before != (node_id in self._tapped):
                changed.append(node_id)
        for node_id in changed:
            proxy = self.proxies.get(node_id)
            if proxy is not None:
                self._push(node_id, proxy)  # its listeners are kept (`previous`)

    def proxy_connected(self, node_id: str, metadata: dict[str, object]) -> None:
        try:
            proxy = NodeMetadata.from_metadata(node_id, metadata)
        except BadNodeMetadata as exc:
            self.rejected[node_id] = str(exc)
            log.error("proxy %s: %s", node_id, exc)
            return
        self.proxies[node_id] = proxy
        self._push(node_id, proxy)
        if self.after_publish is not None:
            self.after_publish()

    def proxy_disconnected(self, node_id: str) -> None:
        self.proxies.pop(node_id, None)
        self._published.pop(node_id, None)

    def _apply_event(self, type_: EventType, obj: StoredObject) -> None:
        key = ResourceKey(obj.kind, obj.namespace, obj.name)
        first = self._changed_at is None  # the first change since the last build
        old = self._objects.get(key)
        res = None
        if type_ is EventType.DELETE:
            self._objects.pop(key, None)
        else:
            res = self._load(obj)
            if res is not None:
                self._objects[key] = res
        if (first or self._health_changes) and health_only(old, res) \
                and isinstance(res, Workload):  # (health_only implies it)
            self._health_changes[key] = res
        else:  # not a health change, or one after another kind since the last build
            self._health_changes = {}
        self._revision = max(self._revision, obj.revision)
        if self._changed_at is None:
            self._changed_at = time.monotonic()
        self._dirty.set()

    async def _follow(self) -> None:
        async for event in self._store.watch(self._revision):
            self._apply_event(event.type, event.object)

    async def _debounced_rebuilds(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._dirty.wait()
            first = loop.time()
            burst = first - self._last_build < self._idle_after
            while True:
                self._dirty.clear()
                remaining = first + self._max_delay - loop.time()
                short = bool(self._health_changes) or not burst
                quiet = self._endpoint_debounce if short else self._debounce
                try:
                    await asyncio.wait_for(self._dirty.wait(),
                                           timeout=max(0.0, min(quiet, remaining)))
                except TimeoutError:
                    break
                burst = True  # another change within the quiet period
                if loop.time() >= first + self._max_delay:
                    break
            self._dirty.clear()
            self._rebuild()
            self._last_build = loop.time()

    async def run(self) -> None:
        await self._relist()
        self._ready.set()
        builder = asyncio.create_task(self._debounced_rebuilds())
        try:
            while True:
                try:
                    await self._follow()
                    return
                except Compacted:
                    log.warning("store watch fell behind its history; relisting")
                    await self._relist()
        finally:
            builder.cancel()
