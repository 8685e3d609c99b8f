"""The delta ADS machine (`DeltaAggregatedResources`) of one stream.

Everything that changes a delta stream's state lives in this file (and the shared
base in `stream.py`, whose header states the rules both machines follow); the
theory of operation of one type's sub-stream is `DeltaTypeState`'s docstring.
"""

from __future__ import annotations

import functools
import sys
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2

from gossamer.xds import wire
from gossamer.xds.coverage import Cover, KnownView, resolve_aliases, same_demand
from gossamer.xds.events import Acked, Nacked, Outgoing, Subscribed
from gossamer.xds.stream import WILDCARD, StreamMachine, eds_service_name
from gossamer.xds.types import (
    CLUSTER,
    ENDPOINT,
    NAMED_TYPES,
    NAMESPACED_TYPES,
    OnDemand,
    Snapshot,
    XdsResource,
    namespace_of,
)


class _DiffCache:
    """(type, old set version, new set version) -> (changed or added resources, gone names).

    Set versions are content hashes, so a diff between two versions is the
    same for every stream that makes that step: sidecars of one service share
    their snapshots' contents, and a push then diffs each type once, not once
    per stream. Bounded LRU; it holds only the changed resources.
    """

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[str, str, str],
                                   tuple[tuple[XdsResource, ...], tuple[str, ...]]] = OrderedDict()

    def get(self, type_url: str, old_version: str, old: Mapping[str, XdsResource],
            new_version: str, new: Mapping[str, XdsResource],
            ) -> tuple[tuple[XdsResource, ...], tuple[str, ...]]:
        key = (type_url, old_version, new_version)
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            return entry
        get = old.get
        changed = tuple(r for n, r in new.items()
                        if (o := get(n)) is not r and (o is None or o.version != r.version))
        # Names in `old` but not `new` exist iff |old| > |new| - |added|.
        added = sum(1 for r in changed if r.name not in old)
        gone = tuple(n for n in old if n not in new) if len(old) + added > len(new) else ()
        entry = (changed, gone)
        self._entries[key] = entry
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return entry


_diffs = _DiffCache()

# Subscribed name sets, one object per distinct set: without `Sidecar` scoping
# every sidecar subscribes to every Service's endpoints, and a thousand streams
# each holding its own set of the same thousand names (and its own copies of
# the names, as protobuf decodes them: hence `sys.intern`) was ~140 KB a
# stream, with the status registry's copy (`Subscribed`). Bounded LRU.
_NAME_SETS: OrderedDict[frozenset[str], frozenset[str]] = OrderedDict()
_NAME_SETS_MAX = 1024


def _shared_names(names: frozenset[str]) -> frozenset[str]:
    if not names:
        return frozenset()
    shared = _NAME_SETS.get(names)
    if shared is not None:
        _NAME_SETS.move_to_end(names)
        return shared
    _NAME_SETS[names] = names
    if len(_NAME_SETS) > _NAME_SETS_MAX:
        _NAME_SETS.popitem(last=False)
    return names


