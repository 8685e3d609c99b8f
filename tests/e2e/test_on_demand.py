"""On-demand discovery on a running secure mesh (the real agent, mTLS, SPIFFE
identities): with the Mesh's `onDemand`, the demo app's sidecars start with no
Service's cluster or virtual host, a call by Service name fetches that Service's
(over the agent's delta stream) and succeeds over mTLS under an AuthorizationPolicy
that admits one identity, and a Service nobody called stays out of every sidecar.
The protocol details are in tests/envoy/test_on_demand.py."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import Mesh, running_mesh
from tests.envoy.harness import outbound_held

pytestmark = pytest.mark.slow

APP = """
apiVersion: mesh.gossamer.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec: {onDemand: true}
---
apiVersion: mesh.gossamer.dev/v1alpha1
kind: Service
metadata: {name: frontend}
spec: {selector: {app: frontend}, ports: [{port: 80}]}
---
apiVersion: mesh.gossamer.dev/v1alpha1
kind: Service
metadata: {name: inventory}
spec: {selector: {app: inventory}, ports: [{port: 80}]}
---
apiVersion: mesh.gossamer.dev/v1alpha1
kind: Service
metadata: {name: catalog}
spec: {selector: {app: catalog}, ports: [{port: 80}]}
---
apiVersion: mesh.gossamer.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: catalog-from-frontend}
spec:
  targetRef: {kind: Service, name: catalog}
  rules:
  - from: [{source: {principals: ["spiffe://gossamer.local/ns/default/sa/frontend"]}}]
---
apiVersion: local.gossamer.dev/v1alpha1
kind: Process
metadata: {name: frontend}
spec:
  service: frontend
  command: ["{python}", "-m", "gossamer.demo.app", "--name", "frontend", "--port", "{port}"]
  probePath: /healthz
---
apiVersion: local.gossamer.dev/v1alpha1
kind: Process
metadata: {name: inventory}
spec:
  service: inventory
  command: ["{python}", "-m", "gossamer.demo.app", "--name", "inventory", "--port", "{port}"]
  probePath: /healthz
---
apiVersion: local.gossamer.dev/v1alpha1
kind: Process
metadata: {name: catalog}
spec:
  service: catalog
  command: ["{python}", "-m", "gossamer.demo.app", "--name", "catalog", "--port", "{port}"]
  probePath: /healthz
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    yield from running_mesh(tmp_path_factory, "on-demand", text=APP)


def _held(admin_port: int) -> tuple[set[str], set[str]]:
    return outbound_held(httpx.get(f"http://127.0.0.1:{admin_port}/config_dump",
                                   trust_env=False, timeout=5).json())


def test_a_call_by_name_fetches_that_service_only(mesh: Mesh) -> None:
    frontend = mesh.instance("frontend")
    vhosts, clusters = _held(frontend.admin_port)
    assert not any("inventory" in v or "catalog" in v for v in vhosts), vhosts
    assert not any("inventory" in c or "catalog" in c for c in clusters), clusters
    with mesh.client_via("frontend") as client:
        resp = client.get("http://inventory/")
    assert resp.status_code == 200, resp.text
    vhosts, clusters = _held(frontend.admin_port)
    assert "outbound/inventory.default:80" in vhosts
    assert "outbound|80||inventory.default" in clusters
    assert not any("catalog" in n for n in vhosts | clusters)  # never called
    # inventory's sidecar called nobody: it holds no other Service either.
    assert not any("frontend" in n or "catalog" in n
                   for n in set.union(*_held(mesh.instance("inventory").admin_port)))
    # catalog admits frontend's SPIFFE identity only: the fetched cluster carries
    # mutual TLS (the callee's sidecar saw who called), and inventory is refused.
    with mesh.client_via("frontend") as client:
        assert client.get("http://catalog/").status_code == 200
    assert "outbound|80||catalog.default" in _held(frontend.admin_port)[1]
    with mesh.client_via("inventory") as client:
        assert client.get("http://catalog/").status_code == 403
