"""A killed instance leaves EDS once its probe fails, and callers never notice."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Mesh, running_mesh

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fresh_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    yield from running_mesh(tmp_path_factory, "failure")


def _catalog_v1_hosts(mesh: Mesh) -> set[str]:
    lines = mesh.endpoints("frontend")
    return {line.split("::")[1] for line in lines
            if line.startswith("outbound|80||catalog-v1.default::")
            and re.fullmatch(r"[\d.]+:\d+", line.split("::")[1])}


def test_killed_instance_leaves_eds_and_requests_keep_succeeding(fresh_mesh: Mesh) -> None:
    mesh = fresh_mesh
    assert len(_catalog_v1_hosts(mesh)) == 2
    victim = mesh.instance("catalog-v1-1")
    pid_file = Path(mesh.run.state_dir) / "proxies" / victim.workload / "app.pid"
    os.kill(int(pid_file.read_text()), signal.SIGKILL)

    deadline = time.monotonic() + 20
    failures = 0
    with mesh.client_via("frontend") as client:
        while time.monotonic() < deadline and len(_catalog_v1_hosts(mesh)) != 1:
            resp = client.get("http://catalog/items")
            failures += resp.status_code != 200
            time.sleep(0.05)
    assert _catalog_v1_hosts(mesh) == {f"127.0.0.1:{mesh.instance('catalog-v1-0').inbound_port}"}
    workload = mesh.api.get(f"/api/v1/resources/Workload/default/{victim.workload}").json()
    assert workload["spec"]["health"] == "Unhealthy"
    assert failures == 0  # connect failures were retried on the healthy instance
    with mesh.client_via("frontend") as client:
        statuses = {client.get("http://catalog/items").status_code for _ in range(50)}
    assert statuses == {200}
