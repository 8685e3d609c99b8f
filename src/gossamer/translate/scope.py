"""Egress scope: the Services a sidecar can call, and so the only ones it is sent.

A scope is a frozenset of Service keys, or None for the whole mesh (the shared
path, no per-proxy subset). Which Sidecar applies is described in
model/sidecar.py. A sidecar without the catch-all outbound listener can reach
nothing but the upstreams its agent declared, so without a Sidecar its scope is
exactly those: it needs no configuration to be cheap. One with it (or capturing)
and no Sidecar gets what the AuthorizationPolicies could let its identity reach
(translate/reach.py): the whole mesh until a policy restricts something.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from gossamer.contract.node import NodeMetadata
from gossamer.index import MeshIndex, SvcKey
from gossamer.model import Sidecar
from gossamer.model.policy import MESH_ROOT_NAMESPACE
from gossamer.translate.reach import Reachability

Scope = frozenset[SvcKey] | None


class SidecarIndex:
    """The Sidecar that applies to a proxy, found through its labels: with a thousand
    selector Sidecars in a namespace a proxy checks only those sharing a label."""

    def __init__(self, index: MeshIndex) -> None:
        self._index = index
        self._by_label: dict[tuple[str, str, str], list[Sidecar]] = defaultdict(list)
        self._defaults: dict[str, Sidecar] = {}
        self._order = {sc.key: i for i, sc in enumerate(index.sidecars)}
        self._services: dict[tuple[str, str], frozenset[SvcKey] | None] = {}
        for sc in index.sidecars:
            selector = sc.spec.workload_selector
            if selector is None:
                self._defaults.setdefault(sc.metadata.namespace, sc)
                continue
            k, v = next(iter(selector.match_labels.items()))
            self._by_label[(sc.metadata.namespace, k, v)].append(sc)

    def sidecar_for(self, namespace: str, labels: Mapping[str, str]) -> Sidecar | None:
        matching = [sc for k, v in labels.items()
                    for sc in self._by_label.get((namespace, k, v), ())
                    if sc.spec.workload_selector is not None
                    and sc.spec.workload_selector.matches(dict(labels))]
        if matching:
            return min(matching, key=lambda sc: self._order[sc.key])
        return self._defaults.get(namespace) or self._defaults.get(MESH_ROOT_NAMESPACE)

    def services(self, sidecar: Sidecar) -> frozenset[SvcKey] | None:
        """The Services a Sidecar's hosts name, once per Sidecar; None for `*/*`."""
        slot = (sidecar.metadata.namespace, sidecar.metadata.name)
        if slot not in self._services:
            self._services[slot] = _resolve(sidecar.host_patterns(), self._index.services)
        return self._services[slot]


def _resolve(patterns: Iterable[tuple[str, str]],
             services: Mapping[SvcKey, object]) -> frozenset[SvcKey] | None:
    exact: set[SvcKey] = set()
    namespaces: set[str] = set()
    names: set[str] = set()
    for ns, name in patterns:
        if ns == "*" and name == "*":
            return None
        if name == "*":
            namespaces.add(ns)
        elif ns == "*":
            names.add(name)
        else:
            exact.add((ns, name))
    found = {key for key in exact if key in services}
    if namespaces or names:
        found.update(key for key in services if key[0] in namespaces or key[1] in names)
    return frozenset(found)


def egress_scope(sidecars: SidecarIndex, proxy: NodeMetadata,
                 labels: Mapping[str, str], reach: Reachability | None = None) -> Scope:
    """`labels`: the workload's, as MeshConfig.caller_labels merges them. `reach`: the
    scope inferred from AuthorizationPolicies where no Sidecar applies (None: all)."""
    upstreams = frozenset((up.namespace, up.service) for up in proxy.upstreams)
    sidecar = sidecars.sidecar_for(proxy.namespace, labels)
    if sidecar is None:  # a capturing proxy can reach any Service, as an HTTP proxy can
        if not (proxy.outbound_port or proxy.capture):
            return upstreams
        inferred = None if reach is None else reach.scope(proxy.namespace, proxy.account)
        return None if inferred is None else inferred | upstreams
    services = sidecars.services(sidecar)
    return None if services is None else services | upstreams
