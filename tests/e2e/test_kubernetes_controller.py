"""The Kubernetes controller against the API emulator (tests/k8s_emulator.py), feeding
a real control plane whose sidecars are real Envoys: what the cluster's Services, Pods
and EndpointSlices say is where requests go; a 410 relist; status written back; leader
hand-over between two controllers."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from gossamer.ca.tokens import Tokens
from gossamer.contract.spiffe import SpiffeId
from gossamer.controlplane.server import ControlPlane, ControlPlaneOptions
from gossamer.k8s.client import KubeApi
from gossamer.k8s.controller import Controller
from gossamer.k8s.lease import LeaderElector
from gossamer.k8s.tokenreview import TokenReviewer
from gossamer.model.meta import ResourceKey
from gossamer.store.memory import MemoryStore
from gossamer.testing.envoy import EnvoyProcess
from tests.envoy import conftest as envoy_fixtures
from tests.envoy.harness import Backend, MiniMesh, Sidecar, get, wait_for
from tests.k8s_emulator import KubeEmulator

pytestmark = pytest.mark.slow
# Real Envoys and backends, as tests/envoy makes them.
envoys = envoy_fixtures.envoys
backends = envoy_fixtures.backends


@pytest.fixture
async def emulator() -> AsyncIterator[KubeEmulator]:
    emu = KubeEmulator()
    await emu.start()
    try:
        emu.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
        yield emu
    finally:
        await emu.stop()


class Running:
    def __init__(self, controller: Controller, task: asyncio.Task[None]) -> None:
        self.controller, self.task = controller, task

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.controller.api.close()


@pytest.fixture
async def start_controller(emulator: KubeEmulator, tmp_path: Path,
                           ) -> AsyncIterator[Callable[..., Any]]:
    running: list[Running] = []

    async def start(plane: ControlPlane, identity: str | None = None) -> Running:
        api = KubeApi.connect(emulator.kubeconfig(tmp_path / "kubeconfig"))
        elector = None if identity is None else LeaderElector(
            api, "gossamer-system", "gossamer-controller", identity, duration=3.0, renew=0.3)
        controller = Controller(api, plane.store, elector=elector, debounce=0.02,
                                status_of=lambda key: plane.reconciler.index.status(key))
        run = Running(controller, asyncio.create_task(controller.run()))
        running.append(run)
        await asyncio.wait_for(controller.synced.wait(), 20)
        return run

    try:
        yield start
    finally:
        for run in running:
            await run.stop()


async def _plane() -> ControlPlane:
    plane = ControlPlane(ControlPlaneOptions(state_dir=None, xds_port=0, api_port=0,
                                             debounce=0.01, secure=False))
    await plane.start()
    return plane


@pytest.fixture
async def plane() -> AsyncIterator[ControlPlane]:
    p = await _plane()
    try:
        yield p
    finally:
        await p.stop()


def service(name: str, vip: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": vip, "selector": {"app": name},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


def pod(name: str, app: str, side: Sidecar, backend: Backend) -> dict[str, Any]:
    """A pod as injection leaves it (its status annotation), its sidecar the test's."""
    status = {"service": app, "inboundPort": side.inbound, "appPort": backend.port}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": app},
                         "annotations": {"gossamer.dev/status": json.dumps(status)}},
            "spec": {"serviceAccountName": app, "nodeName": "node-a",
                     "containers": [{"name": "app", "image": "app"}]},
            "status": {"phase": "Running", "podIP": "127.0.0.1"}}


def endpoint_slice(name: str, svc: str, ready: dict[str, bool]) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "default",
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": r},
                           "targetRef": {"kind": "Pod", "namespace": "default",
                                         "name": p}} for p, r in ready.items()]}


async def _answers(caller: Sidecar, url: str, n: int = 20) -> set[str]:
    seen = set()
    for _ in range(n):
        resp = await get(caller, url)
        seen.add(resp.text if resp.status_code == 200 else str(resp.status_code))
    return seen


async def _eventually(caller: Sidecar, url: str, want: set[str]) -> None:
    async def ok() -> bool:
        return await _answers(caller, url) == want

    await wait_for(ok, f"{url} answered by {want}", timeout=20)


