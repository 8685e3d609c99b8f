"""The control plane's GC policy: frozen after each build, one full collection per period."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from gossamer.controlplane.gcpause import GcPauses


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def _cycle() -> weakref.ref[Node]:
    """A reference cycle, alive while `keep` holds it; returns a weak reference."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    _cycle.keep = a  # type: ignore[attr-defined]
    return weakref.ref(a)


@pytest.fixture
def policy() -> Iterator[tuple[GcPauses, list[float], CollectorRegistry]]:
    now = [0.0]
    registry = CollectorRegistry()
    gcp = GcPauses(registry, full_every=600.0, clock=lambda: now[0])
    gcp.install()
    try:
        yield gcp, now, registry
    finally:
        gcp.uninstall()
        gc.collect()


def test_frozen_cycles_wait_for_the_periodic_full_collection(
        policy: tuple[GcPauses, list[float], CollectorRegistry]) -> None:
    gcp, now, _ = policy
    ref = _cycle()
    gcp.settled()  # a build published: the cycle is frozen with everything else
    assert gc.get_freeze_count() > 0
    del _cycle.keep  # type: ignore[attr-defined]
    gc.collect()
    assert ref() is not None  # frozen: not walked, so not reclaimed
    now[0] = 599.0
    gcp.settled()
    assert ref() is not None
    assert gcp.full_collections == 0
    now[0] = 600.0
    gcp.settled()  # the period is over: unfrozen, collected, frozen again
    assert ref() is None
    assert gcp.full_collections == 1
    assert gc.get_freeze_count() > 0


def test_every_collection_pause_is_on_the_metrics(
        policy: tuple[GcPauses, list[float], CollectorRegistry]) -> None:
    _, _, registry = policy
    gc.collect()
    count = registry.get_sample_value("gossamer_gc_pause_seconds_count", {"generation": "2"})
    assert count is not None
    assert count >= 1
    total = registry.get_sample_value("gossamer_gc_pause_seconds_sum", {"generation": "2"})
    assert total is not None
    assert total > 0


def test_a_full_collection_after_the_freeze_walks_only_what_is_new(
        policy: tuple[GcPauses, list[float], CollectorRegistry]) -> None:
    gcp, _, _ = policy
    gcp.settled()
    frozen = gc.get_freeze_count()
    fresh = [Node() for _ in range(100)]
    assert all(gc.is_tracked(n) for n in fresh)
    tracked = len(gc.get_objects())
    assert tracked < frozen  # the pytest process's objects are out of the collector's walk
