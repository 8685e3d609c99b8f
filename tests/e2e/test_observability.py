"""The demo mesh with full security, through real agents: Prometheus metrics carry mesh
labels over mTLS, and a Telemetry makes each agent's sidecar write its access log to
the file in the agent's workdir, with the caller's SPIFFE ID on the callee's side."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Mesh, running_mesh

pytestmark = pytest.mark.slow

TELEMETRY = """
apiVersion: mesh.gossamer.dev/v1alpha1
kind: Telemetry
metadata: {name: mesh-default, namespace: gossamer-system}
spec:
  accessLog: {enabled: true}
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    yield from running_mesh(tmp_path_factory, "observability")


def _log(mesh: Mesh, prefix: str) -> list[dict[str, Any]]:
    """The access logs of every instance whose workload starts with `prefix`."""
    out = []
    for instance in mesh.run.instances:
        path = Path(mesh.run.state_dir) / "proxies" / instance.workload / "access.log"
        if instance.workload.startswith(prefix) and path.exists():
            out += [json.loads(line) for line in path.read_text().splitlines() if line]
    return out


def _until(predicate: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_metrics_and_access_logs_of_the_demo(mesh: Mesh) -> None:
    mesh.apply(TELEMETRY)
    mesh.wait_synced()
    with mesh.client_via("frontend") as client:
        ids = [f"obs-{i}" for i in range(3)]
        for rid in ids:
            assert client.get("http://catalog/", headers={"x-request-id": rid}).status_code \
                == 200

    def entries(prefix: str, direction: str) -> list[dict[str, Any]]:
        return [e for e in _log(mesh, prefix)
                if e["direction"] == direction and e["request_id"] in ids]

    _until(lambda: len(entries("catalog-v1", "inbound")) == 3, "catalog-v1's inbound log")
    _until(lambda: len(entries("frontend", "outbound")) == 3, "frontend's outbound log")
    out = entries("frontend", "outbound")[0]
    assert (out["source_service"], out["status"], out["response_flags"]) == (
        "frontend", 200, "-")
    assert out["upstream_cluster"] == "outbound|80||catalog-v1.default"
    inb = entries("catalog-v1", "inbound")[0]
    # catalog-v1's instances run as Service catalog (version v1).
    assert (inb["destination_service"], inb["route_name"]) == ("catalog", "local-app")
    assert inb["source_principal"].startswith("spiffe://")
    assert inb["source_principal"].endswith("/ns/default/sa/frontend")

    admin = mesh.instance("frontend").admin_port
    text = httpx.get(f"http://127.0.0.1:{admin}/stats/prometheus", timeout=5,
                     trust_env=False).text
    edge = [line for line in text.splitlines()
            if line.startswith("envoy_cluster_upstream_rq_total{")
            and 'destination_service="catalog-v1"' in line]
    assert len(edge) == 1, edge
    assert 'source_workload="' + mesh.instance("frontend").workload + '"' in edge[0]
    assert float(edge[0].rsplit(" ", 1)[1]) >= 3
