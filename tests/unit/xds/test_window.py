"""The xDS server's send window: a count and a byte budget, FIFO."""

from __future__ import annotations

import asyncio

import pytest

from gossamer.xds.window import SendWindow


def test_small_responses_all_go_at_once_and_big_ones_queue_in_order() -> None:
    async def main() -> None:
        window = SendWindow(max_items=1000, max_bytes=1000)
        for _ in range(500):
            await asyncio.wait_for(window.acquire(1), 1.0)  # no waiting at all
        order: list[str] = []

        async def take(name: str, size: int) -> None:
            await window.acquire(size)
            order.append(name)

        big = asyncio.create_task(take("big", 900))  # does not fit beside the 500
        await asyncio.sleep(0)
        small = asyncio.create_task(take("small", 1))  # fits, but waits behind big
        await asyncio.sleep(0.01)
        assert order == []
        for _ in range(500):
            window.release(1)
        await asyncio.wait_for(asyncio.gather(big, small), 1.0)
        assert order == ["big", "small"]
    asyncio.run(main())


def test_a_response_bigger_than_the_budget_goes_alone() -> None:
    async def main() -> None:
        window = SendWindow(max_items=4, max_bytes=10)
        await asyncio.wait_for(window.acquire(50), 1.0)
        second = asyncio.create_task(window.acquire(1))
        await asyncio.sleep(0.01)
        assert not second.done()
        window.release(50)
        await asyncio.wait_for(second, 1.0)
    asyncio.run(main())


def test_the_count_bounds_too_and_a_cancelled_waiter_lets_the_next_in() -> None:
    async def main() -> None:
        window = SendWindow(max_items=1, max_bytes=1 << 20)
        await window.acquire(1)
        first = asyncio.create_task(window.acquire(1))
        second = asyncio.create_task(window.acquire(1))
        await asyncio.sleep(0.01)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        window.release(1)
        await asyncio.wait_for(second, 1.0)
    asyncio.run(main())
