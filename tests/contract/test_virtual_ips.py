"""The virtual IP allocator (controlplane/vips.py) on every store backend: replicas
sharing a store never hand out one address twice, and addresses survive restarts."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from typing import Any

import httpx

from gossamer.controlplane.server import ControlPlane, ControlPlaneOptions
from gossamer.controlplane.vips import VipAllocator
from gossamer.store import ResourceStore
from gossamer.virtualips.table import (
    TABLE_KIND,
    TABLE_NAME,
    TABLE_NAMESPACE,
    Allocation,
    load_table,
)
from tests.contract.conftest import DurableStores, StoreFactory

NET = ipaddress.IPv4Network("240.240.0.0/16")
BODY: dict[str, Any] = {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Service",
                        "spec": {"ports": [{"port": 80}]}}


class Interleaved:
    """The store, but every read first yields to the event loop, as a networked store
    does: two allocators on one loop then interleave between reading and writing."""

    def __init__(self, store: ResourceStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def get(self, *args: Any) -> Any:
        await asyncio.sleep(0)
        return await self._store.get(*args)

    async def list(self, *args: Any) -> Any:
        await asyncio.sleep(0)
        return await self._store.list(*args)


class Lockstep(Interleaved):
    """Its first write waits until the other replica's is about to happen too: both
    have read the same table, so exactly one write can win."""

    def __init__(self, store: ResourceStore, barrier: asyncio.Barrier) -> None:
        super().__init__(store)
        self._barrier: asyncio.Barrier | None = barrier

    async def put(self, *args: Any, **kwargs: Any) -> Any:
        if self._barrier is not None:
            barrier, self._barrier = self._barrier, None
            await barrier.wait()
        return await self._store.put(*args, **kwargs)


async def put_service(store: ResourceStore, name: str, **spec: Any) -> None:
    body = {**BODY, "metadata": {"name": name, "namespace": "default"},
            "spec": {**BODY["spec"], **spec}}
    await store.put("Service", "default", name, body)


async def stored(store: ResourceStore) -> Allocation:
    obj = await store.get(TABLE_KIND, TABLE_NAMESPACE, TABLE_NAME)
    assert obj is not None
    alloc = Allocation.of(load_table(obj.body))
    assert alloc is not None
    return alloc


async def test_two_replicas_racing_hand_out_each_address_once(
        store_factory: StoreFactory) -> None:
    store = store_factory()
    barrier = asyncio.Barrier(2)
    a, b = (VipAllocator(Lockstep(store, barrier), NET),
            VipAllocator(Lockstep(store, barrier), NET))
    # In lockstep: both read one table, the second writer must lose and re-read.
    for i in range(5):
        await put_service(store, f"lockstep-{i}")
    await asyncio.gather(a.sync_once(), b.sync_once())
    assert (a.conflicts + b.conflicts, a.writes + b.writes) == (1, 1)
    # Free-running, while Services keep arriving between their reads and writes.
    runs = [asyncio.create_task(x.run()) for x in (a, b)]
    try:
        for i in range(40):
            await put_service(store, f"svc-{i:02d}")
            await asyncio.sleep(0)
        for _ in range(200):
            alloc = await stored(store)
            if len(alloc.allocated) == 45:
                break
            await asyncio.sleep(0.05)
    finally:
        for task in runs:
            task.cancel()
        for task in runs:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    alloc = await stored(store)
    assert set(alloc.allocated) == {f"default/lockstep-{i}" for i in range(5)} | {
        f"default/svc-{i:02d}" for i in range(40)}
    assert len(set(alloc.allocated.values())) == 45, "an address was handed out twice"
    assert all(ipaddress.IPv4Address(ip) in NET for ip in alloc.allocated.values())
    # Both replicas agree that nothing is left to do.
    assert await a.sync_once() == await b.sync_once() == alloc


async def test_a_deleted_service_frees_its_address_and_an_explicit_one_wins(
        store: ResourceStore) -> None:
    allocator = VipAllocator(store, NET)
    await put_service(store, "a")
    await put_service(store, "b")
    await allocator.sync_once()
    await store.delete("Service", "default", "a")
    await put_service(store, "c", virtualIP="10.20.30.40")
    alloc = await allocator.sync_once()
    assert alloc is not None
    assert dict(alloc.allocated) == {"default/b": "240.240.0.2"}


async def test_external_services_get_addresses_from_the_same_table_but_wildcards_none(
        store: ResourceStore) -> None:
    allocator = VipAllocator(store, NET)
    await put_service(store, "payments")
    for name, hosts in (("payments", ["api.payments.example"]), ("wild", ["*.wild.example"])):
        await store.put("ExternalService", "default", name, {
            "apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "ExternalService",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"hosts": hosts, "ports": [{"port": 80, "protocol": "HTTP"}]}})
    alloc = await allocator.sync_once()
    assert alloc is not None
    # A Service and an ExternalService of one name are two slots.
    assert sorted(alloc.allocated) == ["default/ExternalService:payments", "default/payments"]
    assert len(set(alloc.allocated.values())) == 2


async def test_a_restarted_control_plane_keeps_every_address(durable: DurableStores) -> None:
    async def addresses() -> dict[str, str]:
        plane = ControlPlane(ControlPlaneOptions(state_dir=None, xds_port=0, api_port=0,
                                                 secure=False), store=durable.open())
        await plane.start()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{plane.api_port}",
                                         trust_env=False, timeout=10) as api:
                for name in ("zeta", "alpha", "mid"):
                    resp = await api.post("/api/v1/apply", json={
                        **BODY, "metadata": {"name": name, "namespace": "default"}})
                    assert resp.status_code == 200, resp.text
                seen: dict[str, str] = {}
                for _ in range(100):
                    docs = (await api.get("/api/v1/resources/Service")).json()
                    seen = {d["metadata"]["name"]: d.get("status", {}).get("virtualIP")
                            for d in docs}
                    if all(seen.values()):
                        return seen
                    await asyncio.sleep(0.05)
                raise AssertionError(f"Services without a virtual IP: {seen}")
        finally:
            await plane.stop()

    first = await addresses()
    assert sorted(first.values()) == ["240.240.0.1", "240.240.0.2", "240.240.0.3"]
    assert await addresses() == first
