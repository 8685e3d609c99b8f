"""Sans-I/O state machines for one ADS stream: state of the world and delta.

No grpc and no asyncio here: the server feeds requests (`on_request`) and new
snapshots (`on_snapshot`) in and writes out the `Outgoing` responses these
return, in order. `drain_events()` hands over what the status registry and the
metrics want to know (ACKs, NACKs, subscription changes). Keeping the protocol
logic free of I/O makes every rule below testable with plain request objects.

Rules shared by both machines (from the xDS protocol document):

- Each type URL is an independent sub-stream with its own nonce and version.
  Nonces come from one counter per stream, so they are unique on the stream.
- A request whose `response_nonce` is the latest one we sent for its type
  answers that response: an ACK, or a NACK when `error_detail` is present.
  Requests with older nonces are stale: they never count as ACK or NACK.
- At most one response per type is outstanding. While one is, changes wait
  and are sent (coalesced) once the client has answered. This is the flow
  control that keeps a burst of snapshots from queueing a pile of obsolete
  responses, and what lets "do not resend a NACKed version" be decided on
  what the client actually said.
- A NACKed version is not sent again; the next different snapshot version is.
- Types are flushed in PUSH_ORDER (clusters, endpoints, listeners, routes,
  secrets) so a new cluster reaches the proxy before the endpoints that need
  it and a listener before its routes (make before break).
- When a cluster that the proxy already has is modified, Envoy re-warms it
  and waits for a fresh ClusterLoadAssignment even if the endpoints did not
  change; it only falls back to its cached copy after `initial_fetch_timeout`
  (15 s). So sending a changed cluster also queues a resend of that cluster's
  endpoints (`eds_service_name`).
- Responses are bytes assembled from per-resource cached encodings (`wire`):
  nothing is serialized per stream.
"""

from __future__ import annotations

import functools
import itertools
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import discovery_pb2

from gossamer.xds import wire
from gossamer.xds.types import CLUSTER, ENDPOINT, NAMED_TYPES, PUSH_ORDER, Snapshot, XdsResource

WILDCARD = "*"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One response to write, with what status and metrics need about it.

    The bytes are assembled on demand (`payload`) from cached pieces, so the
    server can build them only once it holds a write slot: a push to
    thousands of streams then holds only the in-flight responses in memory,
    not one per stream. Each `payload` call assembles the bytes anew.
    """

    type_url: str
    # SotW: version_info; delta: system_version_info. Both: the snapshot's
    # version of the type at the time of sending.
    version: str
    nonce: str
    resources: int
    removed: int
    encode: Callable[[], bytes] = field(repr=False, compare=False)

    @property
    def payload(self) -> bytes:
        return self.encode()


@dataclass(frozen=True, slots=True)
class Acked:
    """The client runs `version` of the type.

    `implicit` is True when we know it without an ACK message: a reconnecting
    client said it already has the current version, or (delta) nothing the
    client subscribes to changed in a new snapshot version.
    """

    type_url: str
    version: str
    implicit: bool = False


@dataclass(frozen=True, slots=True)
class Nacked:
    """The client rejected `version` of the type; `message` is its error text."""

    type_url: str
    version: str
    message: str
    code: int


@dataclass(frozen=True, slots=True)
class Subscribed:
    """The client's subscription for a type changed."""

    type_url: str
    wildcard: bool
    names: frozenset[str]


Event = Acked | Nacked | Subscribed


# Cluster resource -> the ClusterLoadAssignment name it waits for (None: not
# an EDS cluster). Parsed at most once per interned resource.
_eds_names: weakref.WeakKeyDictionary[XdsResource, str | None] = weakref.WeakKeyDictionary()


def eds_service_name(cluster: XdsResource) -> str | None:
    """The endpoints resource name an EDS cluster subscribes to, or None."""
    try:
        return _eds_names[cluster]
    except KeyError:
        pass
    name: str | None = None
    try:
        message = cluster_pb2.Cluster.FromString(cluster.payload)
    except Exception:  # a malformed payload is the proxy's to NACK, not ours to crash on
        message = None
    if (message is not None
            and message.WhichOneof("cluster_discovery_type") == "type"
            and message.type == cluster_pb2.Cluster.EDS):
        name = message.eds_cluster_config.service_name or message.name
    _eds_names[cluster] = name
    return name


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


