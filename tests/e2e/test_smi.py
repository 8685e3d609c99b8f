"""SMI on the running demo mesh, applied as `gossamer apply` does (universal mode):
a TrafficSplit steers real requests between catalog's versions, and a TrafficTarget
lets only catalog's identity call inventory (frontend's sidecar is not even sent it:
404, translate/reach.py), both through the
index's reading of SMI as native resources (smi/expand.py)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import Mesh, running_mesh

pytestmark = pytest.mark.slow

SPLIT = """
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {{name: catalog-rollout}}
spec:
  service: catalog
  backends:
  - {{service: catalog-v1, weight: {v1}}}
  - {{service: catalog-v2, weight: {v2}}}
"""

TARGET = """
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: inventory-api}
spec:
  matches:
  - {name: everything, pathRegex: ".*", methods: ["*"]}
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: inventory-from-catalog}
spec:
  destination: {kind: ServiceAccount, name: inventory}
  rules:
  - {kind: HTTPRouteGroup, name: inventory-api, matches: [everything]}
  sources:
  - {kind: ServiceAccount, name: catalog}
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    yield from running_mesh(tmp_path_factory, "smi")


def _versions(mesh: Mesh, n: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    with mesh.client_via("frontend") as client:
        for _ in range(n):
            resp = client.get("http://catalog/items")
            assert resp.status_code == 200, resp.text
            seen[resp.json()["version"]] += 1
    return seen


def test_traffic_split_steers_requests(mesh: Mesh) -> None:
    # The demo's own HTTPRoute on catalog goes: the split is the only route.
    mesh.delete("HTTPRoute", "default", "catalog")
    mesh.apply(SPLIT.format(v1=0, v2=100))
    mesh.wait_synced()
    assert _versions(mesh, 40) == Counter({"v2": 40})
    mesh.apply(SPLIT.format(v1=100, v2=0))
    mesh.wait_synced()
    assert _versions(mesh, 40) == Counter({"v1": 40})
    # Even: of 200 requests each side gets at least 50 unless something is wrong
    # (binomial, p = 0.5: below 50 has a probability under 1e-12).
    mesh.apply(SPLIT.format(v1=500, v2=500))
    mesh.wait_synced()
    seen = _versions(mesh, 200)
    assert seen["v1"] >= 50, seen
    assert seen["v2"] >= 50, seen
    assert seen["v1"] + seen["v2"] == 200
    status = mesh.api.get("/api/v1/resources/TrafficSplit/default/catalog-rollout").json()
    assert {"type": "Accepted", "status": "True"}.items() <= \
        status["status"]["conditions"][0].items()


def _inventory_status(mesh: Mesh, via: str) -> int:
    with mesh.client_via(via) as client:
        return client.get("http://inventory/stock").status_code


def test_traffic_target_allows_only_its_sources(mesh: Mesh) -> None:
    assert _inventory_status(mesh, "frontend") == 200  # no TrafficTarget yet: open
    mesh.apply(TARGET)
    mesh.wait_synced()
    time.sleep(mesh.run.drain_seconds + 0.5)  # connections open before it drain
    assert _inventory_status(mesh, "catalog") == 200
    assert _inventory_status(mesh, "frontend") == 404  # out of its inferred scope
    # catalog still reaches inventory on frontend's behalf.
    with mesh.client_via("frontend") as client:
        body = client.get("http://catalog/items").json()
    assert body["upstreams"]["http://inventory/stock"]["status"] == 200
    mesh.delete("TrafficTarget", "default", "inventory-from-catalog")
    mesh.wait_synced()
    time.sleep(mesh.run.drain_seconds + 0.5)
    assert _inventory_status(mesh, "frontend") == 200
