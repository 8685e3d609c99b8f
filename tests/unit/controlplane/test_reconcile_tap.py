"""Tap sessions are an input of the reconciler: a session's start and end republish
only its sidecars' inbound route, and sessions of one sidecar are counted."""

from __future__ import annotations

from envoy.config.route.v3.route_pb2 import RouteConfiguration

from gossamer.translate.listeners import TAP_FILTER_NAME
from gossamer.xds.types import CLUSTER, LISTENER, ROUTE, Snapshot
from tests.unit.controlplane.test_reconcile_scope import _reconciler


def _tap_on(snapshot: Snapshot) -> bool:
    config = RouteConfiguration.FromString(snapshot.of(ROUTE)["inbound"].payload)
    return TAP_FILTER_NAME not in config.virtual_hosts[0].routes[0].typed_per_filter_config


async def test_a_tap_session_turns_the_filter_on_for_its_sidecars_only() -> None:
    rec, _store, published = await _reconciler()
    node = sorted(rec.proxies)[0]
    before = rec._published[node].snapshot
    assert not _tap_on(before)
    rec.tapping([node], True)
    assert set(published) == {node}
    after = published[node]
    assert _tap_on(after)
    assert after.version(LISTENER) == before.version(LISTENER)  # no listener drain
    assert after.version(CLUSTER) == before.version(CLUSTER)
    assert after.version(ROUTE) != before.version(ROUTE)
    published.clear()
    rec.tapping([node], False)
    assert set(published) == {node}
    assert not _tap_on(published[node])
    assert published[node].version(ROUTE) == before.version(ROUTE)


async def test_the_filter_stays_on_until_the_last_session_of_a_sidecar_ends() -> None:
    rec, _store, _published = await _reconciler()
    node = sorted(rec.proxies)[0]
    rec.tapping([node], True)
    rec.tapping([node], True)
    rec.tapping([node], False)
    assert _tap_on(rec._published[node].snapshot)
    rec.tapping([node], False)
    assert not _tap_on(rec._published[node].snapshot)


async def test_a_rebuild_keeps_a_tapped_sidecar_tapped() -> None:
    rec, _store, _published = await _reconciler()
    node = sorted(rec.proxies)[0]
    rec.tapping([node], True)
    rec._rebuild()
    assert _tap_on(rec._published[node].snapshot)


async def test_a_sidecar_that_connects_during_a_session_is_tapped() -> None:
    rec, _store, published = await _reconciler()
    node = sorted(rec.proxies)[0]
    proxy = rec.proxies[node]
    rec.proxy_disconnected(node)
    rec.tapping([node], True)
    assert node not in published  # not connected: nothing to publish
    rec.proxies[node] = proxy
    rec._push(node, proxy)
    assert _tap_on(published[node])
