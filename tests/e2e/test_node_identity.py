"""Issue 16 A on a running secure mesh: a join token may not take over another
sidecar's node id over xDS, a second stream of a node ending does not drop the
node, and an app gets none of its agent's credentials. Real Envoy sidecars, real
TLS, real tokens; the attacker is a raw ADS stream, as a compromised app could open.
Each rule on its own, in-process, is in tests/unit/controlplane/test_node_identity.py."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from envoy.config.core.v3 import base_pb2 as core_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from gossamer.contract.names import CONTROL_PLANE_NAME
from gossamer.contract.node import NodeMetadata
from gossamer.testing.envoy import free_port
from gossamer.xds.types import CLUSTER
from tests.e2e.conftest import Mesh, running_mesh

pytestmark = pytest.mark.slow

APP = """
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
metadata: {name: reporter}
spec:
  service: reporter
  inbound: false
  upstreams: ["inventory:80=UPSTREAM_PORT"]
  command: ["{python}", "-c", "import time; time.sleep(3600)"]
"""


@pytest.fixture(scope="module")
def upstream_port() -> int:
    """The client-only reporter's dedicated port for inventory, picked when the module
    starts (one picked at collection can be taken by then)."""
    return free_port()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, upstream_port: int) -> Iterator[Mesh]:
    yield from running_mesh(tmp_path_factory, "node-identity",
                            text=APP.replace("UPSTREAM_PORT", str(upstream_port)))


def _token(mesh: Mesh, service: str) -> str:
    resp = mesh.api.post("/api/v1/tokens", json={"scope": "join", "service": service})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["token"])


def _claim(mesh: Mesh, token: str, node: core_pb2.Node, *, delta: bool,
           hold: Any = None) -> grpc.StatusCode | None:
    """Open an ADS stream (delta or SotW) as `node` with `token`: None if the control
    plane answers its first request, else the stream's status code. `hold()`, if
    given, runs while the answered stream is still open."""
    bundle = mesh.api.get("/api/v1/ca").json()["bundle_pem"].encode()
    first: Any = (discovery_pb2.DeltaDiscoveryRequest if delta else
                  discovery_pb2.DiscoveryRequest)(node=node, type_url=CLUSTER)
    done = threading.Event()

    def requests() -> Iterator[Any]:
        yield first
        done.wait(15)  # keep the stream open, as Envoy does, until we are done

    creds = grpc.ssl_channel_credentials(root_certificates=bundle)
    with grpc.secure_channel(f"127.0.0.1:{mesh.run.xds_port}", creds, options=[
            ("grpc.ssl_target_name_override", CONTROL_PLANE_NAME)]) as channel:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        method = stub.DeltaAggregatedResources if delta else stub.StreamAggregatedResources
        responses = method(requests(), metadata=(("authorization", f"Bearer {token}"),),
                           timeout=10)
        try:
            next(responses)
            if hold is not None:
                hold()
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
        finally:
            done.set()
            responses.cancel()
    return None


def _node(node_id: str, metadata: dict[str, Any]) -> core_pb2.Node:
    node = core_pb2.Node(id=node_id, cluster=str(metadata.get("service", "")))
    node.metadata.update(metadata)
    return node


def _proxy(mesh: Mesh, node_id: str) -> dict[str, Any]:
    return next(p for p in mesh.api.get("/api/v1/proxies").json() if p["node_id"] == node_id)


def _connected(mesh: Mesh, service: str, timeout: float = 60.0) -> dict[str, Any]:
    """The registry's entry of a connected, synced proxy of `service`, once there is
    one (the reporter, a pure client, is started after the servers are healthy)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in mesh.api.get("/api/v1/proxies").json():
            if p["connected"] and p["synced"] and p["metadata"].get("service") == service:
                return p  # type: ignore[no-any-return]
        time.sleep(0.2)
    raise AssertionError(f"no proxy of {service} connected and in sync after {timeout}s")


def _current_again(mesh: Mesh, node_id: str, connected_at: float,
                   timeout: float = 20.0) -> dict[str, Any]:
    """The node's entry once the stream that connected at `connected_at` is current
    again (or the last entry seen), each one seen on the way asserted connected."""
    deadline = time.monotonic() + timeout
    while True:
        entry = _proxy(mesh, node_id)
        assert entry["connected"], entry
        if entry["connected_at"] == connected_at or time.monotonic() > deadline:
            return entry
        time.sleep(0.1)


def _acked(entry: dict[str, Any]) -> dict[str, str | None]:
    return {t: v["acked_version"] for t, v in entry["types"].items()}


def _listeners(admin_port: int) -> list[tuple[str, str, int]]:
    """What the sidecar's Envoy runs: (name, version, port) of each dynamic listener."""
    dump = httpx.get(f"http://127.0.0.1:{admin_port}/config_dump?resource=dynamic_listeners",
                     trust_env=False, timeout=5).json()
    out = []
    for entry in dump["configs"]:
        active = entry["active_state"]
        address = active["listener"]["address"]["socket_address"]
        out.append((entry["name"], active["version_info"], int(address["port_value"])))
    return sorted(out)


