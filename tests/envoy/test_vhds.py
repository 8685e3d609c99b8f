"""The `outbound` route config in VHDS form (translate/vhds.py) through real Envoys:
routing by Host as with RDS, a route change sends each proxy the one VirtualHost
it changed, a rejected virtual host leaves the last good config in place."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from envoy.config.route.v3 import route_components_pb2
from envoy.type.matcher.v3 import regex_pb2

from gossamer.translate.names import NO_SERVICE_ROUTE
from gossamer.xds.types import ROUTE, VHOST, Snapshot, XdsResource
from tests.envoy.harness import Backend, MiniMesh, Sidecar, get, wait_for

pytestmark = pytest.mark.slow

GATEWAY = "gateway.networking.k8s.io"


def _route(name: str, parent: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GATEWAY}/v1", "kind": "HTTPRoute", "metadata": {"name": name},
            "spec": {"parentRefs": [{"name": parent}], "rules": list(rules)}}


def _pushed(mini: MiniMesh, what: str, type_: str) -> float:
    value = mini.plane.metrics.get_sample_value(f"gossamer_xds_{what}_total", {"type": type_})
    return value or 0.0


async def _two_services(mini: MiniMesh, make_backend: Callable[[str], Backend],
                        ) -> tuple[Backend, Backend, Sidecar]:
    echo, other = make_backend("echo"), make_backend("other")
    await mini.serve("echo", [echo])
    await mini.serve("other", [other])
    client = await mini.client()
    await mini.wait_synced()
    return echo, other, client


async def test_routes_by_host_through_vhds(
        mini: MiniMesh, make_backend: Callable[[str], Backend]) -> None:
    echo, other, client = await _two_services(mini, make_backend)
    assert client.node.vhds
    snapshot = mini.plane.cache.get(client.node.node_id)
    assert snapshot is not None
    assert sorted(snapshot.of(VHOST)) == [
        "outbound/echo.default:80", f"outbound/{NO_SERVICE_ROUTE}", "outbound/other.default:80"]
    assert (await get(client, "http://echo/a")).status_code == 200
    assert (await get(client, "http://other.default:80/b")).status_code == 200
    assert [s[1] for s in echo.seen] == ["/a"]
    assert [s[1] for s in other.seen] == ["/b"]
    missing = await get(client, "http://nowhere/")
    assert missing.status_code == 404
    assert "no mesh service matches" in missing.text
    dump = await client.envoy.aconfig_dump(include_eds=False)
    [routes] = [c for c in dump["configs"] if c["@type"].endswith(".v3.RoutesConfigDump")]
    outbound = next(r["route_config"] for r in routes["dynamic_route_configs"]
                    if r["route_config"]["name"] == "outbound")
    assert "vhds" in outbound
    assert {v["name"] for v in outbound["virtual_hosts"]} == set(snapshot.of(VHOST))


async def test_a_route_change_sends_one_virtual_host_per_proxy(
        mini: MiniMesh, make_backend: Callable[[str], Backend]) -> None:
    echo, other, client = await _two_services(mini, make_backend)
    before = {(w, t): _pushed(mini, w, t) for w in ("pushed_resources", "pushes")
              for t in ("vhosts", "routes", "listeners", "clusters")}
    bytes_before = _pushed(mini, "pushed_bytes", "vhosts")
    await mini.apply(_route("to-other", "echo", {
        "matches": [{"path": {"type": "PathPrefix", "value": "/other"}}],
        "backendRefs": [{"name": "other", "port": 80}]},
        {"backendRefs": [{"name": "echo", "port": 80}]}))
    await mini.wait_synced()

    async def in_effect() -> bool:
        return (await get(client, "http://echo/other/x")).status_code == 200 and bool(
            other.seen) and other.seen[-1][1] == "/other/x"
    await wait_for(in_effect, "the new route in effect")
    after = {k: _pushed(mini, *k) for k in before}
    # Three proxies (no Sidecar scoping: each has echo's virtual host), one resource each.
    assert after["pushed_resources", "vhosts"] - before["pushed_resources", "vhosts"] == 3
    assert after["pushes", "vhosts"] - before["pushes", "vhosts"] == 3
    for type_ in ("routes", "listeners", "clusters"):
        assert after["pushes", type_] == before["pushes", type_], type_
    assert _pushed(mini, "pushed_bytes", "vhosts") - bytes_before < 3 * 2048
    echo.seen.clear()
    assert (await get(client, "http://echo/plain")).status_code == 200
    assert [s[1] for s in echo.seen] == ["/plain"]


def _bad_vhost() -> XdsResource:
    name = "outbound/echo.default:80"
    vhost = route_components_pb2.VirtualHost(name=name, domains=["echo"], routes=[
        route_components_pb2.Route(
            match=route_components_pb2.RouteMatch(
                safe_regex=regex_pb2.RegexMatcher(regex="(unclosed")),
            route=route_components_pb2.RouteAction(cluster="x"))])
    return XdsResource.from_message(VHOST, name, vhost)


async def test_a_rejected_virtual_host_keeps_the_last_good_config(
        mini: MiniMesh, make_backend: Callable[[str], Backend]) -> None:
    echo, _, client = await _two_services(mini, make_backend)
    node = client.node.node_id
    good = mini.plane.cache.get(node)
    assert good is not None
    # A translation bug, simulated: a virtual host Envoy must reject.
    bad = Snapshot.build({**good.resources, VHOST: {**good.of(VHOST),
                                                     "outbound/echo.default:80": _bad_vhost()}})
    assert bad.of(ROUTE) == good.of(ROUTE)
    mini.plane.cache.set(node, bad)

    async def nacked() -> bool:
        proxies = await mini.api("GET", "/api/v1/proxies")
        entry = next(p for p in proxies if p["node_id"] == node)
        return bool(entry["types"]["vhosts"]["nack_count"])
    await wait_for(nacked, "the NACK of the virtual host")
    assert (await get(client, "http://echo/still")).status_code == 200
    assert echo.seen[-1][1] == "/still"
    mini.plane.cache.set(node, good)  # the fix: the good one is sent again and ACKed
    await mini.wait_synced()
    assert (await get(client, "http://echo/again")).status_code == 200