async def test_endpoint_slices_steer_real_traffic(
        plane: ControlPlane, emulator: KubeEmulator, start_controller: Any,
        envoys: Callable[[dict[str, Any]], EnvoyProcess],
        backends: tuple[Backend, Backend]) -> None:
    a, b = backends
    mesh = MiniMesh(plane, envoys)
    side_a = Sidecar(plane, envoys, "echo", 0, app_port=a.port)
    side_b = Sidecar(plane, envoys, "echo", 1, app_port=b.port)
    emulator.put({"apiVersion": "v1", "kind": "Node", "metadata": {
        "name": "node-a", "labels": {"topology.kubernetes.io/zone": "zone-a"}}})
    emulator.put(service("echo", "198.18.0.10"))
    emulator.put(pod("echo-0", "echo", side_a, a))
    emulator.put(pod("echo-1", "echo", side_b, b))
    emulator.put(endpoint_slice("echo-abc", "echo", {"echo-0": True, "echo-1": False}))
    controller = (await start_controller(plane)).controller
    for side in (side_a, side_b):
        mesh.sidecars.append(side)
        await side.start()
    caller = await mesh.client()

    await _eventually(caller, "http://echo/", {"A"})
    stored = await plane.store.get("Workload", "default", "echo-0")
    assert stored is not None
    assert stored.body["spec"]["serviceAccount"] == "echo"
    assert stored.body["metadata"]["labels"]["topology.kubernetes.io/zone"] == "zone-a"
    assert plane.reconciler.index.status(
        ResourceKey("Service", "default", "echo"))["virtualIP"] == "198.18.0.10"

    # The slice changes: echo-1 ready, echo-0 terminating (not ready).
    emulator.put(endpoint_slice("echo-abc", "echo", {"echo-0": False, "echo-1": True}))
    await _eventually(caller, "http://echo/", {"B"})

    # A deletion the watch never saw (history compacted): resuming gets 410, the
    # controller lists again and drops the pod.
    emulator.put(endpoint_slice("echo-abc", "echo", {"echo-0": True, "echo-1": True}))
    await _eventually(caller, "http://echo/", {"A", "B"})
    before = controller.relists.get("Pod", 0)
    emulator.delete_unseen(emulator.get("v1", "Pod", "default", "echo-1") or {})
    await _eventually(caller, "http://echo/", {"A"})
    assert controller.relists.get("Pod", 0) > before
    assert await plane.store.get("Workload", "default", "echo-1") is None

    # The Service goes: its store document goes, and callers get the mesh's 404.
    emulator.delete(service("echo", "198.18.0.10"))
    await _eventually(caller, "http://echo/", {"404"})


def http_route(name: str, parent: str) -> dict[str, Any]:
    """A GAMMA route: its parent is a core Service."""
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": parent,
                                     "port": 80}],
                     "rules": [{"backendRefs": [{"name": "echo", "port": 80}]}]}}


def _accepted(emulator: KubeEmulator, name: str) -> str | None:
    obj = emulator.get("gateway.networking.k8s.io/v1", "HTTPRoute", "default", name) or {}
    for parent in (obj.get("status") or {}).get("parents") or ():
        for cond in parent["conditions"]:
            if cond["type"] == "Accepted":
                assert parent["controllerName"] == "gossamer.dev/mesh"
                assert cond["observedGeneration"] == obj["metadata"]["generation"]
                return str(cond["status"])
    return None


async def test_leader_writes_status_and_hands_over(
        plane: ControlPlane, emulator: KubeEmulator, start_controller: Any) -> None:
    emulator.put(service("echo", "198.18.0.10"))
    emulator.put(http_route("to-echo", "echo"))
    emulator.put(http_route("to-nothing", "nothing"))
    first = await start_controller(plane, "cp-a")
    await wait_for(lambda: _true(first.controller.elector.leading), "cp-a leads", 10)
    second = await start_controller(plane, "cp-b")

    async def written() -> bool:
        return (_accepted(emulator, "to-echo"), _accepted(emulator, "to-nothing")) == \
            ("True", "False")

    await wait_for(written, "the routes' conditions in their status", 15)
    assert await plane.store.get("HTTPRoute", "default", "to-echo") is not None
    assert not second.controller.elector.leading
    assert not second.controller._written_status  # a follower writes nothing

    await first.stop()  # releases the Lease: cp-b takes over at its next round
    await wait_for(lambda: _true(second.controller.elector.leading), "cp-b leads", 10)
    lease = emulator.get("coordination.k8s.io/v1", "Lease", "gossamer-system",
                         "gossamer-controller")
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "cp-b"
    assert lease["spec"]["leaseTransitions"] == 0  # released, not taken from a holder

    emulator.put(http_route("to-nothing", "echo"))  # now its parent exists

    async def rewritten() -> bool:
        return _accepted(emulator, "to-nothing") == "True"

    await wait_for(rewritten, "the new leader's status", 15)


