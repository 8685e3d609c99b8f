"""The tap filter leaves the request path while no tap session runs: the inbound
route disables it (per-route FilterConfig), and a session changes only that route,
so the listener (and its connections) stay as they are."""

from __future__ import annotations

from typing import Any

from envoy.config.route.v3.route_pb2 import RouteConfiguration

from gossamer.index import build_index
from gossamer.translate import translate_mesh, translate_proxy
from gossamer.translate.listeners import TAP_FILTER_NAME
from gossamer.translate.protos import to_dict
from gossamer.xds.types import CLUSTER, LISTENER, ROUTE
from tests.unit.translate.test_translate import _frontend, _mesh_docs


def _inbound_route(tapped: bool, **over: Any) -> dict[str, Any]:
    mesh = translate_mesh(build_index(_mesh_docs(), 1))
    snap = translate_proxy(mesh, _frontend(**over), tapped=tapped).snapshot
    return to_dict(RouteConfiguration.FromString(snap.of(ROUTE)["inbound"].payload))


def _route_filters(config: dict[str, Any]) -> dict[str, Any]:
    (vhost,) = config["virtualHosts"]
    (route,) = vhost["routes"]
    assert route["route"]["cluster"] == "inbound|8080"
    return dict(route.get("typedPerFilterConfig", {}))


def test_untapped_the_inbound_route_disables_the_tap_filter() -> None:
    assert _route_filters(_inbound_route(False)) == {TAP_FILTER_NAME: {
        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True}}


def test_tapped_the_inbound_route_leaves_the_tap_filter_on() -> None:
    assert _route_filters(_inbound_route(True)) == {}


def test_a_tap_session_changes_the_inbound_route_and_nothing_else() -> None:
    mesh = translate_mesh(build_index(_mesh_docs(), 1))
    off = translate_proxy(mesh, _frontend()).snapshot
    on = translate_proxy(mesh, _frontend(), translate_proxy(mesh, _frontend()),
                         tapped=True).snapshot
    for type_url in (CLUSTER, LISTENER):
        assert on.version(type_url) == off.version(type_url)
    assert {n: r.payload for n, r in on.of(ROUTE).items() if n != "inbound"} == \
        {n: r.payload for n, r in off.of(ROUTE).items() if n != "inbound"}
    assert on.of(ROUTE)["inbound"].payload != off.of(ROUTE)["inbound"].payload


def test_a_tcp_inbound_side_has_no_inbound_route() -> None:
    mesh = translate_mesh(build_index(_mesh_docs(), 1))
    snap = translate_proxy(mesh, _frontend(app_protocol="tcp"), tapped=True).snapshot
    assert "inbound" not in snap.of(ROUTE)
