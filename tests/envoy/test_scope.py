"""A Sidecar resource scoping a real Envoy's egress: it holds only the Services in
scope, a change to another Service sends it nothing, and widening the scope adds
the Service's config without a restart."""

from __future__ import annotations

import json
from typing import Any

from tests.envoy.harness import API, MiniMesh, Sidecar, explained, get, wait_for

SIDECAR: dict[str, Any] = {
    "apiVersion": API, "kind": "Sidecar", "metadata": {"name": "client"},
    "spec": {"workloadSelector": {"matchLabels": {"app": "client"}},
             "egress": {"hosts": ["./echo"]}}}
OTHER_ROUTE = {
    "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
    "metadata": {"name": "other"},
    "spec": {"parentRefs": [{"kind": "Service", "name": "other", "port": 80}],
             "rules": [{"filters": [{"type": "ResponseHeaderModifier",
                                     "responseHeaderModifier": {
                                         "set": [{"name": "x-routed", "value": "yes"}]}}],
                        "backendRefs": [{"name": "other", "port": 80}]}]}}


async def _clusters(side: Sidecar) -> set[str]:
    text = await side.envoy.aadmin_get("/clusters")
    return {line.split("::", 1)[0] for line in text.splitlines()
            if line.startswith("outbound|")}


async def _route_updated(side: Sidecar) -> str:
    """When the sidecar last took a new `outbound` route config (Envoy's config dump)."""
    dump = json.loads(await side.envoy.aadmin_get("/config_dump?resource=dynamic_route_configs"))
    (config,) = [c for c in dump["configs"] if c["route_config"]["name"] == "outbound"]
    return str(config["last_updated"])


async def test_sidecar_scopes_egress_and_widens_without_restart(mini: MiniMesh,
                                                                make_backend: Any) -> None:
    await mini.serve("echo", [make_backend("echo")])
    await mini.serve("other", [make_backend("other")])
    await mini.apply(SIDECAR)
    client = await mini.client(labels={"app": "client"})
    whole = await mini.client("watcher")  # no Sidecar covers it: the whole mesh
    await mini.wait_synced()

    assert (await get(client, "http://echo/")).status_code == 200
    refused = await get(client, "http://other/")
    assert refused.status_code == 404, refused.text
    assert "no mesh service matches" in refused.text
    assert await _clusters(client) == {"outbound|80||echo.default"}
    exp = await explained(mini, status=404)
    assert exp["policy"] == "Sidecar default/client", exp
    assert "other.default is outside the caller's egress scope" in exp["cause"], exp

    # A route change to a Service out of scope reaches the Service's callers only.
    updated, watcher_updated = await _route_updated(client), await _route_updated(whole)
    await mini.apply(OTHER_ROUTE)
    await wait_for(lambda: _routed(whole), "the route change at an unscoped caller")
    await mini.wait_synced()
    assert await _route_updated(whole) != watcher_updated
    assert await _route_updated(client) == updated

    # Widen the scope: the Service's cluster, endpoints and route arrive in place.
    await mini.apply({**SIDECAR, "spec": {**SIDECAR["spec"],
                                          "egress": {"hosts": ["./echo", "./other"]}}})
    await wait_for(lambda: _reachable(client), "other reachable after widening the scope")
    assert await _routed(client)
    assert await _clusters(client) == {"outbound|80||echo.default",
                                       "outbound|80||other.default"}

    # Narrow it again: the cluster is removed, echo still answers.
    await mini.apply(SIDECAR)
    await wait_for(lambda: _unreachable(client), "other refused after narrowing the scope")
    assert await _clusters(client) == {"outbound|80||echo.default"}
    assert (await get(client, "http://echo/")).status_code == 200


async def _routed(side: Sidecar) -> bool:
    return (await get(side, "http://other/")).headers.get("x-routed") == "yes"


async def _reachable(client: Sidecar) -> bool:
    return (await get(client, "http://other/")).status_code == 200


async def _unreachable(client: Sidecar) -> bool:
    return (await get(client, "http://other/")).status_code == 404
