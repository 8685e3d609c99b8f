"""One fixture per backend, so every contract test runs against each of them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gossamer.store import ResourceStore
from gossamer.store.memory import MemoryStore
from gossamer.store.sqlite import SqliteStore


class StoreFactory:
    """Builds fresh stores of one backend and closes them all after the test, so
    tests can ask for non-default settings (a small history) or several stores."""

    def __init__(self, backend: str, directory: Path) -> None:
        self.backend = backend
        self._directory = directory
        self._opened: list[ResourceStore] = []

    def __call__(self, history: int = 10_000) -> ResourceStore:
        store: ResourceStore
        if self.backend == "memory":
            store = MemoryStore(history=history)
        else:
            path = self._directory / f"store-{len(self._opened)}.db"
            store = SqliteStore(str(path), history=history)
        self._opened.append(store)
        return store

    async def close_all(self) -> None:
        for store in self._opened:
            await store.close()


@pytest.fixture(params=["memory", "sqlite"])
async def store_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreFactory]:
    factory = StoreFactory(request.param, tmp_path)
    yield factory
    await factory.close_all()


@pytest.fixture
def store(store_factory: StoreFactory) -> ResourceStore:
    return store_factory()