@dataclass(eq=False, slots=True)
class DeltaTypeState:
    """One type's sub-stream in a delta (incremental) stream.

    Theory of operation:
    - Subscription: `wildcard` plus explicit `names`. A first request that
      subscribes to nothing is the legacy wildcard (CDS/LDS only); "*" in
      subscribe/unsubscribe turns the wildcard on/off. Subscription changes
      are honoured whatever the nonce says.
    - `known`: name -> version the client has. Seeded from
      `initial_resource_versions` of the first request (so a reconnect after
      a control-plane restart resends nothing unchanged) and updated when we
      send, optimistically: a NACKed resource stays "known" at the rejected
      version, so it is not resent until it changes again. After each
      evaluation `known` is exactly the basis snapshot's versions of what the
      subscription covers, so it is then kept as a `KnownView` of that
      (shared) snapshot rather than a dict of its own, and made a dict again
      only when the subscription changes.
    - A new snapshot version (or a subscription change, `dirty`) triggers a
      diff: resources whose version differs from `known` are sent, names the
      client has that no longer exist go to `removed_resources`, explicitly
      subscribed names that do not exist are reported removed once
      (`told_absent`) so the client need not wait for a timeout.
    - `force`: names to send even if `known` matches: re-subscribed names
      (the protocol requires it; the client may have forgotten them), names
      unsubscribed while the wildcard still covers them, and endpoints of a
      modified cluster.
    - `pending_nonce`: one response at a time per type, as in SotW.
    - `namespaced` (VHDS): a subscribed name also stands for every resource
      named `<name>/...`, as Envoy's namespace matching has it; Envoy subscribes
      to a route config's name to get all its virtual hosts.
    - On demand (`demand`, the basis snapshot's `OnDemand` for the type): the
      resources it holds are covered by explicit names only, not by the wildcard
      or a namespace; a subscribed name that is an alias of one (VHDS: a Host
      Envoy found no virtual host for) covers it too (`resolved`), and the
      resource goes out with that alias, which is what Envoy waits for. A change
      of the rules (by content: `same_demand`) is a subscription change.
    - `cover`: the rule all of the above makes (xds/coverage.py), rebuilt when
      one of its parts changes.
    """

    type_url: str
    namespaced: bool = False
    wildcard: bool = False
    # Shared, not owned (`_shared_names`): replaced, never changed in place.
    names: frozenset[str] = frozenset()
    known: dict[str, str] | KnownView = field(default_factory=dict)
    told_absent: set[str] = field(default_factory=set)
    force: set[str] = field(default_factory=set)
    dirty: bool = True
    basis_version: str | None = None
    basis_map: Mapping[str, XdsResource] | None = None
    pending_nonce: str | None = None
    pending_version: str | None = None
    acked_version: str | None = None
    # Set by a NACK, cleared by an ACK: until then "nothing to send" does not
    # mean the client runs the current version.
    rejected: bool = False
    demand: OnDemand | None = None
    resolved: dict[str, str] = field(default_factory=dict)
    cover: Cover = field(default_factory=Cover)

    def recover(self) -> None:
        self.cover = Cover(self.wildcard, self.namespaced, self.names, self.demand,
                           frozenset(self.resolved.values()))


