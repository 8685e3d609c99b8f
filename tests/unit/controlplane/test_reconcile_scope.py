"""The reconciler sends a change only where it lands: an endpoint change reaches the
proxies holding that Service's clusters, and a route change re-translates only the
proxies that can call the Service (the rest keep their config, untranslated)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import replace
from typing import Any

from gossamer.controlplane.reconcile import Reconciler
from gossamer.index import build_index
from gossamer.model import parse_document
from gossamer.store.base import EventType
from gossamer.store.memory import MemoryStore
from gossamer.translate import translate_mesh, translate_proxy
from gossamer.xds.types import ENDPOINT, ROUTE, VHOST, Snapshot
from tests.unit.translate.test_incremental import (
    SERVICES,
    _random_change,
    _route,
    consumers,
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
    for p in [*(proxy(j) for j in range(2 * SERVICES)), *consumers()]:
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
    reused, untouched = rec.reused, rec.untouched
    await _change(rec, store, _route(4, 5, 50))  # s4: in few odd proxies' scopes
    changed = {n for n, s in published.items()  # by VHDS, a virtual host changes
               if (s.version(ROUTE), s.version(VHOST))
               != (before[n].version(ROUTE), before[n].version(VHOST))}
    calls_s4 = {n for n, c in rec._published.items()
                if c.scope is None or ("default", "s4") in c.scope}
    assert changed == calls_s4
    # The other scoped proxies are skipped without a look at their inputs.
    assert rec.untouched - untouched == len(rec.proxies) - len(calls_s4) > 0
    # Only a VHDS proxy keeps its config (with the new virtual hosts, `with_endpoints`).
    assert rec.reused - reused == sum(1 for p in rec.proxies.values() if p.vhds) > 0
    for node, snap in published.items():
        full = translate_proxy(translate_mesh(rec.index), rec.proxies[node]).snapshot
        assert dict(snap.versions) == dict(full.versions)


async def test_every_shortcut_publishes_what_a_full_translation_gives() -> None:
    """Random changes through the reconciler: after each build, every proxy's
    published config is what translating it from scratch gives."""
    rng = random.Random(11)
    rec, store, _ = await _reconciler()
    docs: dict[str, dict[str, Any]] = {f"service{i}": service(i) for i in range(SERVICES)}
    docs |= {f"workload{j}": workload(j) for j in range(3 * SERVICES)}
    docs["sidecar"] = sidecar()
    stored = {name: parse_document(doc).key for name, doc in docs.items()}
    for step in range(200):
        before = {name: repr(doc) for name, doc in docs.items()}
        for _ in range(rng.choice([1, 1, 3])):  # several changes in one build, too
            _random_change(rng, docs)
        for name in set(before) - set(docs):
            key = stored.pop(name)
            obj = await store.get(*key)
            await store.delete(*key)
            rec._apply_event(EventType.DELETE, obj)
        for name, doc in docs.items():
            if before.get(name) != repr(doc):
                res = parse_document(doc)
                stored[name] = res.key
                rec._apply_event(EventType.PUT, await store.put(*res.key, doc))
        rec._rebuild()
        # The reference reads the store afresh, as the reconciler's patched index
        # (`with_health`) must equal a fresh one.
        objects, revision = await store.list()
        index = build_index([parse_document(o.body).with_revision(o.revision)
                             for o in objects], revision)
        # (Revisions aside: this test feeds deletions with the object's last revision.)
        assert replace(rec.index, revision=revision) == index, step
        mesh = translate_mesh(index)
        for node, prx in rec.proxies.items():
            want = translate_proxy(mesh, prx).snapshot
            got = rec._published[node].snapshot
            assert dict(got.versions) == dict(want.versions), (step, node)
    assert rec.untouched
    assert rec.reused
    assert rec.health_builds  # the patched-index path ran


async def test_a_heartbeat_waits_the_short_quiet_period_and_an_apply_the_long_one() -> None:
    rec, store, _ = await _reconciler()
    rec._debounce, rec._endpoint_debounce, rec._max_delay = 2.0, 0.0, 10.0
    rec._idle_after = 60.0  # every change counts as soon after a build
    runner = asyncio.create_task(rec.run())
    try:
        await rec.wait_ready()
        rec._last_build = asyncio.get_running_loop().time()
        builds = rec.builds
        await store.put("Workload", "default", "s0-0", workload(0, "Unhealthy"))
        await asyncio.wait_for(_built(rec, builds), 1.0)  # not the 2 s quiet period
        assert rec.health_builds == 1
        builds = rec.builds
        await store.put("HTTPRoute", "default", "r0", _route(0, 1, 50))
        await asyncio.sleep(1.0)
        assert rec.builds == builds  # an apply still waits for quiet
        await asyncio.wait_for(_built(rec, builds), 5.0)
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


async def test_a_lone_apply_after_an_idle_spell_builds_at_once_and_a_burst_waits() -> None:
    rec, store, _ = await _reconciler()
    rec._debounce, rec._endpoint_debounce, rec._max_delay = 2.0, 0.3, 10.0
    rec._idle_after = 0.5
    runner = asyncio.create_task(rec.run())
    try:
        await rec.wait_ready()
        await asyncio.sleep(0.6)  # idle since the initial list
        builds = rec.builds
        await store.put("HTTPRoute", "default", "r0", _route(0, 1, 50))
        await asyncio.wait_for(_built(rec, builds), 1.5)  # the short period, not 2 s
        await asyncio.sleep(0.6)
        # Two applies 0.1 s apart: the second lands inside the short period, so
        # this is a burst, built once after the long quiet period.
        builds = rec.builds
        await store.put("HTTPRoute", "default", "r0", _route(0, 1, 40))
        await asyncio.sleep(0.1)
        await store.put("HTTPRoute", "default", "r1", _route(1, 2, 40))
        await asyncio.sleep(1.2)
        assert rec.builds == builds
        await asyncio.wait_for(_built(rec, builds), 5.0)
        assert rec.builds == builds + 1
        # And a change right after that build waits the long period too.
        builds = rec.builds
        await store.put("HTTPRoute", "default", "r1", _route(1, 2, 30))
        await asyncio.sleep(1.2)
        assert rec.builds == builds
        await asyncio.wait_for(_built(rec, builds), 5.0)
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


async def _built(rec: Reconciler, builds: int) -> None:
    while rec.builds == builds:
        await asyncio.sleep(0.01)


async def test_the_gc_hook_runs_after_every_build_and_every_first_config() -> None:
    rec, _, published = await _reconciler()
    calls: list[int] = []
    rec.after_publish = lambda: calls.append(len(published))
    p = proxy(2 * SERVICES)
    rec.proxy_connected(p.node_id, {
        "service": p.service, "workload": p.workload, "inbound_port": p.inbound_port,
        "app_port": p.app_port, "outbound_port": p.outbound_port, "labels": dict(p.labels)})
    assert calls == [1]  # after the new proxy's config was published
    rec._rebuild()
    assert len(calls) == 2
