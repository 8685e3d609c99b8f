"""Sidecars keep serving while the control plane is down, and resync after."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import Mesh, running_mesh
from tests.e2e.test_demo_traffic import SPLIT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def restart_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    yield from running_mesh(tmp_path_factory, "restart")


def test_restart_fails_no_request_and_proxies_resync(restart_mesh: Mesh) -> None:
    mesh = restart_mesh
    failures: list[str] = []
    served = 0
    stop = threading.Event()

    def load() -> None:
        nonlocal served
        deadline = time.monotonic() + 90
        with mesh.client_via("frontend") as client:
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    resp = client.get("http://frontend/")
                    served += 1
                    if resp.status_code != 200:
                        failures.append(f"{resp.status_code}: {resp.text[:200]}")
                except Exception as exc:  # a transport error is a failed request
                    failures.append(repr(exc))
                time.sleep(0.01)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        time.sleep(1.0)
        mesh.run.restart_control_plane(down_for=3.0)
        proxies = mesh.wait_synced(timeout=30)
        assert len([p for p in proxies if p["connected"]]) == 5
        # The resynced proxies follow new changes again.
        mesh.apply(SPLIT.format(v1=0, v2=100))
        mesh.wait_synced()
        time.sleep(0.5)
        with mesh.client_via("frontend") as client:
            versions = {client.get("http://catalog/items").json()["version"] for _ in range(20)}
        assert versions == {"v2"}
    finally:
        stop.set()
        worker.join(timeout=30)
    assert served > 100
    assert not failures, failures[:5]
    workloads = mesh.api.get("/api/v1/resources/Workload").json()
    assert len(workloads) == 5  # registrations survived in the store
