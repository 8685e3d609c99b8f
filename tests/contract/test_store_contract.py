"""The ResourceStore contract (gossamer.store.base), run against every backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gossamer.store import (
    Compacted,
    Conflict,
    EventType,
    NotFound,
    ResourceStore,
    StoreClosed,
    WatchEvent,
)

Factory = Callable[..., ResourceStore]

# Generous per-event bound: a healthy store answers in microseconds, and no
# test may hang on a missing event.
TIMEOUT = 2.0


async def take(events: AsyncIterator[WatchEvent], count: int) -> list[WatchEvent]:
    return [await asyncio.wait_for(anext(events), TIMEOUT) for _ in range(count)]


def svc(port: int = 80) -> dict[str, Any]:
    return {"spec": {"ports": [{"port": port}], "selector": {"app": "web"}}}


async def test_get_missing_returns_none(store: ResourceStore) -> None:
    assert await store.get("Service", "default", "web") is None


async def test_put_then_get(store: ResourceStore) -> None:
    put = await store.put("Service", "default", "web", svc())
    got = await store.get("Service", "default", "web")
    assert got == put
    assert (put.kind, put.namespace, put.name, put.body) == ("Service", "default", "web", svc())
    assert put.revision == await store.revision() == 1


async def test_bodies_are_copies(store: ResourceStore) -> None:
    body = svc()
    put = await store.put("Service", "default", "web", body)
    body["spec"]["ports"].append({"port": 1})
    put.body["spec"].clear()
    got = await store.get("Service", "default", "web")
    assert got is not None
    got.body.clear()
    assert (await store.list())[0][0].body == svc()


async def test_list_sorted_filtered_with_revision(store: ResourceStore) -> None:
    for kind, namespace, name in [
        ("Service", "prod", "b"),
        ("HTTPRoute", "default", "r"),
        ("Service", "default", "z"),
        ("Service", "default", "a"),
    ]:
        await store.put(kind, namespace, name, svc())
    everything, revision = await store.list()
    assert [(o.kind, o.namespace, o.name) for o in everything] == [
        ("HTTPRoute", "default", "r"),
        ("Service", "default", "a"),
        ("Service", "default", "z"),
        ("Service", "prod", "b"),
    ]
    assert revision == 4
    services, _ = await store.list(kind="Service")
    assert [o.name for o in services] == ["a", "z", "b"]
    in_default, _ = await store.list(namespace="default")
    assert [o.name for o in in_default] == ["r", "a", "z"]
    both, _ = await store.list(kind="Service", namespace="prod")
    assert [o.name for o in both] == ["b"]
    assert await store.list(kind="Workload") == ([], 4)


async def test_revisions_strictly_increase_across_kinds(store: ResourceStore) -> None:
    revisions = [
        (await store.put(kind, "default", "x", svc(port))).revision
        for port, kind in enumerate(["Service", "HTTPRoute", "Service", "Workload"])
    ]
    assert revisions == [1, 2, 3, 4]
    assert (await store.delete("HTTPRoute", "default", "x")).revision == 5
    assert await store.revision() == 5


async def test_create_only_conflicts_when_present(store: ResourceStore) -> None:
    created = await store.put("Service", "default", "web", svc(), expected_revision=0)
    assert created.revision == 1
    with pytest.raises(Conflict):
        await store.put("Service", "default", "web", svc(81), expected_revision=0)
    with pytest.raises(Conflict):  # even with an identical body
        await store.put("Service", "default", "web", svc(), expected_revision=0)


async def test_expected_revision(store: ResourceStore) -> None:
    first = await store.put("Service", "default", "web", svc(80))
    await store.put("Service", "default", "other", svc(80))
    second = await store.put("Service", "default", "web", svc(81), first.revision)
    with pytest.raises(Conflict):
        await store.put("Service", "default", "web", svc(82), expected_revision=first.revision)
    with pytest.raises(Conflict):
        await store.put("Service", "default", "nope", svc(), expected_revision=1)
    assert await store.revision() == second.revision == 3  # conflicts consume nothing
    third = await store.put("Service", "default", "web", svc(82), second.revision)
    assert third.revision == 4


async def test_identical_put_is_a_noop(store: ResourceStore) -> None:
    first = await store.put("Service", "default", "web", svc())
    events = store.watch(first.revision)
    reordered = {"spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}
    assert await store.put("Service", "default", "web", reordered) == first
    assert await store.put("Service", "default", "web", svc(), first.revision) == first
    assert await store.revision() == first.revision
    after = await store.put("Service", "default", "web", svc(81))
    assert after.revision == first.revision + 1
    assert [e.revision for e in await take(events, 1)] == [after.revision]


async def test_delete(store: ResourceStore) -> None:
    put = await store.put("Service", "default", "web", svc())
    deleted = await store.delete("Service", "default", "web", expected_revision=put.revision)
    assert (deleted.name, deleted.body, deleted.revision) == ("web", svc(), 2)
    assert await store.get("Service", "default", "web") is None
    with pytest.raises(NotFound):
        await store.delete("Service", "default", "web")
    assert await store.revision() == 2


async def test_delete_with_stale_revision_conflicts(store: ResourceStore) -> None:
    first = await store.put("Service", "default", "web", svc(80))
    await store.put("Service", "default", "web", svc(81))
    with pytest.raises(Conflict):
        await store.delete("Service", "default", "web", expected_revision=first.revision)
    assert await store.get("Service", "default", "web") is not None


async def test_watch_replays_then_follows(store: ResourceStore) -> None:
    await store.put("Service", "default", "web", svc(80))
    await store.put("HTTPRoute", "default", "r", {"spec": {}})
    await store.delete("Service", "default", "web")
    events = store.watch(0)
    replayed = await take(events, 3)
    assert [(e.type, e.revision, e.object.kind) for e in replayed] == [
        (EventType.PUT, 1, "Service"),
        (EventType.PUT, 2, "HTTPRoute"),
        (EventType.DELETE, 3, "Service"),
    ]
    assert replayed[2].object.revision == 3
    assert replayed[2].object.body == svc(80)
    pending = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0.01)
    assert not pending.done()
    live = await store.put("Service", "default", "web", svc(81))
    event = await asyncio.wait_for(pending, TIMEOUT)
    assert (event.type, event.revision, event.object) == (EventType.PUT, 4, live)


async def test_watch_from_current_sees_only_new(store: ResourceStore) -> None:
    for port in range(3):
        await store.put("Service", "default", "web", svc(port))
    events = store.watch(await store.revision())
    await store.put("Service", "default", "new", svc())
    [event] = await take(events, 1)
    assert (event.revision, event.object.name) == (4, "new")


async def test_two_watchers_see_everything(store: ResourceStore) -> None:
    await store.put("Service", "default", "a", svc())
    first, second = store.watch(0), store.watch(0)
    await store.put("Service", "default", "b", svc())
    await store.delete("Service", "default", "a")
    seen = await asyncio.gather(take(first, 3), take(second, 3))
    assert [[(e.type, e.revision) for e in events] for events in seen] == 2 * [
        [(EventType.PUT, 1), (EventType.PUT, 2), (EventType.DELETE, 3)]
    ]


async def test_interleaved_writes_are_neither_missed_nor_duplicated(
    store: ResourceStore,
) -> None:
    # More history than one replay batch, then writes racing the watcher.
    for i in range(300):
        await store.put("Service", "default", f"s{i % 11}", {"i": i})
    written: list[int] = []

    async def writer() -> None:
        for i in range(200):
            written.append((await store.put("Workload", "default", f"w{i % 7}", {"i": i})).revision)
            await asyncio.sleep(0)

    events = store.watch(0)
    task = asyncio.create_task(writer())
    seen = [e.revision for e in await take(events, 500)]
    await task
    assert written == list(range(301, 501))
    assert seen == list(range(1, 501))


async def test_compacted_history(store_factory: Factory) -> None:
    store = store_factory(history=5)
    for i in range(12):
        await store.put("Service", "default", "web", {"i": i})
    with pytest.raises(Compacted):
        await anext(store.watch(0))
    with pytest.raises(Compacted):
        await anext(store.watch(6))
    assert [e.revision for e in await take(store.watch(7), 5)] == [8, 9, 10, 11, 12]


async def test_slow_watcher_is_compacted(store_factory: Factory) -> None:
    store = store_factory(history=5)
    await store.put("Service", "default", "web", {"i": -1})
    events = store.watch(0)
    assert [e.revision for e in await take(events, 1)] == [1]
    for i in range(10):
        await store.put("Service", "default", "web", {"i": i})
    with pytest.raises(Compacted):
        await take(events, 1)


async def test_watch_from_the_future_is_compacted(store: ResourceStore) -> None:
    await store.put("Service", "default", "web", svc())
    with pytest.raises(Compacted):
        await anext(store.watch(5))


async def test_close_ends_watchers(store: ResourceStore) -> None:
    await store.put("Service", "default", "web", svc())
    live, unread = store.watch(1), store.watch(0)
    pending = asyncio.ensure_future(anext(live))
    await asyncio.sleep(0.01)
    await store.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(pending, TIMEOUT)
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(unread), TIMEOUT)


async def test_closed_store_refuses_operations(store: ResourceStore) -> None:
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreClosed):
        await store.get("Service", "default", "web")
    with pytest.raises(StoreClosed):
        await store.put("Service", "default", "web", svc())
    with pytest.raises(StoreClosed):
        store.watch(0)
