"""The xDS stream inbox: arrival order, coalesced change markers, bounded requests."""

from __future__ import annotations

import asyncio

import pytest

from gossamer.xds.inbox import CHANGED, END, REVOKED, StreamInbox


async def test_items_come_out_in_arrival_order_with_one_changed_marker() -> None:
    inbox = StreamInbox()
    await inbox.put("r1")
    inbox.mark_changed()
    inbox.mark_changed()  # coalesces: the loop reads the latest snapshot anyway
    await inbox.put("r2")
    assert [await inbox.get() for _ in range(3)] == ["r1", CHANGED, "r2"]
    assert len(inbox) == 0
    inbox.mark_changed()  # taken, so a new change queues a new marker
    await inbox.put(END)
    assert [await inbox.get(), await inbox.get()] == [CHANGED, END]


async def test_get_waits_for_a_request_or_a_change() -> None:
    inbox = StreamInbox()
    getter = asyncio.create_task(inbox.get())
    await asyncio.sleep(0.01)
    assert not getter.done()
    inbox.mark_changed()
    assert await asyncio.wait_for(getter, 1) is CHANGED
    getter = asyncio.create_task(inbox.get())
    await asyncio.sleep(0.01)
    await inbox.put("r")
    assert await asyncio.wait_for(getter, 1) == "r"


async def test_put_waits_at_the_limit_but_a_change_never_does() -> None:
    inbox = StreamInbox(limit=2)
    await inbox.put("r1")
    await inbox.put("r2")
    putter = asyncio.create_task(inbox.put("r3"))
    await asyncio.sleep(0.01)
    assert not putter.done()  # a flooding client is read no faster than handled
    inbox.mark_changed()  # the cache must never block on a slow stream
    assert len(inbox) == 3
    assert await inbox.get() == "r1"
    await asyncio.wait_for(putter, 1)
    assert [await inbox.get() for _ in range(3)] == ["r2", CHANGED, "r3"]


async def test_a_cancelled_get_leaves_the_inbox_usable() -> None:
    inbox = StreamInbox()
    getter = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    getter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await getter
    inbox.mark_changed()
    assert await asyncio.wait_for(inbox.get(), 1) is CHANGED


async def test_a_revocation_is_queued_at_once_even_at_the_limit() -> None:
    inbox = StreamInbox(limit=1)
    await inbox.put("r1")
    inbox.mark_revoked()  # would deadlock if it waited for room
    getter = asyncio.create_task(inbox.get())
    assert await asyncio.wait_for(getter, 1) == "r1"
    assert await asyncio.wait_for(inbox.get(), 1) is REVOKED
    waiting = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    inbox.mark_revoked()  # wakes a waiting loop
    assert await asyncio.wait_for(waiting, 1) is REVOKED
