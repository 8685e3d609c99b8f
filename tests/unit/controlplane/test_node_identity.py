"""Which credential may use which node id (docs/security.md, node identity): the
secure control plane in this process, raw ADS streams over its TLS port, and the
HTTP API's workload registrations. The attack against a real sidecar Envoy is in
tests/e2e/test_security.py; these cover each rule on its own, quickly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import httpx
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from gossamer.ca.tokens import Scope
from gossamer.contract.names import CONTROL_PLANE_NAME
from gossamer.controlplane.server import ControlPlane, ControlPlaneOptions
from gossamer.xds.types import CLUSTER

TIMEOUT = 10.0


@pytest.fixture
async def plane() -> AsyncIterator[ControlPlane]:
    cp = ControlPlane(ControlPlaneOptions(state_dir=None, xds_port=0, api_port=0,
                                          debounce=0.01, secure=True))
    await cp.start()
    try:
        yield cp
    finally:
        await cp.stop()


async def _join(cp: ControlPlane, service: str) -> str:
    assert cp.tokens is not None
    text, _ = await cp.tokens.create(Scope.JOIN, namespace="default", account=service)
    return text


def _metadata(workload: str, service: str, namespace: str = "default") -> dict[str, Any]:
    return {"service": service, "namespace": namespace, "workload": workload,
            "inbound_port": 18080, "app_port": 18081, "outbound_port": 18082}


class Stream:
    """A delta (or SotW) ADS stream over the control plane's TLS port, kept open
    like Envoy keeps it until `close`."""

    def __init__(self, cp: ControlPlane, token: str, node_id: str, meta: dict[str, Any],
                 *, delta: bool = True) -> None:
        assert cp.ca is not None
        creds = grpc.ssl_channel_credentials(root_certificates=cp.ca.bundle_pem().encode())
        self.channel = grpc.aio.secure_channel(
            f"127.0.0.1:{cp.xds_port}", creds,
            options=[("grpc.ssl_target_name_override", CONTROL_PLANE_NAME)])
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        auth = (("authorization", f"Bearer {token}"),)
        if delta:
            self.call: Any = stub.DeltaAggregatedResources(metadata=auth)
            self.first: Any = discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER)
        else:
            self.call = stub.StreamAggregatedResources(metadata=auth)
            self.first = discovery_pb2.DiscoveryRequest(type_url=CLUSTER)
        self.first.node.id = node_id
        self.first.node.metadata.update(meta)

    async def open(self) -> grpc.StatusCode | None:
        """None when the control plane answers the first request, else the status."""
        await self.call.write(self.first)
        try:
            await asyncio.wait_for(self.call.read(), TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            self.details = exc.details() or ""
            return exc.code()
        return None

    async def close(self) -> None:
        self.call.cancel()
        await self.channel.close()


async def _attempt(cp: ControlPlane, token: str, node_id: str, meta: dict[str, Any],
                   *, delta: bool = True) -> tuple[grpc.StatusCode | None, str]:
    stream = Stream(cp, token, node_id, meta, delta=delta)
    try:
        code = await stream.open()
        return code, getattr(stream, "details", "")
    finally:
        await stream.close()


async def _eventually(check: Any, what: str) -> None:
    for _ in range(400):
        if check():
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("delta", [True, False], ids=["delta", "sotw"])
async def test_node_id_must_be_the_workload_of_its_metadata(plane: ControlPlane,
                                                            delta: bool) -> None:
    web = await _join(plane, "web")
    assert plane.admin_token is not None
    for token in (web, plane.admin_token):
        code, details = await _attempt(plane, token, "frontend-0.default",
                                       _metadata("web-0", "web"), delta=delta)
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "is not WORKLOAD.NAMESPACE" in details
    code, _ = await _attempt(plane, web, "web-0.other", _metadata("web-0", "web"), delta=delta)
    assert code == grpc.StatusCode.PERMISSION_DENIED  # the namespace is part of the id
    assert await _attempt(plane, web, "web-0.default", _metadata("web-0", "web"),
                          delta=delta) == (None, "")
    assert "frontend-0.default" not in plane.reconciler.proxies


@pytest.mark.parametrize("delta", [True, False], ids=["delta", "sotw"])
async def test_a_registered_workload_is_refused_to_another_identity(plane: ControlPlane,
                                                                   delta: bool) -> None:
    await plane.store.put("Workload", "default", "frontend-0", {
        "apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Workload",
        "metadata": {"name": "frontend-0", "labels": {"app": "frontend"}},
        "spec": {"service": "frontend", "address": "127.0.0.1", "port": 18080,
                 "proxy": "frontend-0.default"}})
    await _eventually(lambda: any(w.metadata.name == "frontend-0"
                                  for w in plane.reconciler.index.workloads),
                      "the workload to be loaded")
    evil = await _join(plane, "evil")
    code, details = await _attempt(plane, evil, "frontend-0.default",
                                   _metadata("frontend-0", "evil"), delta=delta)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "registered as default/frontend" in details
    assert "frontend-0.default" not in plane.reconciler.proxies
    assert plane.registry.get("frontend-0.default") is None
    frontend = await _join(plane, "frontend")
    assert await _attempt(plane, frontend, "frontend-0.default",
                          _metadata("frontend-0", "frontend"), delta=delta) == (None, "")


async def test_a_connected_node_is_refused_to_any_other_token(plane: ControlPlane) -> None:
    """Even another token of the same identity, or the admin token, may not take a
    node id over while its stream is open; the same token may (a reconnect)."""
    first, second = await _join(plane, "web"), await _join(plane, "web")
    meta = _metadata("web-0", "web")
    owner = Stream(plane, first, "web-0.default", meta)
    try:
        assert await owner.open() is None
        assert plane.admin_token is not None
        for token, delta in ((second, True), (second, False), (plane.admin_token, True)):
            code, details = await _attempt(plane, token, "web-0.default",
                                           {**meta, "inbound_port": 19999}, delta=delta)
            assert code == grpc.StatusCode.PERMISSION_DENIED
            assert "connected with another credential" in details
        assert plane.reconciler.proxies["web-0.default"].inbound_port == 18080
        assert await _attempt(plane, first, "web-0.default", meta, delta=False) == (None, "")
        status = plane.registry.get("web-0.default")
        assert status is not None
        assert status.connected  # the reconnect's end left the first stream connected
        assert plane.cache.get("web-0.default") is not None
    finally:
        await owner.close()
    await _eventually(lambda: not plane.registry.node_ids(), "the node to disconnect")
    assert await _attempt(plane, second, "web-0.default", meta) == (None, "")


async def _api(cp: ControlPlane, token: str, method: str, path: str,
               body: Any = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{cp.api_port}", trust_env=False,
                                 headers={"Authorization": f"Bearer {token}"},
                                 timeout=10) as client:
        return await client.request(method, path, json=body)


def _workload(name: str, service: str, port: int) -> dict[str, Any]:
    return {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Workload",
            "metadata": {"name": name, "labels": {"app": service}},
            "spec": {"service": service, "address": "127.0.0.1", "port": port,
                     "proxy": f"{name}.default", "ttlSeconds": 15}}


async def test_api_join_token_cannot_replace_or_remove_another_identitys_workload(
        plane: ControlPlane) -> None:
    frontend, evil = await _join(plane, "frontend"), await _join(plane, "evil")
    created = await _api(plane, frontend, "POST", "/api/v1/apply",
                         _workload("frontend-0", "frontend", 18080))
    assert created.status_code == 200, created.text
    before = await plane.store.get("Workload", "default", "frontend-0")
    assert before is not None
    takeover = await _api(plane, evil, "POST", "/api/v1/apply",
                          _workload("frontend-0", "evil", 18090))
    assert takeover.status_code == 403
    assert "not default/frontend" in takeover.json()["error"]
    for method, path, body in (
            ("DELETE", "/api/v1/resources/Workload/default/frontend-0", None),
            ("POST", "/api/v1/workloads/default/frontend-0/heartbeat", {"health": "Unhealthy"})):
        assert (await _api(plane, evil, method, path, body)).status_code == 403
    after = await plane.store.get("Workload", "default", "frontend-0")
    assert after is not None
    assert (after.revision, after.body) == (before.revision, before.body)
    # Its own: registered, registered again (the agent's re-registration), removed.
    for _ in range(2):
        mine = await _api(plane, evil, "POST", "/api/v1/apply", _workload("evil-0", "evil", 18091))
        assert mine.status_code == 200, mine.text
    gone = await _api(plane, evil, "DELETE", "/api/v1/resources/Workload/default/evil-0")
    assert gone.status_code == 200, gone.text


@pytest.mark.parametrize("delta", [True, False], ids=["delta", "sotw"])
async def test_a_join_token_serves_only_proxies_of_its_own_service(plane: ControlPlane,
                                                                   delta: bool) -> None:
    """The account matches the token, but the service is another's: the control plane
    would translate that service's inbound side and policies for the stream."""
    web = await _join(plane, "web")
    meta = {**_metadata("web-1", "frontend"), "service_account": "web"}
    code, details = await _attempt(plane, web, "web-1.default", meta, delta=delta)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "serves only proxies of service 'web'" in details