def _type_order(type_url: str) -> tuple[int, str]:
    try:
        return (PUSH_ORDER.index(type_url), "")
    except ValueError:
        return (len(PUSH_ORDER), type_url)


def _select(available: Mapping[str, XdsResource],
            names: frozenset[str] | None) -> list[XdsResource]:
    if names is None:
        return list(available.values())
    return [available[n] for n in names if n in available]


def _modified_eds_names(before: Mapping[str, XdsResource] | None,
                        after: Iterable[XdsResource]) -> set[str]:
    """Endpoint names of clusters present `before` whose definition changed in `after`."""
    names: set[str] = set()
    if not before:
        return names
    get = before.get
    for cluster in after:
        old = get(cluster.name)
        if old is not None and old is not cluster and old.version != cluster.version:
            eds = eds_service_name(cluster)
            if eds is not None:
                names.add(eds)
    return names


class _Base:
    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self._nonces = itertools.count(1)
        self._events: list[Event] = []

    def drain_events(self) -> list[Event]:
        """Events since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    def _next_nonce(self) -> str:
        return str(next(self._nonces))

    # Each machine keeps per-type state in `types` and decides per type in `_evaluate`.
    types: dict[str, Any]

    def _evaluate(self, st: Any) -> Outgoing | None:
        raise NotImplementedError

    def _flush(self) -> list[Outgoing]:
        """Every type's pending response, in make-before-break order."""
        out: list[Outgoing] = []
        for type_url in sorted(self.types, key=_type_order):
            sent = self._evaluate(self.types[type_url])
            if sent is not None:
                out.append(sent)
        return out

    @staticmethod
    def _error(req: discovery_pb2.DiscoveryRequest | discovery_pb2.DeltaDiscoveryRequest,
               ) -> tuple[str, int] | None:
        if not req.HasField("error_detail"):
            return None
        return req.error_detail.message, req.error_detail.code


# --------------------------------------------------------------------------- SotW


@dataclass(eq=False, slots=True)
class SotwTypeState:
    """One type's sub-stream in a state-of-the-world stream.

    Theory of operation:
    - Subscription: `wildcard` or the explicit `names`. Legacy wildcard (empty
      `resource_names` before any name was ever given) applies to CDS/LDS only;
      once the client named something, an empty list means "nothing".
    - `basis_version` / `basis_names`: the version (and the names, None for
      wildcard) of the last response sent, or the version a reconnecting client
      reported when we chose not to resend. A response is due when the
      snapshot's version differs from `basis_version`, when the client asks for
      names that were not part of the basis (the protocol requires resending
      newly requested resources), or when `resend` names endpoints of a
      re-warming cluster.
    - `pending`: a response with nonce `sent_nonce` awaits its ACK/NACK; no
      other response for the type is sent until then.
    - `client_version`: what the client runs, per its ACKs and its first
      request's `version_info`. If the snapshot's version comes back to it
      (say a bad change is reverted after a NACK) nothing is resent.
    - `nacked_version`: the last rejected version; it stays the basis, so it is
      not resent until the snapshot moves on.
    """

    type_url: str
    wildcard: bool = False
    explicit: bool = False
    names: frozenset[str] = frozenset()
    client_version: str | None = None
    acked_version: str | None = None
    basis_version: str | None = None
    basis_names: frozenset[str] | None = None
    basis_map: Mapping[str, XdsResource] | None = None
    sent_version: str | None = None
    sent_nonce: str | None = None
    pending: bool = False
    nacked_version: str | None = None
    # Set by a NACK, cleared once the client is known to run the current version.
    rejected: bool = False
    resend: set[str] = field(default_factory=set)
    announced: bool = False


