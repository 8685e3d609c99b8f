"""The API against hostile input, in process on a SQLite store with tokens on: text
that is not valid Unicode is refused before it is stored (and what is already
stored never breaks a listing), bodies over the limit get 413, and a join token
may store only small Workloads, and only so many."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gossamer.api.app import create_app
from gossamer.api.auth import Authenticator
from gossamer.api.context import ApiContext
from gossamer.ca.tokens import Scope, Tokens
from gossamer.controlplane.leases import Leases
from gossamer.controlplane.reconcile import Reconciler
from gossamer.store.sqlite import SqliteStore

MESH = "mesh.gossamer.dev/v1alpha1"
MIB = 1024 * 1024


@dataclass
class Api:
    http: httpx.AsyncClient
    store: SqliteStore
    reconciler: Reconciler
    admin: dict[str, str]
    join: dict[str, str]  # a join token for default/web

    async def apply(self, doc: dict[str, Any], auth: dict[str, str]) -> httpx.Response:
        # Serialized here: httpx's own encoder refuses lone surrogates, a client need not.
        return await self.http.post("/api/v1/apply", content=json.dumps(doc), headers={
            **auth, "content-type": "application/json"})

    async def indexed(self, predicate: Callable[[Reconciler], bool]) -> None:
        for _ in range(500):
            if predicate(self.reconciler):
                return
            await asyncio.sleep(0.02)
        raise AssertionError("the index did not catch up")


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    store = SqliteStore(str(tmp_path / "gossamer.db"))
    tokens = Tokens(store)
    reconciler = Reconciler(store, lambda node, snap: None, debounce=0.005)
    task = asyncio.create_task(reconciler.run())
    try:
        await reconciler.wait_ready()
        admin, _ = await tokens.create(Scope.ADMIN)
        join, _ = await tokens.create(Scope.JOIN, namespace="default", account="web")
        ctx = ApiContext(store, reconciler, Leases(store), lambda: [],
                         auth=Authenticator(tokens), tokens=tokens)
        transport = httpx.ASGITransport(app=create_app(ctx))
        async with httpx.AsyncClient(transport=transport, base_url="http://cp") as http:
            yield Api(http, store, reconciler, {"Authorization": f"Bearer {admin}"},
                      {"Authorization": f"Bearer {join}"})
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()


def workload(name: str = "web-1", **meta: Any) -> dict[str, Any]:
    return {"apiVersion": MESH, "kind": "Workload", "metadata": {"name": name, **meta},
            "spec": {"service": "web", "address": "127.0.0.1", "port": 8080}}


async def listed(api: Api) -> list[dict[str, Any]]:
    resp = await api.http.get("/api/v1/resources/Workload", headers=api.join)
    assert resp.status_code == 200, resp.text
    docs: list[dict[str, Any]] = resp.json()
    return docs


# ---------------------------------------------------------------- text


async def test_a_lone_surrogate_is_refused_and_nothing_is_stored(api: Api) -> None:
    resp = await api.apply(workload(annotations={"a": "\ud800"}), api.join)
    assert resp.status_code == 422, resp.text
    assert [f["path"] for f in resp.json()["fields"]] == ["metadata.annotations.a"]
    assert await api.store.get("Workload", "default", "web-1") is None
    assert await listed(api) == []


async def test_a_stored_document_that_cannot_be_shown_does_not_break_listing(api: Api) -> None:
    """Data stored before the check: listing shows it as unreadable, the rest as usual,
    and an admin can still delete it."""
    bad = workload("bad", annotations={"a": "\ud800"})
    await api.store.put("Workload", "default", "bad", {**bad, "metadata": {
        **bad["metadata"], "namespace": "default"}})
    assert (await api.apply(workload("good"), api.join)).status_code == 200

    docs = {d["metadata"]["name"]: d for d in await listed(api)}
    assert docs["good"]["spec"]["port"] == 8080
    [condition] = docs["bad"]["status"]["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "Readable", "False", "InvalidText")
    one = await api.http.get("/api/v1/resources/Workload/default/bad", headers=api.join)
    assert one.status_code == 200
    beat = await api.http.post("/api/v1/workloads/default/bad/heartbeat",
                               json={"health": "Healthy"}, headers=api.join)
    assert beat.status_code == 409

    # Its identity cannot be read, so a join token may not delete it; an admin may.
    path = "/api/v1/resources/Workload/default/bad"
    assert (await api.http.delete(path, headers=api.join)).status_code == 403
    assert (await api.http.delete(path, headers=api.admin)).status_code == 200
    assert [d["metadata"]["name"] for d in await listed(api)] == ["good"]


async def test_a_token_description_must_be_valid_text(api: Api) -> None:
    resp = await api.http.post("/api/v1/tokens", headers={
        **api.admin, "content-type": "application/json"},
        content=json.dumps({"scope": "read", "description": "x\udc80"}))
    assert resp.status_code == 422
    listing = await api.http.get("/api/v1/tokens", headers=api.admin)
    assert listing.status_code == 200
    assert len(listing.json()) == 2  # the fixture's two


# ---------------------------------------------------------------- strict types


@pytest.mark.parametrize("port", [True, "80"])
async def test_port_must_be_a_number(api: Api, port: object) -> None:
    doc = workload()
    doc["spec"]["port"] = port
    resp = await api.apply(doc, api.join)
    assert resp.status_code == 422
    assert [f["path"] for f in resp.json()["fields"]] == ["spec.port"]


# ---------------------------------------------------------------- sizes


async def test_a_chunked_body_over_1_mib_is_refused_with_413(api: Api) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(40):  # 2.5 MiB, no Content-Length
            sent += 1
            yield b" " * (64 * 1024)

    resp = await api.http.post("/api/v1/apply", content=chunks(), headers=api.admin)
    assert resp.status_code == 413
    assert resp.json() == {"error": "the request body is larger than 1 MiB", "fields": []}
    assert sent < 40  # refused while the body was still coming


async def test_a_declared_length_over_1_mib_is_refused_unread(api: Api) -> None:
    resp = await api.http.post("/api/v1/apply", content=b"{" + b" " * MIB + b"}",
                               headers=api.admin)
    assert resp.status_code == 413
    assert resp.json()["error"] == "the request body is larger than 1 MiB"


async def test_a_body_just_under_the_limit_reaches_validation(api: Api) -> None:
    doc = workload(annotations={"a": "x" * (MIB - 500)})
    resp = await api.apply(doc, api.admin)
    assert resp.status_code == 422  # the document's limits, not the body's
    assert [f["path"] for f in resp.json()["fields"]] == ["metadata.annotations", ""]


async def test_a_join_token_stores_only_small_workloads(api: Api) -> None:
    doc = workload(annotations={"a": "x" * 20_000})
    resp = await api.apply(doc, api.join)
    assert resp.status_code == 422
    assert "at most 16 KiB" in resp.json()["error"]
    assert await api.store.get("Workload", "default", "web-1") is None
    assert (await api.apply(doc, api.admin)).status_code == 200


async def test_a_join_token_registers_a_bounded_number_of_workloads(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gossamer.api.app.MAX_JOIN_WORKLOADS", 3)
    for i in range(3):
        assert (await api.apply(workload(f"web-{i}"), api.join)).status_code == 200
    await api.indexed(lambda r: len(r.index.workloads) == 3)

    refused = await api.apply(workload("web-3"), api.join)
    assert refused.status_code == 403
    assert "already has 3 Workloads registered" in refused.json()["error"]
    # Updating one it holds is not a new one; an admin is not counted against it.
    updated = workload("web-0", labels={"version": "v2"})
    assert (await api.apply(updated, api.join)).status_code == 200
    assert (await api.apply(workload("web-3"), api.admin)).status_code == 200
