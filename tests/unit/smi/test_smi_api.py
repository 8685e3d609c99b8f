"""SMI resources through the real API (in process): applied, stored, listed by kind;
SMI's TCPRoute beside a Gateway API TCPRoute of the same name."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gossamer.api.app import create_app
from gossamer.api.auth import Authenticator
from gossamer.api.context import ApiContext
from gossamer.ca.tokens import Scope, Tokens
from gossamer.controlplane.leases import Leases
from gossamer.controlplane.reconcile import Reconciler
from gossamer.store.sqlite import SqliteStore

DOCS = list(yaml.safe_load_all("""
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: db, namespace: data}
spec:
  parentRefs: [{name: db, port: 5432}]
  rules: [{backendRefs: [{name: db-v2, port: 5432}]}]
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: db, namespace: data}
spec:
  matches: {ports: [5432]}
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: routes, namespace: data}
spec:
  matches: [{name: all, pathRegex: ".*", methods: ["*"]}]
---
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: db, namespace: data}
spec:
  service: db
  backends: [{service: db-v2, weight: 1}]
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: db, namespace: data}
spec:
  destination: {kind: ServiceAccount, name: db}
  rules: [{kind: TCPRoute, name: db}]
  sources: [{kind: ServiceAccount, name: app}]
"""))


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    store = SqliteStore(str(tmp_path / "gossamer.db"))
    tokens = Tokens(store)
    reconciler = Reconciler(store, lambda node, snap: None, debounce=0.005)
    task = asyncio.create_task(reconciler.run())
    try:
        await reconciler.wait_ready()
        admin, _ = await tokens.create(Scope.ADMIN)
        ctx = ApiContext(store, reconciler, Leases(store), lambda: [],
                         auth=Authenticator(tokens), tokens=tokens)
        transport = httpx.ASGITransport(app=create_app(ctx))
        async with httpx.AsyncClient(transport=transport, base_url="http://cp") as http:
            yield http, {"Authorization": f"Bearer {admin}"}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()


async def get(http: httpx.AsyncClient, auth: dict[str, str], path: str) -> Any:
    resp = await http.get(path, headers=auth)
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_smi_kinds_apply_and_list_beside_the_gateway_tcproute(
        api: tuple[httpx.AsyncClient, dict[str, str]]) -> None:
    http, auth = api
    for doc in DOCS:
        resp = await http.post("/api/v1/apply", json=doc, headers=auth)
        assert resp.status_code == 200, resp.text
        assert resp.json()["result"] == "created"
    gateway = await get(http, auth, "/api/v1/resources/tcproutes?namespace=data")
    assert [(d["apiVersion"], d["spec"]["parentRefs"][0]["name"]) for d in gateway] == [
        ("gateway.networking.k8s.io/v1alpha2", "db")]
    smi = await get(http, auth,
                    "/api/v1/resources/tcproutes.specs.smi-spec.io?namespace=data")
    assert [(d["apiVersion"], d["kind"], d["spec"]) for d in smi] == [
        ("specs.smi-spec.io/v1alpha4", "TCPRoute", {"matches": {"ports": [5432]}})]
    one = await get(http, auth, "/api/v1/resources/TCPRoute.specs.smi-spec.io/data/db")
    assert one["apiVersion"] == "specs.smi-spec.io/v1alpha4"
    for kind in ("trafficsplits", "traffictargets", "httproutegroups"):
        (doc,) = await get(http, auth, f"/api/v1/resources/{kind}?namespace=data")
        assert doc["kind"].lower() + "s" == kind
    kinds = await get(http, auth, "/api/v1/kinds")
    assert kinds[-4:] == ["TrafficSplit", "TrafficTarget", "HTTPRouteGroup",
                          "TCPRoute.specs.smi-spec.io"]
    resp = await http.delete("/api/v1/resources/tcproutes.specs.smi-spec.io/data/db",
                             headers=auth)
    assert resp.status_code == 200, resp.text
    assert len(await get(http, auth, "/api/v1/resources/tcproutes?namespace=data")) == 1


async def test_an_smi_document_is_refused_with_its_field(
        api: tuple[httpx.AsyncClient, dict[str, str]]) -> None:
    http, auth = api
    doc = {**DOCS[4], "spec": {**DOCS[4]["spec"], "rules": [{"kind": "UDPRoute", "name": "u"}]}}
    resp = await http.post("/api/v1/apply", json=doc, headers=auth)
    assert resp.status_code == 422, resp.text
    assert [f["path"] for f in resp.json()["fields"]] == ["spec.rules[0].kind"]