class SotwStream(_Base):
    """State-of-the-world ADS (`StreamAggregatedResources`) for one stream."""

    kind = "sotw"

    def __init__(self, body_cache: wire.BodyCache | None = None) -> None:
        super().__init__()
        self.types: dict[str, SotwTypeState] = {}
        self._bodies = body_cache if body_cache is not None else wire.BodyCache()

    def on_request(self, req: discovery_pb2.DiscoveryRequest) -> list[Outgoing]:
        type_url = req.type_url
        if not type_url:
            return []  # ADS requires type_url; nothing sensible to answer
        st = self.types.get(type_url)
        if st is None:
            st = self.types[type_url] = SotwTypeState(type_url)
            # A reconnecting client reports the version it already runs; the
            # nonce of its first request (if any) belongs to an old stream.
            st.client_version = req.version_info or None
        elif st.pending and req.response_nonce == st.sent_nonce:
            st.pending = False
            error = self._error(req)
            assert st.sent_version is not None
            if error is None:
                st.client_version = st.acked_version = st.sent_version
                st.nacked_version, st.rejected = None, False
                self._events.append(Acked(type_url, st.sent_version))
            else:
                st.client_version = req.version_info or None
                st.nacked_version, st.rejected = st.sent_version, True
                self._events.append(Nacked(type_url, st.sent_version, error[0], error[1]))
        # Stale requests (older nonces) are no ACK/NACK, but a request always
        # carries the client's whole current subscription, so take it.
        self._update_subscription(st, req.resource_names)
        return self._flush()

    def on_snapshot(self, snapshot: Snapshot) -> list[Outgoing]:
        self.snapshot = snapshot
        return self._flush()

    def _update_subscription(self, st: SotwTypeState, resource_names: Iterable[str]) -> None:
        names = frozenset(resource_names)
        if WILDCARD in names:
            wildcard, st.explicit = True, True
            names = names - {WILDCARD}
        elif names:
            wildcard, st.explicit = False, True
        else:
            wildcard = not st.explicit and st.type_url not in NAMED_TYPES
        if wildcard != st.wildcard or names != st.names or not st.announced:
            st.wildcard, st.names, st.announced = wildcard, names, True
            if st.basis_names is not None:
                # Names dropped from the subscription are dropped by the client
                # too: asking for them again must bring them back.
                st.basis_names = st.basis_names & names
            self._events.append(Subscribed(st.type_url, wildcard, names))

    def _evaluate(self, st: SotwTypeState) -> Outgoing | None:
        snap = self.snapshot
        if snap is None or st.pending:
            return None
        if not st.wildcard and not st.names:
            return None  # subscribed to nothing: nothing to send
        current = snap.version(st.type_url)
        available = snap.of(st.type_url)
        new_names = (not st.wildcard and st.names is not st.basis_names
                     and not st.names <= (st.basis_names or frozenset()))
        moved = current != st.basis_version
        if not (moved or new_names or st.resend):
            return None
        if not new_names and not st.resend and current == st.client_version:
            # The client already runs this version: reconnect, or a revert.
            st.basis_version, st.basis_map = current, available
            if st.acked_version != current or st.rejected:
                st.acked_version, st.rejected = current, False
                self._events.append(Acked(st.type_url, current, implicit=True))
            return None

        # The body is keyed by the requested names (None: wildcard): with the
        # set version they determine the content (requested ∩ existing), and
        # a request's frozenset keeps its cached hash, so equal subscriptions
        # on many streams share one body without rebuilding or rehashing.
        key: frozenset[str] | None
        if moved or new_names:
            key = None if st.wildcard else st.names
        else:
            # Only endpoints of re-warming clusters: SotW lets non-LDS/CDS
            # responses carry a subset, and Envoy leaves the others alone.
            key = frozenset(st.resend if st.wildcard else st.resend & st.names)
            st.resend.clear()
            if not any(n in available for n in key):
                return None
        st.resend.clear()
        if st.type_url == CLUSTER and ENDPOINT in self.types:
            self._queue_endpoint_resends(
                st, available.values() if key is None
                else (available[n] for n in key if n in available))
        body, count = self._bodies.get(st.type_url, current, key,
                                       functools.partial(_select, available, key))
        nonce = self._next_nonce()
        st.basis_version, st.basis_map = current, available
        st.basis_names = None if st.wildcard else st.names
        st.sent_version, st.sent_nonce, st.pending = current, nonce, True
        return Outgoing(st.type_url, current, nonce, count, 0,
                        functools.partial(bytes.__add__, body, wire.nonce_field(nonce)))

    def _queue_endpoint_resends(self, clusters: SotwTypeState,
                                sending: Iterable[XdsResource]) -> None:
        endpoints = self.types.get(ENDPOINT)
        if endpoints is not None:
            endpoints.resend |= _modified_eds_names(clusters.basis_map, sending)


