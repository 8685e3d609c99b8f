"""Probe the application the way Kubernetes readiness probes do."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class Probe:
    port: int
    http_path: str | None = None  # None: a TCP connect is enough
    timeout: float = 1.0

    async def check(self) -> bool:
        if self.http_path is None:
            return await self._tcp()
        try:
            async with httpx.AsyncClient(timeout=self.timeout, trust_env=False) as client:
                resp = await client.get(f"http://127.0.0.1:{self.port}{self.http_path}")
            return 200 <= resp.status_code < 400
        except httpx.HTTPError:
            return False

    async def _tcp(self) -> bool:
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.port), self.timeout)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True


class HealthTracker:
    """Flip state only after `threshold` consecutive results, so one blip does not
    pull an instance out of the mesh (or put a flapping one back)."""

    def __init__(self, fail_threshold: int = 2, success_threshold: int = 1) -> None:
        self.healthy: bool | None = None
        self._fails = 0
        self._passes = 0
        self._fail_threshold = fail_threshold
        self._success_threshold = success_threshold

    def observe(self, ok: bool) -> bool:
        """Record one probe; True when the reported state changed."""
        before = self.healthy
        if ok:
            self._passes, self._fails = self._passes + 1, 0
            if self._passes >= self._success_threshold:
                self.healthy = True
        else:
            self._fails, self._passes = self._fails + 1, 0
            if self._fails >= self._fail_threshold or self.healthy is None:
                self.healthy = False
        return before != self.healthy
