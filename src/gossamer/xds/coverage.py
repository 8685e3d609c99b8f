"""What one delta subscription covers: which of a snapshot's resources its client gets.

A resource is covered when the client named it, or named an alias of it (VHDS's
on-demand lookups, `<route config>/<Host header>`, resolved to the virtual host
that answers for that host: its `target`), or when the wildcard (or, for VHDS, a
subscribed namespace) takes it in, unless the snapshot keeps it for explicit
requests only (`OnDemand`: Envoy's on-demand cluster and virtual host discovery,
where a sidecar asks for a Service's cluster and routes on its first request to it).

`Cover` is the subscription's side of that rule, replaced (never changed) when the
subscription, the snapshot's `OnDemand` or the resolved aliases change; `KnownView`
is what the client has between such changes, read from the shared snapshot instead
of a dict per stream (see its docstring).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from gossamer.xds.types import OnDemand, XdsResource, namespace_of


@dataclass(frozen=True, slots=True)
class Cover:
    wildcard: bool = False
    namespaced: bool = False
    names: frozenset[str] = frozenset()
    demand: OnDemand | None = None
    # Resource names that subscribed aliases resolved to.
    targets: frozenset[str] = frozenset()

    @property
    def plain_wildcard(self) -> bool:
        """The wildcard takes in every resource: no on-demand rule to apply."""
        return self.wildcard and self.demand is None

    def covers(self, name: str) -> bool:
        demand = self.demand
        if demand is None:  # every stream but an on-demand sidecar's: keep it cheap
            return (self.wildcard or name in self.names
                    or (self.namespaced and namespace_of(name) in self.names))
        if name in self.names or name in self.targets:
            return True
        if demand.holds(name):
            return False
        return self.wildcard or (self.namespaced and namespace_of(name) in self.names)


class KnownView(Mapping[str, str]):
    """name -> version of the resources of a snapshot's type map that a
    subscription covers: a stream's `known` between subscription changes.

    Why: without `Sidecar` scoping every sidecar has every Service's cluster,
    endpoints and virtual host, and a dict per type per stream of the same
    thousands of (name, version) pairs was ~80 KB a stream; the view holds
    references to the snapshot's map and the (shared) subscription.
    """

    __slots__ = ("_basis", "_cover")

    def __init__(self, basis: Mapping[str, XdsResource], cover: Cover) -> None:
        self._basis = basis
        self._cover = cover

    def __getitem__(self, name: str) -> str:
        res = self._basis.get(name)
        if res is None or not self._cover.covers(name):
            raise KeyError(name)
        return res.version

    def get(self, name: str, default: Any = None) -> Any:
        res = self._basis.get(name)
        if res is None or not self._cover.covers(name):
            return default
        return res.version

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[str]:
        cover = self._cover
        if cover.plain_wildcard:
            return iter(self._basis)
        if not cover.wildcard and not cover.namespaced:
            return (n for n in (cover.names | cover.targets) if n in self._basis)
        return (n for n in self._basis if cover.covers(n))

    def __len__(self) -> int:
        if self._cover.plain_wildcard:
            return len(self._basis)
        return sum(1 for _ in self)


def resolve_aliases(names: frozenset[str], demand: OnDemand | None,
                    available: Mapping[str, XdsResource]) -> dict[str, str]:
    """alias -> resource name, for the subscribed names that are not resources but
    aliases of one the snapshot has (O(subscribed names): a sidecar on demand names
    only the hosts it has called)."""
    if demand is None or not demand.aliases:
        return {}
    out = {}
    for name in names:
        if name not in available:
            target = demand.aliases.get(name)
            if target is not None and target in available:
                out[name] = target
    return out


def same_demand(a: OnDemand | None, b: OnDemand | None) -> bool:
    """Equal rules (translation shares one object per scope, so mostly `is`)."""
    if a is b:
        return True
    if a is None or b is None:
        return False
    return ((a.names is b.names or a.names == b.names) and a.kept == b.kept
            and (a.aliases is b.aliases or a.aliases == b.aliases))
