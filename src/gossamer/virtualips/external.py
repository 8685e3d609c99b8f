"""Virtual IPs of ExternalServices: from the same table and range as Services'.

An ExternalService takes a slot in the allocation table under its own key
(`external_key`), which no Service name can spell (Service names have no ':'), so
the allocator (`table.allocate`) treats it like any Service: an explicit
`spec.virtualIP` wins, otherwise the next free address. Capturing sidecars answer
the external host names with it (mesh DNS) and route connections to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from gossamer.model.externalservice import ExternalService
from gossamer.virtualips.table import Allocation, VirtualIPTable

SvcKey = tuple[str, str]
PREFIX = "ExternalService:"


def external_key(namespace: str, name: str) -> SvcKey:
    """The allocation table's key for an ExternalService."""
    return namespace, PREFIX + name


def external_virtual_ips(externals: Mapping[SvcKey, ExternalService],
                         table: VirtualIPTable | None, taken: Iterable[str],
                         previous: Mapping[SvcKey, str] | None) -> Mapping[SvcKey, str]:
    """ExternalService key -> address. `taken`: the Services' addresses (a clash is
    only a race between applies: the Service keeps the address)."""
    holder = set(taken)
    out: dict[SvcKey, str] = {}
    for key in sorted(externals):
        ip = externals[key].spec.virtual_ip
        if ip is not None and ip not in holder:
            out[key] = ip
            holder.add(ip)
    alloc = Allocation.of(table)
    if alloc is not None:
        for key in sorted(externals):
            ip = alloc.allocated.get("/".join(external_key(*key)))
            if key not in out and externals[key].spec.virtual_ip is None and ip is not None \
                    and ip not in holder:
                out[key] = ip
                holder.add(ip)
    if previous is not None and previous == out:
        return previous
    return MappingProxyType(out)
