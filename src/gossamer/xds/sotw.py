"""The state-of-the-world ADS machine (`StreamAggregatedResources`) of one stream.

Everything that changes a SotW stream's state lives in this file (and the shared
base in `stream.py`, whose header states the rules both machines follow); the
theory of operation of one type's sub-stream is `SotwTypeState`'s docstring.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2

from gossamer.xds import wire
from gossamer.xds.events import Acked, Nacked, Outgoing, Subscribed
from gossamer.xds.stream import WILDCARD, StreamMachine, eds_service_name
from gossamer.xds.types import CLUSTER, ENDPOINT, NAMED_TYPES, Snapshot, XdsResource


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


class SotwStream(StreamMachine):
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
                        functools.partial(bytes.__add__, body, wire.nonce_field(nonce)),
                        len(body))

    def _queue_endpoint_resends(self, clusters: SotwTypeState,
                                sending: Iterable[XdsResource]) -> None:
        endpoints = self.types.get(ENDPOINT)
        if endpoints is not None:
            endpoints.resend |= _modified_eds_names(clusters.basis_map, sending)
