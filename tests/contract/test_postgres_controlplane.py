"""The control plane on the PostgreSQL store: its API tells clients the store is away
(503, without naming the database) and serves again once it is back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gossamer.controlplane.server import ControlPlane, ControlPlaneOptions
from gossamer.store.postgres import PostgresStore
from tests.postgres_server import PostgresServer, started_server

SERVICE = {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Service",
           "metadata": {"name": "web"},
           "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    server = started_server()
    try:
        yield server
    finally:
        server.destroy()


async def test_api_answers_503_while_the_store_is_away(
        own_server: PostgresServer, tmp_path: Path) -> None:
    database = own_server.create_database()
    store = PostgresStore(own_server.url(database), retry_for=1.0)
    plane = ControlPlane(ControlPlaneOptions(state_dir=tmp_path, xds_port=0, api_port=0,
                                             secure=False), store=store)
    await plane.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{plane.api_port}",
                                     trust_env=False, timeout=30) as client:
            assert (await client.post("/api/v1/apply", json=SERVICE)).status_code == 200
            own_server.stop()
            away = await client.post("/api/v1/apply", json=SERVICE)
            assert away.status_code == 503
            assert "store is unavailable" in away.json()["error"]
            assert database not in away.text
            own_server.start()
            back = await client.get("/api/v1/resources/Service")
            assert back.status_code == 200
            assert [d["metadata"]["name"] for d in back.json()] == ["web"]
    finally:
        await plane.stop()