class DeltaStream(StreamMachine):
    """Incremental ADS (`DeltaAggregatedResources`) for one stream."""

    kind = "delta"

    def __init__(self) -> None:
        super().__init__()
        self.types: dict[str, DeltaTypeState] = {}

    def on_request(self, req: discovery_pb2.DeltaDiscoveryRequest) -> list[Outgoing]:
        type_url = req.type_url
        if not type_url:
            return []
        st = self.types.get(type_url)
        first = st is None
        if st is None:
            st = self.types[type_url] = DeltaTypeState(type_url,
                                                        type_url in NAMESPACED_TYPES)
            st.known = dict(req.initial_resource_versions)
        elif st.pending_nonce is not None and req.response_nonce == st.pending_nonce:
            assert st.pending_version is not None
            version, st.pending_nonce, st.pending_version = st.pending_version, None, None
            error = self._error(req)
            if error is None:
                st.acked_version, st.rejected = version, False
                self._events.append(Acked(type_url, version))
            else:
                st.rejected = True
                self._events.append(Nacked(type_url, version, error[0], error[1]))
        self._update_subscription(st, first, req.resource_names_subscribe,
                                  req.resource_names_unsubscribe)
        return self._flush()

    def on_snapshot(self, snapshot: Snapshot) -> list[Outgoing]:
        self.snapshot = snapshot
        return self._flush()

    def _update_subscription(self, st: DeltaTypeState, first: bool,
                             subscribe: Iterable[str], unsubscribe: Iterable[str]) -> None:
        subscribe = list(subscribe)
        unsubscribe = list(unsubscribe)
        if not first and not subscribe and not unsubscribe:
            return  # a plain ACK/NACK: nothing to do, and no O(names) work
        before = (st.wildcard, st.names)
        if first and not subscribe and not unsubscribe and st.type_url not in NAMED_TYPES:
            st.wildcard = True  # legacy wildcard
        names = set(st.names)
        for name in subscribe:
            if name == WILDCARD:
                st.wildcard = True
                continue
            name = sys.intern(name)
            names.add(name)
            st.told_absent.discard(name)
            if not first:
                st.force.add(name)
        for name in unsubscribe:
            if name == WILDCARD:
                st.wildcard = False
                continue
            names.discard(name)
            st.told_absent.discard(name)
            st.force.discard(name)
        st.names = _shared_names(frozenset(names))
        del names
        for alias in [a for a in st.resolved if a not in st.names]:
            del st.resolved[alias]
        st.recover()
        if not st.cover.plain_wildcard:
            # The client drops what it no longer subscribes to; no response needed.
            known = st.known if isinstance(st.known, dict) else dict(st.known.items())
            for name in [n for n in known if not st.cover.covers(n)]:
                del known[name]
            st.known = known
        if st.wildcard:
            # Still covered by the wildcard? The client cannot tell: say it.
            st.force.update(n for n in unsubscribe if n != WILDCARD and st.cover.covers(n))
        after = (st.wildcard, st.names)
        if first or after != before:
            self._events.append(Subscribed(st.type_url, after[0], after[1]))
        st.dirty = True

    def _evaluate(self, st: DeltaTypeState) -> Outgoing | None:
        snap = self.snapshot
        if snap is None or st.pending_nonce is not None:
            return None
        current = snap.version(st.type_url)
        demand = snap.demand(st.type_url)
        if demand is not st.demand:
            if not same_demand(demand, st.demand):
                st.dirty = True
            st.demand = demand
            st.recover()
        if current == st.basis_version and not st.dirty and not st.force:
            return None
        available = snap.of(st.type_url)
        if demand is not None and demand.aliases and (st.dirty or current != st.basis_version):
            self._resolve(st, demand, available)
        if not st.dirty and st.basis_map is not None and st.basis_version is not None:
            sending, removed = self._incremental(st, available, current)
        else:
            sending, removed = self._full_diff(st, available)
        if st.type_url == CLUSTER and sending:
            self._queue_endpoint_resends(st, sending)
        for name in removed:
            if name in st.names:
                st.told_absent.add(name)
        removed, unresolved = _unresolved(st, removed)
        # A new client's wildcard or namespace subscription gets a first answer even
        # if it is empty: the client waits for one (on demand it may well be empty).
        # A client that resumes with what it has needs none.
        opening = st.basis_version is None and (st.wildcard or st.namespaced) and not st.known
        # What the client now has: every covered resource of `available` (sent
        # now, or known at this version before); nothing else.
        st.known = KnownView(available, st.cover)
        st.force.clear()
        st.dirty = False
        st.basis_version, st.basis_map = current, available
        if not sending and not removed and not unresolved and not opening:
            if st.acked_version != current and not st.rejected:
                st.acked_version = current
                self._events.append(Acked(st.type_url, current, implicit=True))
            return None
        nonce = self._next_nonce()
        st.pending_nonce, st.pending_version = nonce, current
        aliases = _aliases_of(st, sending) if st.resolved else None
        if opening and not sending and not unresolved and st.demand is not None:
            unresolved = st.demand.namespaces
        return Outgoing(st.type_url, current, nonce, len(sending), len(removed),
                        functools.partial(wire.delta_response, st.type_url, current,
                                          tuple(sending), tuple(removed), nonce, aliases,
                                          unresolved),
                        sum(len(r.payload) for r in sending))

    @staticmethod
    def _resolve(st: DeltaTypeState, demand: OnDemand,
                 available: Mapping[str, XdsResource]) -> None:
        """Resolve the subscribed aliases against this snapshot; an alias that now
        names another resource (or one at all) is sent as if newly subscribed."""
        resolved = resolve_aliases(st.names, demand, available)
        if resolved != st.resolved:
            st.force.update(t for a, t in resolved.items() if st.resolved.get(a) != t)
            st.resolved = resolved
            st.recover()
            st.dirty = True

    @staticmethod
    def _incremental(st: DeltaTypeState, available: Mapping[str, XdsResource],
                     current: str) -> tuple[list[XdsResource], list[str]]:
        """Only the subscription is unchanged: diff the snapshots, O(changes).

        `known` matched the basis snapshot after the last evaluation, so what
        to send is what changed between the two snapshot versions, filtered
        by subscription; the diff itself is shared by every stream making the
        same version step.
        """
        assert st.basis_map is not None
        assert st.basis_version is not None
        changed, gone = _diffs.get(st.type_url, st.basis_version, st.basis_map,
                                   current, available)
        known, names, cover = st.known, st.names, st.cover
        if cover.plain_wildcard:
            sending = [r for r in changed if known.get(r.name) != r.version]
        elif st.wildcard or st.namespaced or cover.targets:
            sending = [r for r in changed
                       if cover.covers(r.name) and known.get(r.name) != r.version]
        else:
            sending = [r for r in changed
                       if r.name in names and known.get(r.name) != r.version]
        if st.force:  # endpoints of re-warming clusters, even if unchanged
            queued = {r.name for r in sending}
            for name in st.force:
                res = available.get(name)
                if res is not None and name not in queued and cover.covers(name):
                    sending.append(res)
        return sending, [n for n in gone if n in known]

    @staticmethod
    def _full_diff(st: DeltaTypeState, available: Mapping[str, XdsResource],
                   ) -> tuple[list[XdsResource], list[str]]:
        """Everything the client may want against everything it has, O(resources)."""
        if st.namespaced and not st.wildcard:
            return _namespaced_diff(st, available)
        known, force, told_absent, cover = st.known, st.force, st.told_absent, st.cover
        sending: list[XdsResource] = []
        removed: list[str] = []
        if st.wildcard:
            plain = cover.plain_wildcard
            for name, res in available.items():
                if ((known.get(name) != res.version or (force and name in force))
                        and (plain or cover.covers(name))):
                    sending.append(res)
            # After the sends, `known` covers `available`; anything more is gone.
            # (On demand it covers a part of it: look.)
            if not plain or len(known) + sum(
                    1 for r in sending if r.name not in known) > len(available):
                removed.extend(n for n in known if n not in available)
            for name in st.names:  # explicit names the wildcard does not provide
                if (name not in available and name not in known and name not in st.resolved
                        and (name not in told_absent or name in force)):
                    removed.append(name)
            # Unsubscribed names the wildcard does not cover: say they are gone.
            removed.extend(n for n in force if n not in available and n not in st.names
                           and n not in known)
        else:
            for name in st.names:
                wanted = available.get(name)
                if wanted is None:
                    if name in known or name not in told_absent or name in force:
                        removed.append(name)  # gone, or never existed (tell once)
                elif known.get(name) != wanted.version or (force and name in force):
                    sending.append(wanted)
        return sending, removed

    def _queue_endpoint_resends(self, clusters: DeltaTypeState,
                                sending: list[XdsResource]) -> None:
        endpoints = self.types.get(ENDPOINT)
        if endpoints is None or self.snapshot is None:
            return
        modified: set[str] = set()
        for cluster in sending:
            old = clusters.known.get(cluster.name)
            if old is not None and old != cluster.version:
                eds = eds_service_name(cluster)
                if eds is not None:
                    modified.add(eds)
        if not endpoints.wildcard:
            modified &= endpoints.names
        if modified:
            endpoints.force |= modified


