"""Control-plane replicas sharing one PostgreSQL store (issue 19): one leader, and a
new one when it goes; lease expiry on the leader only, renewed by heartbeats sent to
any replica; CA rotation steps taken once and adopted by every replica; the same
config, byte for byte, from either replica."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gossamer.controlplane.server import ControlPlane, ControlPlaneOptions
from gossamer.store.postgres import PostgresStore

MESH = "mesh.gossamer.dev/v1alpha1"


def service(name: str) -> dict[str, Any]:
    return {"apiVersion": MESH, "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80}]}}


def workload(name: str, ttl: int) -> dict[str, Any]:
    return {"apiVersion": MESH, "kind": "Workload",
            "metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {"service": "web", "address": "198.18.0.7", "port": 15006,
                     "appPort": 8080, "health": "Healthy", "ttlSeconds": ttl}}


async def until(what: str, check: Callable[[], bool], timeout: float = 30.0) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


@pytest.fixture
async def replicas(postgres_url: str, tmp_path: Path) -> AsyncIterator[list[ControlPlane]]:
    planes = []
    try:
        for n in range(2):
            (tmp_path / str(n)).mkdir()
            plane = ControlPlane(ControlPlaneOptions(
                state_dir=tmp_path / str(n), xds_port=0, api_port=0),
                store=PostgresStore(postgres_url))
            await plane.start()
            planes.append(plane)
        yield planes
    finally:
        for plane in planes:
            await plane.stop()


def api(plane: ControlPlane) -> httpx.AsyncClient:
    """A client of this replica, with the admin token the first replica created (the
    tokens are in the shared store, so it works on every replica)."""
    state = Path(plane.options.state_dir or ".").parent
    token = (state / "0" / "admin-token").read_text().strip()
    return httpx.AsyncClient(base_url=plane.api_url, trust_env=False, timeout=30,
                             headers={"Authorization": f"Bearer {token}"})


async def test_one_leader_and_a_new_one_when_it_goes(replicas: list[ControlPlane]) -> None:
    await until("a leader", lambda: any(p.cluster.is_leader for p in replicas))
    assert sum(p.cluster.is_leader for p in replicas) == 1
    [leader] = [p for p in replicas if p.cluster.is_leader]
    [other] = [p for p in replicas if p is not leader]
    await leader.cluster.close()  # its session, and so its lock, ends
    took = await until("a new leader", lambda: other.cluster.is_leader, timeout=10)
    assert not leader.cluster.is_leader
    assert took < 5  # the documented bound is retry (1 s) after the session ends


async def test_lease_expiry_runs_on_the_leader_once(replicas: list[ControlPlane]) -> None:
    await until("a leader", lambda: any(p.cluster.is_leader for p in replicas))
    [leader] = [p for p in replicas if p.cluster.is_leader]
    [other] = [p for p in replicas if p is not leader]
    async with api(other) as client:
        applied = await client.post("/api/v1/apply", json=workload("web-0", 3))
        assert applied.status_code == 200, applied.text
        # Heartbeats reach only the replica that does not expire: the leader hears of
        # them through the store, so the workload outlives its TTL twice over.
        for _ in range(12):
            beat = await client.post("/api/v1/workloads/default/web-0/heartbeat",
                                     json={"health": "Healthy"})
            assert beat.status_code == 200, beat.text
            await asyncio.sleep(0.5)
        assert await leader.store.get("Workload", "default", "web-0") is not None
    await until("the expiry", lambda: leader.leases.expirations == 1, timeout=30)
    await asyncio.sleep(2.5)  # more lease passes on both replicas
    assert [p.leases.expirations for p in (leader, other)] == [1, 0]
    assert await other.store.get("Workload", "default", "web-0") is None


async def test_rotation_steps_are_taken_once_and_adopted_by_every_replica(
        replicas: list[ControlPlane]) -> None:
    first, second = replicas
    assert first.ca is not None
    assert second.ca is not None
    before = await first.store.get("_CA", "gossamer-system", "ca")
    assert before is not None
    async with api(first) as client:
        began = await client.post("/api/v1/ca/rotate", json={"step": "begin"})
        assert began.status_code == 200, began.text
    ca1, ca2 = first.ca, second.ca
    await until("the second replica's bundle", lambda: ca2.bundle_pem() == ca1.bundle_pem())
    assert ca2.bundle_pem().count("BEGIN CERTIFICATE") == 2
    async with api(second) as client:  # the second replica takes the next step
        switched = await client.post("/api/v1/ca/rotate", json={"step": "switch"})
        assert switched.status_code == 200, switched.text
        again = await client.post("/api/v1/ca/rotate", json={"step": "switch"})
        assert again.status_code >= 400  # a step is taken once
    await until("the first replica's signer", lambda: ca1.signer == ca2.signer)
    after = await first.store.get("_CA", "gossamer-system", "ca")
    assert after is not None
    writes = [e async for e in _events_of(first, before.revision, after.revision)]
    assert len(writes) == 2  # begin, switch: once each


async def _events_of(plane: ControlPlane, start: int, end: int) -> AsyncIterator[int]:
    async for event in plane.store.watch(start):
        if event.object.kind == "_CA":
            yield event.revision
        if event.revision >= end:
            return


async def test_either_replica_gives_a_proxy_the_same_bytes(
        replicas: list[ControlPlane]) -> None:
    async with api(replicas[0]) as client:
        for name in ("web", "catalog"):
            assert (await client.post("/api/v1/apply", json=service(name))).status_code == 200
        assert (await client.post("/api/v1/apply", json=workload("web-0", 0))).status_code == 200
    meta = {"service": "web", "workload": "web-0", "inbound_port": 15006, "app_port": 8080,
            "outbound_port": 15001, "labels": {"app": "web"}}
    for plane in replicas:
        await until("the workload", lambda plane=plane: any(
            w.metadata.name == "web-0" for w in plane.reconciler.index.workloads))
        plane.reconciler.proxy_connected("web-0.default", dict(meta))
    await until("both snapshots", lambda: all(
        p.cache.get("web-0.default") is not None for p in replicas))
    first, second = (p.cache.get("web-0.default") for p in replicas)
    assert first is not None
    assert second is not None
    assert dict(first.versions) == dict(second.versions)
    for type_url, resources in first.resources.items():
        theirs = second.resources[type_url]
        assert {n: r.payload for n, r in resources.items()} == \
            {n: r.payload for n, r in theirs.items()}, type_url


async def test_a_token_revoked_on_one_replica_is_refused_by_the_other(
        replicas: list[ControlPlane]) -> None:
    first, second = replicas
    assert second.tokens is not None
    async with api(first) as client:
        made = await client.post("/api/v1/tokens", json={"scope": "join", "service": "web"})
        assert made.status_code == 200, made.text
        token, token_id = made.json()["token"], made.json()["id"]
        tokens = second.tokens
        await until("the token on the second replica", lambda: tokens.following)
        assert await tokens.verify(token) is not None
        assert (await client.delete(f"/api/v1/tokens/{token_id}")).status_code == 200
    refused = False
    for _ in range(200):  # the revocation travels through the store's watch
        if await tokens.verify(token) is None:
            refused = True
            break
        await asyncio.sleep(0.05)
    assert refused