# -------------------------------------------------------------------------- delta


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
      version, so it is not resent until it changes again.
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
    """

    type_url: str
    wildcard: bool = False
    names: set[str] = field(default_factory=set)
    known: dict[str, str] = field(default_factory=dict)
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


class DeltaStream(_Base):
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
            st = self.types[type_url] = DeltaTypeState(type_url)
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
        before = (st.wildcard, frozenset(st.names))
        if first and not subscribe and not unsubscribe and st.type_url not in NAMED_TYPES:
            st.wildcard = True  # legacy wildcard
        for name in subscribe:
            if name == WILDCARD:
                st.wildcard = True
                continue
            st.names.add(name)
            st.told_absent.discard(name)
            if not first:
                st.force.add(name)
        for name in unsubscribe:
            if name == WILDCARD:
                st.wildcard = False
                continue
            st.names.discard(name)
            st.told_absent.discard(name)
            st.force.discard(name)
        if not st.wildcard:
            # The client drops what it no longer subscribes to; no response needed.
            for name in [n for n in st.known if n not in st.names]:
                del st.known[name]
        else:
            # Still covered by the wildcard? The client cannot tell: say it.
            st.force.update(n for n in unsubscribe if n != WILDCARD)
        after = (st.wildcard, frozenset(st.names))
        if first or after != before:
            self._events.append(Subscribed(st.type_url, after[0], after[1]))
        st.dirty = True

    def _evaluate(self, st: DeltaTypeState) -> Outgoing | None:
        snap = self.snapshot
        if snap is None or st.pending_nonce is not None:
            return None
        current = snap.version(st.type_url)
        if current == st.basis_version and not st.dirty and not st.force:
            return None
        available = snap.of(st.type_url)
        if not st.dirty and st.basis_map is not None and st.basis_version is not None:
            sending, removed = self._incremental(st, available, current)
        else:
            sending, removed = self._full_diff(st, available)
        if st.type_url == CLUSTER and sending:
            self._queue_endpoint_resends(st, sending)
        known = st.known
        for res in sending:
            known[res.name] = res.version
        for name in removed:
            known.pop(name, None)
            if name in st.names:
                st.told_absent.add(name)
        st.force.clear()
        st.dirty = False
        st.basis_version, st.basis_map = current, available
        if not sending and not removed:
            if st.acked_version != current and not st.rejected:
                st.acked_version = current
                self._events.append(Acked(st.type_url, current, implicit=True))
            return None
        nonce = self._next_nonce()
        st.pending_nonce, st.pending_version = nonce, current
        return Outgoing(st.type_url, current, nonce, len(sending), len(removed),
                        functools.partial(wire.delta_response, st.type_url, current,
                                          tuple(sending), tuple(removed), nonce))

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
        known, names = st.known, st.names
        if st.wildcard:
            sending = [r for r in changed if known.get(r.name) != r.version]
        else:
            sending = [r for r in changed
                       if r.name in names and known.get(r.name) != r.version]
        if st.force:  # endpoints of re-warming clusters, even if unchanged
            queued = {r.name for r in sending}
            for name in st.force:
                res = available.get(name)
                if res is not None and name not in queued and (st.wildcard or name in names):
                    sending.append(res)
        return sending, [n for n in gone if n in known]

    @staticmethod
    def _full_diff(st: DeltaTypeState, available: Mapping[str, XdsResource],
                   ) -> tuple[list[XdsResource], list[str]]:
        """Everything the client may want against everything it has, O(resources)."""
        known, force, told_absent = st.known, st.force, st.told_absent
        sending: list[XdsResource] = []
        removed: list[str] = []
        if st.wildcard:
            for name, res in available.items():
                if known.get(name) != res.version or (force and name in force):
                    sending.append(res)
            # After the sends, `known` covers `available`; anything more is gone.
            if len(known) + sum(1 for r in sending if r.name not in known) > len(available):
                removed.extend(n for n in known if n not in available)
            for name in st.names:  # explicit names the wildcard does not provide
                if (name not in available and name not in known
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
