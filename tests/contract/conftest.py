"""One fixture per backend, so every contract test runs against each of them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gossamer.secrets import KeyRing, SealedStore, SecretField
from gossamer.store import ResourceStore
from gossamer.store.memory import MemoryStore
from gossamer.store.postgres import PostgresStore
from gossamer.store.sqlite import SqliteStore
from tests.postgres_server import PostgresServer, postgres_server, postgres_url

__all__ = ["postgres_server", "postgres_url"]

BACKENDS = ["memory", "sqlite", "postgres", "sealed"]
# The "sealed" backend: PostgreSQL under the secrets layer (secrets/store.py), sealing
# the spec of every Service (the kind most contract tests write) with a two-key ring.
SEALED_FIELDS = (SecretField("Service", ("spec",)), SecretField("Workload", ("spec",)))
SEALED_KEYS = KeyRing([bytes(range(32)), bytes(range(1, 33))])


class StoreFactory:
    """Builds fresh stores of one backend and closes them all after the test, so
    tests can ask for non-default settings (a small history) or several stores."""

    def __init__(self, backend: str, directory: Path,
                 postgres: PostgresServer | None = None) -> None:
        self.backend = backend
        self._directory = directory
        self._postgres = postgres
        self._opened: list[ResourceStore] = []
        self._databases: list[str] = []

    def __call__(self, history: int = 10_000) -> ResourceStore:
        store: ResourceStore
        if self.backend == "memory":
            store = MemoryStore(history=history)
        elif self._postgres is not None:
            self._databases.append(self._postgres.create_database())
            store = PostgresStore(self._postgres.url(self._databases[-1]), history=history)
            if self.backend == "sealed":
                store = SealedStore(store, SEALED_KEYS, SEALED_FIELDS)
        else:
            path = self._directory / f"store-{len(self._opened)}.db"
            store = SqliteStore(str(path), history=history)
        self._opened.append(store)
        return store

    async def close_all(self) -> None:
        for store in self._opened:
            await store.close()
        if self._postgres is not None:
            for name in self._databases:
                self._postgres.drop_database(name)


@pytest.fixture(params=BACKENDS)
async def store_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreFactory]:
    server = (request.getfixturevalue("postgres_server")
              if request.param in ("postgres", "sealed") else None)
    factory = StoreFactory(request.param, tmp_path, server)
    yield factory
    await factory.close_all()


@pytest.fixture
def store(store_factory: StoreFactory) -> ResourceStore:
    return store_factory()


class DurableStores:
    """Opens a durable backend at one location again and again, as a restarted
    control plane would; closes what is still open after the test."""

    def __init__(self, backend: str, location: str) -> None:
        self.backend = backend
        self.location = location
        self._opened: list[ResourceStore] = []

    def open(self, history: int = 10_000) -> ResourceStore:
        store: ResourceStore
        if self.backend == "sqlite":
            store = SqliteStore(self.location, history=history)
        else:
            store = PostgresStore(self.location, history=history)
        self._opened.append(store)
        return store

    async def close_all(self) -> None:
        for store in self._opened:
            await store.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def durable(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DurableStores]:
    if request.param == "postgres":
        location = request.getfixturevalue("postgres_url")
    else:
        location = str(tmp_path / "state.db")
    stores = DurableStores(request.param, location)
    yield stores
    await stores.close_all()
