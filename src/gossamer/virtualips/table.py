"""The stored allocation of virtual IPs, and the pure step that updates it.

Theory of operation: one document (kind `_VirtualIPs`, internal like the CA's:
never applied, listed or shown by the API) holds every allocated address, the
range they come from and a cursor. `allocate` gives each Service without an
explicit `spec.virtualIP` and without an address the next free one after the
cursor, in (namespace, name) order, and moves the cursor past it. The cursor
only moves forward (wrapping at the end of the range), so an address freed by a
deleted Service is handed out again only after the whole range has been gone
through once: a client whose DNS cache still holds the old name's address does
not reach a new Service by it. A Service that finds no free address is listed in
`exhausted` (its status says so) and gets one as soon as one is free.

`allocate` is a pure function of the table and the Services, so control-plane
replicas sharing a store compute the same table; the allocator writes it with
the store's optimistic concurrency, and the loser of a race reads the winner's
table and recomputes (controlplane/vips.py).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, ValidationError

from gossamer.model.meta import MESH_API_VERSION, Resource, Strict
from gossamer.model.policy import MESH_ROOT_NAMESPACE

log = logging.getLogger(__name__)
TABLE_KIND = "_VirtualIPs"
TABLE_NAMESPACE = MESH_ROOT_NAMESPACE
TABLE_NAME = "virtual-ips"
DEFAULT_RANGE = "240.240.0.0/16"
SvcKey = tuple[str, str]


class VirtualIPTableSpec(Strict):
    range: str
    next: int = Field(ge=0)
    # "namespace/name" -> address.
    allocated: dict[str, str] = Field(default_factory=dict)
    exhausted: list[str] = Field(default_factory=list)


class VirtualIPTable(Resource):
    """The stored allocation, as the reconciler reads it into the mesh index."""

    KIND = TABLE_KIND
    kind: Literal["_VirtualIPs"] = "_VirtualIPs"
    spec: VirtualIPTableSpec


def parse_range(text: str) -> ipaddress.IPv4Network:
    """A CIDR with room for at least one address, or ValueError saying why not."""
    try:
        net = ipaddress.IPv4Network(text, strict=True)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an IPv4 network in CIDR form (such as "
                         f"{DEFAULT_RANGE}): {exc}") from exc
    if net.is_loopback or net.is_link_local or net.is_multicast:
        raise ValueError(f"{text!r}: loopback, link-local and multicast addresses are "
                         "never redirected to the sidecar")
    return net


def _usable(net: ipaddress.IPv4Network) -> tuple[int, int]:
    """(first address as an integer, how many): without the network and broadcast
    addresses when the range has them."""
    if net.prefixlen >= 31:
        return int(net.network_address), net.num_addresses
    return int(net.network_address) + 1, net.num_addresses - 2


def _key(key: SvcKey) -> str:
    return f"{key[0]}/{key[1]}"


@dataclass(frozen=True)
class Allocation:
    """A table's content, without the document around it."""

    range: str
    next: int = 0
    allocated: Mapping[str, str] = field(default_factory=dict)
    exhausted: tuple[str, ...] = ()

    @classmethod
    def of(cls, table: VirtualIPTable | None) -> Allocation | None:
        if table is None:
            return None
        s = table.spec
        return cls(s.range, s.next, dict(s.allocated), tuple(s.exhausted))

    def document(self) -> dict[str, Any]:
        return VirtualIPTable.model_validate({
            "apiVersion": MESH_API_VERSION, "kind": TABLE_KIND,
            "metadata": {"name": TABLE_NAME, "namespace": TABLE_NAMESPACE},
            "spec": {"range": self.range, "next": self.next,
                     "allocated": dict(sorted(self.allocated.items())),
                     "exhausted": list(self.exhausted)}}).to_document()


def allocate(current: Allocation | None, explicit: Mapping[SvcKey, str | None],
             net: ipaddress.IPv4Network) -> Allocation:
    """The table after giving every Service of `explicit` (Service key -> its
    `spec.virtualIP`, None for none) an address. Addresses of Services that are gone,
    or now set their own, are dropped; an allocated address another Service sets
    explicitly is given up (the explicit one wins) and that Service gets a new one.
    A table of another range keeps its addresses (stable across a --vip-range
    change) and new ones come from `net`."""
    first, size = _usable(net)
    cursor = current.next % size if current is not None and current.range == str(net) else 0
    pinned = {ip for ip in explicit.values() if ip is not None}
    allocated: dict[str, str] = {}
    taken = set(pinned)
    old = current.allocated if current is not None else {}
    for key in sorted(explicit):
        ip = old.get(_key(key))
        if ip is not None and explicit[key] is None and ip not in taken:
            allocated[_key(key)] = ip
            taken.add(ip)
    exhausted: list[str] = []
    free = size - sum(1 for ip in taken if first <= int(ipaddress.IPv4Address(ip)) < first + size)
    for key in sorted(explicit):
        if explicit[key] is not None or _key(key) in allocated:
            continue
        found = None
        if free > 0:  # else certainly full: no scan of the whole range per Service
            for step in range(size):
                offset = (cursor + step) % size
                ip = str(ipaddress.IPv4Address(first + offset))
                if ip not in taken:
                    found, cursor = ip, (offset + 1) % size
                    break
        if found is None:
            exhausted.append(_key(key))
            continue
        allocated[_key(key)] = found
        taken.add(found)
        free -= 1
    return Allocation(str(net), cursor, allocated, tuple(exhausted))


def load_table(body: Mapping[str, Any]) -> VirtualIPTable | None:
    """The stored table, or None (logged) when it does not parse: translation then
    sees no allocated addresses until the allocator writes a good table again."""
    try:
        return VirtualIPTable.model_validate(dict(body))
    except ValidationError as exc:
        log.error("ignoring the stored virtual IP table: %s", exc)
        return None
