"""The Redis backend of the rate-limit counters (see `counters`), for several
control-plane replicas that must share counts and keep them over a restart."""

from __future__ import annotations

import redis.asyncio
import redis.exceptions

from gossamer.ratelimit.counters import CounterError

# Keys are namespaced so a shared Redis can hold other data too.
REDIS_PREFIX = "gossamer:ratelimit:"


class RedisCounters:
    """Counters in Redis: INCRBY and PEXPIREAT in one transaction per hit."""

    def __init__(self, url: str, timeout: float = 0.5) -> None:
        self.url = url
        self._client = redis.asyncio.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout)

    async def hit(self, key: str, hits: int, expires_ms: int) -> int:
        name = REDIS_PREFIX + key
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.incrby(name, hits)
                pipe.pexpireat(name, expires_ms)
                count, _ = await pipe.execute()
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
            raise CounterError(f"redis {self.url}: {exc}") from exc
        return int(count)

    async def close(self) -> None:
        await self._client.aclose()
