"""Certificates of ~30 s lifetime under steady load for over two minutes, across
a full root rotation (begin, switch, finish): every request must succeed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Mesh, running_mesh

pytestmark = pytest.mark.slow
CERT_TTL = 30


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    yield from running_mesh(tmp_path_factory, "rotation", cert_ttl=CERT_TTL)


def _certs(mesh: Mesh, workload: str) -> dict[str, Any]:
    admin = mesh.instance(workload).admin_port
    return httpx.get(f"http://127.0.0.1:{admin}/certs", trust_env=False).json()  # type: ignore[no-any-return]


def _serial(mesh: Mesh, workload: str) -> str:
    for entry in _certs(mesh, workload)["certificates"]:
        for cert in entry.get("cert_chain", []):
            if cert.get("subject_alt_names"):
                return str(cert["serial_number"])
    raise AssertionError(f"{workload} serves no workload certificate")


def _roots(mesh: Mesh, workload: str) -> int:
    """How many CA certificates the sidecar's ROOTCA secret holds now."""
    counts = [len(e.get("ca_cert", [])) for e in _certs(mesh, workload)["certificates"]]
    return max(counts)


def _wait(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _rotate(mesh: Mesh, step: str) -> None:
    resp = mesh.api.post("/api/v1/ca/rotate", json={"step": step})
    assert resp.status_code == 200, resp.text


def test_short_lived_certs_and_root_rotation_under_load(mesh: Mesh) -> None:
    workloads = [i.workload for i in mesh.run.instances]
    first_serials = {w: _serial(mesh, w) for w in workloads}
    failures: list[str] = []
    served = 0
    stop = threading.Event()

    def load() -> None:
        nonlocal served
        deadline = time.monotonic() + 240  # bounded even if the test body hangs
        with mesh.client_via("frontend") as client:
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    resp = client.get("http://frontend/")
                    if resp.status_code != 200:
                        failures.append(f"{resp.status_code}: {resp.text[:300]}")
                    else:
                        served += 1
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                time.sleep(0.05)

    worker = threading.Thread(target=load)
    started = time.monotonic()
    worker.start()
    try:
        time.sleep(30)  # at least one renewal of every certificate
        assert all(_serial(mesh, w) != first_serials[w] for w in workloads)
        _rotate(mesh, "begin")  # both roots in every bundle; old signer
        _wait("every sidecar to trust both roots",
              lambda: all(_roots(mesh, w) == 2 for w in workloads), 20)
        _rotate(mesh, "switch")  # new signer
        before_switch = {w: _serial(mesh, w) for w in workloads}
        time.sleep(CERT_TTL + 10)  # every workload renews from the new root
        assert all(_serial(mesh, w) != before_switch[w] for w in workloads)
        _rotate(mesh, "finish")  # only the new root is trusted
        _wait("every sidecar to drop the old root",
              lambda: all(_roots(mesh, w) == 1 for w in workloads), 20)
        remaining = 125 - (time.monotonic() - started)
        time.sleep(max(remaining, 10))
    finally:
        stop.set()
        worker.join(timeout=30)
    assert not failures, failures[:5]
    assert served > 500
    phase = mesh.api.get("/api/v1/ca").json()["phase"]
    assert phase == "STABLE"