async def _true(value: bool) -> bool:
    return value


async def test_service_account_tokens_are_reviewed(emulator: KubeEmulator,
                                                   tmp_path: Path) -> None:
    """A projected token is vouched for by the API server's TokenReview, for audience
    `gossamer` only, and the verdict is cached."""
    good, other = "a.good.jwt", "a.other-audience.jwt"
    emulator.tokens[good] = ("system:serviceaccount:shop:web", ["gossamer"])
    emulator.tokens[other] = ("system:serviceaccount:shop:web", ["vault"])
    emulator.tokens["a.user.jwt"] = ("jane", ["gossamer"])
    api = KubeApi.connect(emulator.kubeconfig(tmp_path / "kubeconfig"))
    tokens = Tokens(MemoryStore())
    reviewer = TokenReviewer(api, cache_seconds=60)
    tokens.external = reviewer.verify
    try:
        record = await tokens.verify(good)
        assert record is not None
        assert record.kubernetes
        assert record.identity("td") == SpiffeId("td", "shop", "web")
        assert await tokens.verify(other) is None
        assert await tokens.verify("a.user.jwt") is None  # not a ServiceAccount
        assert await tokens.verify("a.unknown.jwt") is None
        assert await tokens.verify("not-a-jwt") is None  # never sent for review
        reviews = [r for r in emulator.requests if r[1].endswith("/tokenreviews")]
        assert len(reviews) == 4
        del emulator.tokens[good]
        assert await tokens.verify(good) == record  # cached for cache_seconds
    finally:
        await api.close()


async def test_errors_are_retried_and_applied_documents_left_alone(
        plane: ControlPlane, emulator: KubeEmulator, start_controller: Any) -> None:
    """The API server failing at first is retried with backoff; a document the store
    holds from elsewhere (a VM's Workload) is never replaced by a cluster object."""
    vm = {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Workload",
          "metadata": {"name": "echo-0", "namespace": "default"},
          "spec": {"service": "vm", "address": "198.18.0.9", "port": 8080}}
    await plane.store.put("Workload", "default", "echo-0", vm)
    emulator.put(service("echo", "198.18.0.10"))
    emulator.put({"apiVersion": "v1", "kind": "Pod",
                  "metadata": {"name": "echo-0", "namespace": "default",
                               "labels": {"app": "echo"}},
                  "spec": {"containers": [{"name": "app", "image": "app",
                                           "ports": [{"containerPort": 8080}]}]},
                  "status": {"phase": "Running", "podIP": "127.0.0.1"}})
    emulator.fail_next = 12
    run = await start_controller(plane)
    assert emulator.fail_next == 0
    assert await plane.store.get("Service", "default", "echo") is not None
    stored = await plane.store.get("Workload", "default", "echo-0")
    assert stored is not None
    assert stored.body == vm  # untouched
    assert any("echo-0" in str(p) and "not made by the controller" in p.reason
               for p in run.controller.problems)


async def test_a_dropped_watch_resumes_without_a_relist(
        plane: ControlPlane, emulator: KubeEmulator, start_controller: Any) -> None:
    """The API server ends every watch (a restart, a timeout): the controller watches
    again from the last version it saw, so a change made meanwhile arrives as an event,
    with no list."""
    run = await start_controller(plane)
    lists = list(emulator.lists)
    seen = emulator.revision
    emulator.drop_watches()
    emulator.put(service("late", "198.18.0.11"))

    async def arrived() -> bool:
        return await plane.store.get("Service", "default", "late") is not None
    await wait_for(arrived, "the Service made while the watches were down", 10)
    assert emulator.lists == lists  # nothing listed again
    assert run.controller.relists == {}
    resumed = [v for path, v in emulator.watch_starts if path == "/api/v1/services"]
    assert len(resumed) >= 2
    assert 0 < resumed[-1] <= seen  # from the last version seen, not from now
