"""A tap session turns its sidecars' tap filter on, and taps only once each has ACKed
that route change (or after the wait's bound); its end turns the filter off."""

from __future__ import annotations

import asyncio

import pytest

from gossamer.controlplane.reconcile import Reconciler
from gossamer.controlplane.tapping import TapSwitch
from gossamer.xds.events import Acked
from gossamer.xds.status import NodeInfo, ProxyRegistry
from gossamer.xds.types import ROUTE, Snapshot
from tests.unit.controlplane.test_reconcile_scope import _reconciler
from tests.unit.controlplane.test_reconcile_tap import _tap_on


class _Latest:
    """What the snapshot cache holds: the reconciler's last published config."""

    def __init__(self, rec: Reconciler) -> None:
        self._rec = rec

    def get(self, node_id: str) -> Snapshot | None:
        config = self._rec._published.get(node_id)
        return None if config is None else config.snapshot


def _tapped(latest: _Latest, node: str) -> bool:
    snapshot = latest.get(node)
    assert snapshot is not None
    return _tap_on(snapshot)


def _connected(node: str, snapshot: Snapshot | None) -> tuple[ProxyRegistry, int]:
    assert snapshot is not None
    registry = ProxyRegistry()
    stream = registry.connect(NodeInfo(node), "delta")
    registry.record_event(node, stream, Acked(ROUTE, snapshot.version(ROUTE)))
    return registry, stream


async def test_the_session_starts_once_the_sidecar_acked_its_tapped_route() -> None:
    rec, _store, _published = await _reconciler()
    node = sorted(rec.proxies)[0]
    latest = _Latest(rec)
    registry, stream = _connected(node, latest.get(node))
    entered = asyncio.Event()

    async def session() -> None:
        async with TapSwitch(rec, registry, latest).tapping([node]):
            entered.set()
            await asyncio.sleep(0)

    task = asyncio.create_task(session())
    await asyncio.sleep(0.2)
    assert not entered.is_set()  # published, not ACKed yet
    snapshot = latest.get(node)
    assert snapshot is not None
    assert _tap_on(snapshot)
    registry.record_event(node, stream, Acked(ROUTE, snapshot.version(ROUTE)))
    await asyncio.wait_for(task, 5)
    assert entered.is_set()
    assert not _tapped(latest, node)  # the session is over


async def test_a_sidecar_that_never_acks_delays_the_session_by_the_bound_only() -> None:
    rec, _store, _published = await _reconciler()
    node = sorted(rec.proxies)[0]
    latest = _Latest(rec)
    registry, _stream = _connected(node, latest.get(node))
    switch = TapSwitch(rec, registry, latest, ack_wait=0.1)
    async with asyncio.timeout(10):
        async with switch.tapping([node]):
            assert _tapped(latest, node)
    assert not _tapped(latest, node)


async def test_a_session_that_fails_still_turns_the_filter_off() -> None:
    rec, _store, _published = await _reconciler()
    node = sorted(rec.proxies)[0]
    latest = _Latest(rec)
    registry = ProxyRegistry()  # the sidecar is not connected here: nothing to wait for
    with pytest.raises(RuntimeError):
        async with TapSwitch(rec, registry, latest).tapping([node]):
            raise RuntimeError("the client went away")
    assert not _tapped(latest, node)
