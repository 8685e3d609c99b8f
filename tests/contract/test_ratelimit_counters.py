"""The rate-limit counter backends keep one contract: counts add up per key, a key
expires at its deadline, keys are independent; Redis errors become CounterError."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import pytest

from gossamer.ratelimit.counters import (
    CounterError,
    Counters,
    MemoryCounters,
    now_ms,
)
from gossamer.ratelimit.redis_counters import RedisCounters
from gossamer.ratelimit.service import open_counters
from gossamer.testing.envoy import free_port
from tests.redis_server import RedisServer, redis_server

__all__ = ["redis_server"]


@pytest.fixture(params=["memory", "redis"])
async def counters(request: pytest.FixtureRequest) -> AsyncIterator[Counters]:
    made: Counters
    if request.param == "memory":
        made = MemoryCounters()
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        # The contract is about counting; the production timeout (0.5 s, so that a
        # slow Redis fails open fast) is below what a stalled shared CI machine can take.
        made = RedisCounters(server.url, timeout=5.0)
    try:
        yield made
    finally:
        await made.close()


async def test_hits_add_up_per_key(counters: Counters) -> None:
    later = now_ms() + 60_000
    assert [await counters.hit("a", 1, later) for _ in range(3)] == [1, 2, 3]
    assert await counters.hit("a", 5, later) == 8
    assert await counters.hit("b", 1, later) == 1


async def test_a_key_is_gone_after_its_deadline(counters: Counters) -> None:
    soon = now_ms() + 300
    assert await counters.hit("k", 2, soon) == 2
    await asyncio.sleep(0.5)
    assert await counters.hit("k", 1, now_ms() + 60_000) == 1


async def test_many_concurrent_hits_are_all_counted(counters: Counters) -> None:
    later = now_ms() + 60_000
    results = await asyncio.gather(*(counters.hit("c", 1, later) for _ in range(50)))
    assert sorted(results) == list(range(1, 51))


async def test_memory_counters_refuse_to_grow_past_their_bound() -> None:
    counters = MemoryCounters(max_keys=2)
    later = now_ms() + 60_000
    await counters.hit("a", 1, later)
    await counters.hit("b", 1, later)
    assert await counters.hit("a", 1, later) == 2
    with pytest.raises(CounterError):
        await counters.hit("c", 1, later)


async def test_an_unreachable_redis_raises_counter_error() -> None:
    counters = RedisCounters(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    try:
        with pytest.raises(CounterError) as info:
            await counters.hit("a", 1, now_ms() + 1000)
        assert info.value.__cause__ is not None
    finally:
        await counters.close()


async def test_open_counters_picks_the_backend_and_loads_redis_only_for_it() -> None:
    # A fresh interpreter: this one has imported redis already (the fixtures).
    code = ("import sys; from gossamer.ratelimit.service import open_counters; "
            "c = open_counters(None); print(type(c).__name__, 'redis' in sys.modules)")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code,
                                                stdout=asyncio.subprocess.PIPE)
    stdout, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    assert stdout.decode().split() == ["MemoryCounters", "False"]
    made = open_counters("redis://127.0.0.1:1/0")
    try:
        assert isinstance(made, RedisCounters)
    finally:
        await made.close()
