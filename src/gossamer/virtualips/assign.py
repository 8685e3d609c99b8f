"""Each Service's effective virtual IP, as the mesh index shows and translation uses it.

An explicit `spec.virtualIP` wins; otherwise the address the stored table
allocated. Two Services can never share an address: of two explicit ones the
first by (namespace, name) keeps it and the other reports a `VirtualIP`
condition (apply refuses the second, so this is only a race); an allocated
address that a Service now sets explicitly is the explicit one's, and the
allocator gives the other Service a new address. A Service the allocator could
not serve (its range is full) says so in its status.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from gossamer.model import Condition, ResourceKey, Service
from gossamer.virtualips.table import Allocation, VirtualIPTable

SvcKey = tuple[str, str]
CONDITION = "VirtualIP"


def virtual_ips(services: Mapping[SvcKey, Service], table: VirtualIPTable | None
                ) -> tuple[Mapping[SvcKey, str], dict[SvcKey, Condition]]:
    """(Service key -> address, Service key -> why it has none)."""
    out: dict[SvcKey, str] = {}
    holder: dict[str, SvcKey] = {}
    problems: dict[SvcKey, Condition] = {}
    for key in sorted(services):
        ip = services[key].spec.virtual_ip
        if ip is None:
            continue
        if ip in holder:
            problems[key] = Condition(
                type=CONDITION, status="False", reason="Conflicted",
                message=f"virtual IP {ip} is already Service {holder[ip][0]}/{holder[ip][1]}'s "
                        "(the first by namespace and name keeps it); this Service has none")
            continue
        holder[ip] = key
        out[key] = ip
    alloc = Allocation.of(table)
    if alloc is not None:
        for name, ip in alloc.allocated.items():
            ns, _, svc = name.partition("/")
            key = (ns, svc)
            if key in services and key not in out and key not in problems \
                    and services[key].spec.virtual_ip is None and ip not in holder:
                out[key] = ip
                holder[ip] = key
        for name in alloc.exhausted:
            ns, _, svc = name.partition("/")
            if (ns, svc) in services and (ns, svc) not in out:
                problems[(ns, svc)] = Condition(
                    type=CONDITION, status="False", reason="RangeExhausted",
                    message=f"every address of the virtual IP range {alloc.range} is taken: "
                            "delete Services, or widen the control plane's --vip-range; "
                            "without one, capturing sidecars cannot resolve or route it")
    return MappingProxyType(out), problems


def index_virtual_ips(services: Mapping[SvcKey, Service], tables: list[VirtualIPTable],
                      previous: Mapping[SvcKey, str] | None
                      ) -> tuple[Mapping[SvcKey, str], dict[ResourceKey, tuple[Condition, ...]]]:
    """The mesh index's part (index.py): the addresses (the previous index's mapping
    when equal, so that an unchanged one is one identity check later on) and the
    Services' conditions."""
    vips, problems = virtual_ips(services, tables[0] if tables else None)
    if previous is not None and previous == vips:
        vips = previous
    return vips, {ResourceKey(Service.KIND, *key): (cond,) for key, cond in problems.items()}


def virtual_ip_taken(index_vips: Mapping[SvcKey, str], res: object) -> str | None:
    """Why apply refuses `res`: a Service whose explicit `spec.virtualIP` another
    Service holds (as the index has it now; a race is settled by `virtual_ips`)."""
    if not isinstance(res, Service) or res.spec.virtual_ip is None:
        return None
    own = (res.metadata.namespace, res.metadata.name)
    for key, ip in index_vips.items():
        if ip == res.spec.virtual_ip and key != own:
            return f"{ip} is already the virtual IP of Service {key[0]}/{key[1]}"
    return None
