"""Global rate limits keyed by the caller's SPIFFE identity, on a secure mesh: mTLS
between sidecars, and the rate-limit calls going to the control plane over the
sidecars' TLS xDS connection. Two callers with their own identities get a quota each."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import Mesh, running_mesh

pytestmark = pytest.mark.slow

APP = """
apiVersion: mesh.gossamer.dev/v1alpha1
kind: Service
metadata: {name: echo}
spec: {selector: {app: echo}, ports: [{port: 80, protocol: http}]}
---
apiVersion: local.gossamer.dev/v1alpha1
kind: Process
metadata: {name: echo}
spec:
  service: echo
  replicas: 2
  command: ["{python}", "-m", "gossamer.demo.app", "--name", "echo", "--port", "{port}"]
  probePath: /healthz
---
apiVersion: local.gossamer.dev/v1alpha1
kind: Process
metadata: {name: alice}
spec:
  service: alice
  command: ["{python}", "-m", "gossamer.demo.app", "--name", "alice", "--port", "{port}"]
  probePath: /healthz
---
apiVersion: local.gossamer.dev/v1alpha1
kind: Process
metadata: {name: bob}
spec:
  service: bob
  command: ["{python}", "-m", "gossamer.demo.app", "--name", "bob", "--port", "{port}"]
  probePath: /healthz
"""
POLICY = """
apiVersion: mesh.gossamer.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: per-caller}
spec:
  targetRef: {kind: Service, name: echo}
  global:
    rules:
    - key: {type: caller}
      requests: 3
      per: 1h
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    yield from running_mesh(tmp_path_factory, "ratelimit", text=APP)


def statuses(mesh: Mesh, caller: str, n: int) -> list[int]:
    with mesh.client_via(caller) as http:
        return [http.get("http://echo/").status_code for _ in range(n)]


def test_each_caller_identity_has_its_own_quota_across_both_replicas(mesh: Mesh) -> None:
    left = 3600 - time.time() % 3600
    if left < 60:
        time.sleep(left + 0.1)
    assert statuses(mesh, "alice", 2) == [200, 200]
    mesh.apply(POLICY)
    mesh.wait_synced()
    time.sleep(mesh.run.drain_seconds + 0.5)  # connections opened before now drain
    assert statuses(mesh, "alice", 5) == [200] * 3 + [429] * 2
    assert statuses(mesh, "bob", 4) == [200] * 3 + [429]
    with mesh.client_via("bob") as http:
        limited = http.get("http://echo/")
    assert limited.status_code == 429
    assert limited.headers["x-ratelimit-limit"] == "3, 3;w=3600"
    assert limited.headers["x-ratelimit-remaining"] == "0"
