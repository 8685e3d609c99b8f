"""The reconciler sends a change only where it lands: an endpoint change reaches the
proxies holding that Service's clusters, and a route change re-translates only the
proxies that can call the Service (the rest keep their config, untranslated)."""

from __future__ import annotations

from typing import Any

from gossamer.controlplane.reconcile import Reconciler
from gossamer.model import parse_document
from gossamer.store.base import EventType
from gossamer.store.memory import MemoryStore
from gossamer.translate import translate_mesh, translate_proxy
from gossamer.xds.types import ENDPOINT, ROUTE, Snapshot
from tests.unit.test_translate_incremental import (
    SERVICES,
    _route,
    proxy,
    service,
    sidecar,
    workload,
)


async def _reconciler() -> tuple[Reconciler, MemoryStore, dict[str, Snapshot]]:
    store = MemoryStore()
    for doc in [*(service(i) for i in range(SERVICES)), sidecar(),
                *(workload(j) for j in range(3 * SERVICES))]:
        res = parse_document(doc)
        await store.put(*res.key, doc)
    published: dict[str, Snapshot] = {}
    rec = Reconciler(store, lambda node, snap: published.__setitem__(node, snap))
    await rec._relist()
    for j in range(2 * SERVICES):
        p = proxy(j)
        rec.proxies[p.node_id] = p
        rec._push(p.node_id, p)
    published.clear()
    return rec, store, published


async def _change(rec: Reconciler, store: MemoryStore, doc: dict[str, Any]) -> None:
    res = parse_document(doc)
    stored = await store.put(*res.key, doc)
    rec._apply_event(EventType.PUT, stored)
    rec._rebuild()


async def test_an_endpoint_change_is_published_to_its_callers_only() -> None:
    rec, store, published = await _reconciler()
    # Workload 4 is s4's; the odd proxies are scoped to s1, s2 (and s2 as upstream).
    await _change(rec, store, workload(4, "Unhealthy"))
    cluster = "outbound|80||s4.default"
    holders = {p for p, c in rec._published.items() if cluster in c.snapshot.of(ENDPOINT)}
    assert holders
    assert len(holders) < len(rec.proxies)
    assert set(published) == holders
    for node, snap in published.items():  # what a full translation gives them
        full = translate_proxy(translate_mesh(rec.index), rec.proxies[node]).snapshot
        assert snap.version(ENDPOINT) == full.version(ENDPOINT)


async def test_a_route_change_translates_only_the_proxies_that_call_the_service() -> None:
    rec, store, published = await _reconciler()
    before = {n: c.snapshot for n, c in rec._published.items()}
    reused = rec.reused
    await _change(rec, store, _route(4, 5, 50))  # s4: no odd proxy has it in scope
    changed = {n for n, s in published.items() if s.version(ROUTE) != before[n].version(ROUTE)}
    calls_s4 = {n for n, c in rec._published.items()
                if c.scope is None or ("default", "s4") in c.scope}
    assert changed == calls_s4
    assert 0 < rec.reused - reused == len(rec.proxies) - len(calls_s4)
    for node, snap in published.items():
        full = translate_proxy(translate_mesh(rec.index), rec.proxies[node]).snapshot
        assert dict(snap.versions) == dict(full.versions)