def _unresolved(st: DeltaTypeState, removed: list[str]) -> tuple[list[str], tuple[str, ...]]:
    """(removed, unresolved): of a namespaced type (VHDS), a subscribed name the client
    never held and no resource has is an on-demand lookup (`<route config>/<Host>`)
    that found nothing. Envoy waits for an empty resource by that name, not a
    removal, before it lets the request go on (without one it waits forever, e.g.
    for a lookup sent while on-demand rules were being turned off)."""
    if not st.namespaced or not removed:
        return removed, ()
    known = st.known
    unresolved = tuple(n for n in removed if n in st.names and n not in known)
    if not unresolved:
        return removed, ()
    return [n for n in removed if n not in unresolved], unresolved


def _aliases_of(st: DeltaTypeState, sending: list[XdsResource]) -> dict[str, tuple[str, ...]]:
    """resource name -> the subscribed aliases it answers, for the resources sent."""
    out: dict[str, list[str]] = {}
    for alias, target in st.resolved.items():
        out.setdefault(target, []).append(alias)
    return {r.name: tuple(sorted(out[r.name])) for r in sending if r.name in out}


def _namespaced_diff(st: DeltaTypeState, available: Mapping[str, XdsResource],
                     ) -> tuple[list[XdsResource], list[str]]:
    """`_full_diff` of a namespaced type: every available resource a subscribed
    namespace (or its own name) covers; a re-subscribed namespace resends its
    resources. An explicit name that does not exist is reported removed once (an
    on-demand miss); a namespace name never is (it names no resource)."""
    known, force, cover = st.known, st.force, st.cover
    sending = [res for name, res in available.items()
               if cover.covers(name) and (known.get(name) != res.version or name in force
                                          or namespace_of(name) in force)]
    removed = [n for n in known if n not in available]
    removed.extend(n for n in st.names
                   if "/" in n and n not in available and n not in known
                   and n not in st.resolved and (n not in st.told_absent or n in force))
    return sending, removed
