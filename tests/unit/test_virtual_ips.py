"""Virtual IP allocation (virtualips/): order, wrap-around, no early reuse, explicit
addresses, a full range, and what the mesh index shows of it."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from gossamer.index import build_index
from gossamer.model import ResourceKey, parse_document
from gossamer.virtualips.assign import virtual_ip_taken
from gossamer.virtualips.table import (
    Allocation,
    VirtualIPTable,
    allocate,
    load_table,
    parse_range,
)

API = "mesh.gossamer.dev/v1alpha1"
NET = ipaddress.IPv4Network("240.240.0.0/29")  # usable: .1 to .6


def svc(name: str, ns: str = "default", vip: str | None = None) -> Any:
    spec: dict[str, Any] = {"ports": [{"port": 80}]}
    if vip is not None:
        spec["virtualIP"] = vip
    return parse_document({"apiVersion": API, "kind": "Service",
                           "metadata": {"name": name, "namespace": ns}, "spec": spec})


def step(current: Allocation | None, *names: str, **explicit: str) -> Allocation:
    services: dict[tuple[str, str], str | None] = {("default", n): None for n in names}
    services.update({("default", n): ip for n, ip in explicit.items()})
    return allocate(current, services, NET)


def test_addresses_are_handed_out_in_order_of_namespace_and_name() -> None:
    table = step(None, "b", "a", "c")
    assert dict(table.allocated) == {"default/a": "240.240.0.1", "default/b": "240.240.0.2",
                                     "default/c": "240.240.0.3"}
    assert table.next == 3
    assert step(table, "b", "a", "c") == table  # nothing changed: nothing to write


def test_a_freed_address_is_not_reused_until_the_range_wraps() -> None:
    table = step(None, "a", "b", "c")
    table = step(table, "a", "c")  # b deleted: .2 is free
    table = step(table, "a", "c", "d")
    assert table.allocated["default/d"] == "240.240.0.4"  # not .2
    table = step(table, "a", "c", "d", "e", "f")  # .5, .6: the end of the range
    assert (table.allocated["default/e"], table.allocated["default/f"]) == (
        "240.240.0.5", "240.240.0.6")
    table = step(table, "a", "c", "d", "e", "f", "g")  # wraps: the first free is .2
    assert table.allocated["default/g"] == "240.240.0.2"


def test_a_service_keeps_its_address_whatever_else_comes_and_goes() -> None:
    table = step(None, "m")
    first = table.allocated["default/m"]
    for names in (["a", "m"], ["m", "z"], ["b", "c", "m"], ["m"]):
        table = step(table, *names)
        assert table.allocated["default/m"] == first


def test_an_explicit_address_wins_and_is_never_allocated_to_another() -> None:
    table = step(None, "a", "c", b="240.240.0.2")
    assert "default/b" not in table.allocated  # its own address, not the table's
    assert dict(table.allocated) == {"default/a": "240.240.0.1", "default/c": "240.240.0.3"}
    # a Service that sets, as its own, the address another one was given: the explicit
    # one keeps it, the other gets a new one.
    table = step(table, "a", "b", c="240.240.0.1")
    assert table.allocated["default/a"] not in ("240.240.0.1", "240.240.0.3")
    assert set(table.allocated) == {"default/a", "default/b"}


def test_a_full_range_lists_the_services_without_an_address() -> None:
    names = [f"s{i}" for i in range(8)]
    table = step(None, *names)
    assert len(table.allocated) == 6
    assert table.exhausted == ("default/s6", "default/s7")
    table = step(table, *names[1:])  # s0 deleted: its address is the only free one
    assert table.allocated["default/s6"] == "240.240.0.1"
    assert table.exhausted == ("default/s7",)


def test_a_new_range_keeps_existing_addresses_and_allocates_from_itself() -> None:
    table = step(None, "a")
    moved = allocate(table, {("default", "a"): None, ("default", "b"): None},
                     ipaddress.IPv4Network("198.18.100.0/24"))
    assert moved.allocated["default/a"] == "240.240.0.1"
    assert moved.allocated["default/b"] == "198.18.100.1"
    assert moved.range == "198.18.100.0/24"


def test_the_table_round_trips_through_its_stored_document() -> None:
    table = step(None, "a", "b", b2="240.240.0.6")
    loaded = load_table(table.document())
    assert Allocation.of(loaded) == table
    assert load_table({"kind": "_VirtualIPs", "spec": {"next": -1}}) is None


@pytest.mark.parametrize(("text", "reason"), [
    ("240.240.0.0/33", "not an IPv4 network"), ("240.240.0.1/16", "not an IPv4 network"),
    ("fd00::/64", "not an IPv4 network"), ("127.0.0.0/8", "loopback")])
def test_a_bad_range_is_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_range(text)


def _table(alloc: Allocation) -> VirtualIPTable:
    table = load_table(alloc.document())
    assert table is not None
    return table


def test_the_index_shows_each_services_address_and_why_one_has_none() -> None:
    services = [svc("a"), svc("b"), svc("pinned", vip="10.9.9.9"), svc("late")]
    alloc = allocate(None, {("default", n): None for n in ("a", "b")},
                     ipaddress.IPv4Network("240.240.0.0/30"))  # two addresses only
    alloc = Allocation(alloc.range, alloc.next, alloc.allocated, ("default/late",))
    index = build_index([*services, _table(alloc)])
    assert dict(index.virtual_ips) == {("default", "a"): "240.240.0.1",
                                       ("default", "b"): "240.240.0.2",
                                       ("default", "pinned"): "10.9.9.9"}
    assert index.status(ResourceKey("Service", "default", "pinned")) == {
        "virtualIP": "10.9.9.9"}
    late = index.status(ResourceKey("Service", "default", "late"))
    assert "virtualIP" not in late
    [cond] = late["conditions"]  # type: ignore[misc]
    assert (cond["type"], cond["status"], cond["reason"]) == (
        "VirtualIP", "False", "RangeExhausted")
    assert "240.240.0.0/30" in cond["message"]
    assert "--vip-range" in cond["message"]


def test_two_services_setting_one_address_the_first_keeps_it() -> None:
    index = build_index([svc("a", vip="10.1.1.1"), svc("b", vip="10.1.1.1")])
    assert dict(index.virtual_ips) == {("default", "a"): "10.1.1.1"}
    [cond] = index.conditions[ResourceKey("Service", "default", "b")]
    assert (cond.reason, cond.status) == ("Conflicted", "False")
    assert "default/a" in cond.message
    # apply refuses the second one while the index knows the first
    assert virtual_ip_taken(index.virtual_ips, svc("c", vip="10.1.1.1")) == (
        "10.1.1.1 is already the virtual IP of Service default/a")
    assert virtual_ip_taken(index.virtual_ips, svc("a", vip="10.1.1.1")) is None


def test_an_unchanged_set_of_addresses_is_the_same_object_in_the_next_index() -> None:
    resources = [svc("a", vip="10.1.1.1")]
    first = build_index(resources)
    again = build_index([*resources, svc("x", ns="other")], previous=first)
    assert again.virtual_ips is first.virtual_ips