def _traffic(mesh: Mesh, upstream_port: int) -> tuple[int, int]:
    """Status of a request through frontend's sidecar, and through reporter's
    dedicated upstream port, both to inventory."""
    with mesh.client_via("frontend") as client:
        via_frontend = client.get("http://inventory/stock").status_code
    via_reporter = httpx.get(f"http://127.0.0.1:{upstream_port}/stock", trust_env=False,
                             timeout=10).status_code
    return via_frontend, via_reporter


def _check(mesh: Mesh) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GOSSAMER_TOKEN": mesh.run.admin_token_file.read_text().strip()}
    return subprocess.run([sys.executable, "-m", "gossamer", "check", "--server",
                           mesh.run.server], capture_output=True, text=True, timeout=60,
                          check=False, env=env)


def test_join_token_cannot_take_over_another_sidecars_node(mesh: Mesh,
                                                          upstream_port: int) -> None:
    """A join token for `evil` opens ADS streams claiming the node ids of running
    sidecars (frontend, a registered server, and reporter, a client-only one with no
    Workload), with its own metadata. Every stream is refused, and the real sidecars
    keep their config, their traffic and their place in the registry."""
    mesh.wait_synced()
    evil = _token(mesh, "evil")
    frontend = mesh.instance("frontend")
    victims = {f"{frontend.workload}.default": frontend.admin_port}
    reporter = _connected(mesh, "reporter")
    victims[reporter["node_id"]] = int(reporter["metadata"]["admin_port"])
    assert _traffic(mesh, upstream_port) == (200, 200)
    before = {n: (_acked(_proxy(mesh, n)), _listeners(port)) for n, port in victims.items()}
    for node_id in victims:
        attacker = NodeMetadata(node_id=node_id, service="evil", namespace="default",
                                workload=node_id.removesuffix(".default"),
                                inbound_port=free_port(), inbound_address="127.0.0.1",
                                app_port=free_port(), app_protocol=None,
                                outbound_port=free_port(), admin_port=free_port())
        for delta in (True, False):
            code = _claim(mesh, evil, _node(node_id, attacker.to_metadata()), delta=delta)
            assert code == grpc.StatusCode.PERMISSION_DENIED, (node_id, delta)
    for node_id, port in victims.items():
        entry = _proxy(mesh, node_id)
        assert entry["connected"], entry
        assert entry["synced"], entry
        assert entry["metadata"]["service"] != "evil"
        assert (_acked(entry), _listeners(port)) == before[node_id], node_id
    assert _traffic(mesh, upstream_port) == (200, 200)
    check = _check(mesh)
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_second_stream_of_a_sidecar_ending_leaves_it_connected(
        mesh: Mesh, upstream_port: int) -> None:
    """With the sidecar's own token (a reconnect, say) a second stream for its node
    is admitted; its end must not drop the sidecar, whose stream is still open: it
    stays connected, in sync, and keeps getting new config."""
    mesh.wait_synced()
    frontend = mesh.instance("frontend")
    node_id = f"{frontend.workload}.default"
    own = mesh.run._join_token("default", "frontend")
    real = _proxy(mesh, node_id)
    seen: list[float] = []

    def during() -> None:
        seen.append(_proxy(mesh, node_id)["connected_at"])

    for delta in (True, False):
        assert _claim(mesh, own, _node(node_id, real["metadata"]), delta=delta,
                      hold=during) is None
        # The server sees the claim's stream end a moment after the client cancels
        # it: until then that stream is current. Never may the node look disconnected.
        entry = _current_again(mesh, node_id, real["connected_at"])
        assert entry["connected_at"] == real["connected_at"]  # the real stream's again
    assert len(seen) == 2
    assert all(at > real["connected_at"] for at in seen)  # each was current while open
    mesh.apply("""
apiVersion: mesh.gossamer.dev/v1alpha1
kind: Service
metadata: {name: after-reconnect}
spec: {ports: [{port: 80}]}
""")
    try:
        mesh.wait_synced()  # every sidecar, frontend too, connected and on the new config
        routes = httpx.get(f"http://127.0.0.1:{frontend.admin_port}"
                           "/config_dump?resource=dynamic_route_configs",
                           trust_env=False, timeout=5).text
        assert "after-reconnect.default" in routes  # the real Envoy got the change
        assert _traffic(mesh, upstream_port)[0] == 200
    finally:
        mesh.delete("Service", "default", "after-reconnect")
    check = _check(mesh)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_app_gets_none_of_its_agents_credentials(mesh: Mesh) -> None:
    """An app that could read its agent's join token could act as its agent: read
    the real app's environment, and the mode of the bootstrap that holds the token."""
    workload = mesh.instance("frontend").workload
    proxies = mesh.run.state_dir / "proxies" / workload
    pid = int((proxies / "app.pid").read_text())
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    names = {e.split(b"=", 1)[0] for e in environ if e}
    assert b"GOSSAMER_SERVICE" in names  # the control: the mesh's variables are there
    assert b"GOSSAMER_TOKEN" not in names
    token = mesh.run._join_token("default", "frontend").encode()
    assert not any(token in e for e in environ)
    assert (proxies / "envoy-bootstrap.json").stat().st_mode & 0o777 == 0o600
