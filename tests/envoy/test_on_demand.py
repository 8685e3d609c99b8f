"""On-demand discovery (the Mesh's `onDemand`, translate/ondemand.py) through real
Envoys: a sidecar starts with no Service's virtual host or cluster, fetches both on
its first request to a Service (VHDS by alias, ODCDS), and from then on gets that
Service's changes, while the sidecars that never called it get none."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from gossamer.xds.types import VHOST
from tests.envoy.harness import Backend, MiniMesh, Sidecar, get, outbound_held, wait_for
from tests.envoy.test_vhds import _two_services

pytestmark = pytest.mark.slow

GATEWAY = "gateway.networking.k8s.io"


def _mesh_doc(on: bool) -> dict[str, Any]:
    return {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Mesh",
            "metadata": {"name": "default"}, "spec": {"onDemand": on}}


def _route(name: str, parent: str, rule: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GATEWAY}/v1", "kind": "HTTPRoute", "metadata": {"name": name},
            "spec": {"parentRefs": [{"name": parent}], "rules": [rule]}}


async def _mesh(mini: MiniMesh, make_backend: Callable[[str], Backend],
                ) -> tuple[Backend, Backend, Sidecar]:
    await mini.apply(_mesh_doc(True))
    return await _two_services(mini, make_backend)


async def _held(client: Sidecar) -> tuple[set[str], set[str]]:
    return outbound_held(await client.envoy.aconfig_dump(include_eds=False))


def _pushed(mini: MiniMesh, what: str, type_: str) -> float:
    value = mini.plane.metrics.get_sample_value(f"gossamer_xds_{what}_total", {"type": type_})
    return value or 0.0


async def test_first_request_fetches_the_services_routes_and_cluster_once(
        mini: MiniMesh, make_backend: Callable[[str], Backend]) -> None:
    echo, other, client = await _mesh(mini, make_backend)
    snapshot = mini.plane.cache.get(client.node.node_id)
    assert snapshot is not None
    assert snapshot.demand(VHOST) is not None
    assert await _held(client) == (set(), set())
    first = await get(client, "http://echo/a")
    assert first.status_code == 200, first.text
    assert [s[1] for s in echo.seen] == ["/a"]
    assert await _held(client) == ({"outbound/echo.default:80"}, {"outbound|80||echo.default"})
    # Another name of the same Service: the virtual host already answers for it.
    assert (await get(client, "http://echo.default.svc.cluster.local:80/b")).status_code == 200
    assert (await get(client, "http://other.default/c")).status_code == 200
    assert [s[1] for s in other.seen] == ["/c"]
    assert (await _held(client))[1] == {"outbound|80||echo.default",
                                        "outbound|80||other.default"}
    missing = await get(client, "http://nowhere/")  # no Service: answered, not hung
    assert missing.status_code == 404
    assert (await get(client, "http://echo/after-miss")).status_code == 200


async def test_changes_reach_only_the_sidecars_that_fetched_the_service(
        mini: MiniMesh, make_backend: Callable[[str], Backend]) -> None:
    _echo, other, client = await _mesh(mini, make_backend)
    assert (await get(client, "http://echo/warm")).status_code == 200
    await mini.wait_synced()
    before = _pushed(mini, "pushed_resources", "vhosts")
    await mini.apply(_route("to-other", "echo", {
        "matches": [{"path": {"type": "PathPrefix", "value": "/other"}}],
        "backendRefs": [{"name": "other", "port": 80}]}))
    await mini.wait_synced()

    async def in_effect() -> bool:
        return (await get(client, "http://echo/other/x")).status_code == 200 and bool(
            other.seen) and other.seen[-1][1] == "/other/x"
    await wait_for(in_effect, "the new route in effect")
    # Three sidecars, all on demand: only the client holds echo's virtual host.
    assert _pushed(mini, "pushed_resources", "vhosts") - before == 1
    # other's cluster came by ODCDS when the new route first sent a request there.
    assert "outbound|80||other.default" in (await _held(client))[1]
    eds_before = _pushed(mini, "pushed_resources", "endpoints")
    workload = next(s.workload for s in mini.sidecars if s.workload.startswith("echo"))
    await mini.set_health(workload, "Unhealthy")

    async def pushed() -> bool:
        return _pushed(mini, "pushed_resources", "endpoints") > eds_before
    await wait_for(pushed, "echo's new endpoints pushed")
    await mini.wait_synced()
    await asyncio.sleep(0.5)  # a push to all three would have gone out together
    # echo's endpoint changed: to the client (it holds echo's cluster), not to the
    # sidecars of echo and other, which never called echo.
    assert _pushed(mini, "pushed_resources", "endpoints") - eds_before == 1


async def test_a_split_and_a_mirror_work_from_the_first_request(
        mini: MiniMesh, make_backend: Callable[[str], Backend]) -> None:
    echo, other, client = await _mesh(mini, make_backend)
    shadow = make_backend("shadow")
    await mini.serve("shadow", [shadow])
    await mini.apply(_route("split", "echo", {
        "backendRefs": [{"name": "echo", "port": 80, "weight": 1},
                        {"name": "other", "port": 80, "weight": 1}],
        "filters": [{"type": "RequestMirror", "requestMirror": {
            "backendRef": {"name": "shadow", "port": 80}}}]}))

    async def mirror_up_front() -> bool:  # a mirror's cluster: sent without a request
        return (await _held(client))[1] == {"outbound|80||shadow.default"}
    await wait_for(mirror_up_front, "the mirror's cluster, up front")
    for i in range(40):  # both backends are picked within 40 (each 1/2): 2^-39 to fail
        assert (await get(client, f"http://echo/s{i}")).status_code == 200
        if echo.seen and other.seen:
            break
    assert echo.seen
    assert other.seen
    assert (await _held(client))[1] == {"outbound|80||echo.default",
                                        "outbound|80||other.default",
                                        "outbound|80||shadow.default"}

    async def mirrored() -> bool:
        return any(s[1] == "/s0" for s in shadow.seen)
    await wait_for(mirrored, "the first request's copy at the mirror")


async def test_turning_it_off_sends_every_service_again(
        mini: MiniMesh, make_backend: Callable[[str], Backend]) -> None:
    _, _, client = await _mesh(mini, make_backend)
    await mini.apply(_mesh_doc(False))
    await mini.wait_synced()

    async def everything() -> bool:
        vhosts, clusters = await _held(client)
        return ("outbound/echo.default:80" in vhosts and "outbound/other.default:80" in vhosts
                and len(clusters) == 2)
    await wait_for(everything, "every Service's virtual host and cluster")
    assert (await get(client, "http://other/x")).status_code == 200
