"""What only a durable backend promises: state, revisions and history survive a restart."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from gossamer.store import Compacted, EventType
from gossamer.store.sqlite import SqliteStore
from tests.contract.conftest import DurableStores


async def _populate(durable: DurableStores) -> None:
    store = durable.open()
    await store.put("Service", "default", "web", {"spec": {"port": 80}})
    await store.put("Service", "default", "api", {"spec": {"port": 81}})
    await store.put("HTTPRoute", "default", "r", {"spec": {"rules": []}})
    await store.delete("Service", "default", "api")
    await store.close()


async def test_objects_and_revision_survive_reopen(durable: DurableStores) -> None:
    await _populate(durable)
    store = durable.open()
    objects, revision = await store.list()
    assert revision == 4
    assert [(o.kind, o.name, o.revision, o.body) for o in objects] == [
        ("HTTPRoute", "r", 3, {"spec": {"rules": []}}),
        ("Service", "web", 1, {"spec": {"port": 80}}),
    ]
    assert (await store.put("Service", "default", "new", {})).revision == 5


async def test_watch_after_reopen_replays_stored_events(durable: DurableStores) -> None:
    await _populate(durable)
    store = durable.open()
    events = store.watch(1)
    replayed = [await asyncio.wait_for(anext(events), 2.0) for _ in range(3)]
    assert [(e.type, e.revision, e.object.name) for e in replayed] == [
        (EventType.PUT, 2, "api"),
        (EventType.PUT, 3, "r"),
        (EventType.DELETE, 4, "api"),
    ]
    await store.put("Service", "default", "live", {})
    live = await asyncio.wait_for(anext(events), 2.0)
    assert (live.revision, live.object.name) == (5, "live")


async def test_compaction_survives_reopen(durable: DurableStores) -> None:
    store = durable.open(history=3)
    for i in range(6):
        await store.put("Service", "default", "web", {"i": i})
    await store.close()
    store = durable.open(history=3)
    with pytest.raises(Compacted):
        await anext(store.watch(2))
    assert (await anext(store.watch(3))).revision == 4


async def test_file_is_private_and_directory_created(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "state.db"
    store = SqliteStore(str(path))
    await store.put("Service", "default", "web", {})
    await store.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_existing_file_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.touch(mode=0o644)
    path.chmod(0o644)
    await SqliteStore(str(path)).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
