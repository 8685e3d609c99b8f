"""Sans-I/O state machines for one ADS stream: what both machines share.

The machines are `SotwStream` (`sotw.py`, state of the world) and `DeltaStream`
(`delta.py`, incremental). No grpc and no asyncio in them: the server feeds
requests (`on_request`) and new snapshots (`on_snapshot`) in and writes out the
`Outgoing` responses these return, in order. `drain_events()` hands over what the
status registry and the metrics want to know (ACKs, NACKs, subscription changes;
`events.py`). Keeping the protocol logic free of I/O makes every rule below
testable with plain request objects.

As in h11's `_state.py`, the rule of these files: everything that changes a
machine's state lives in the machine's file (`sotw.py`, `delta.py`) or in the
base here; the server only feeds the machine and writes what it returns, and
nothing else reads or writes its state.

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

import itertools
import weakref
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import discovery_pb2

from gossamer.xds.events import Event, Outgoing
from gossamer.xds.types import PUSH_ORDER, Snapshot, XdsResource

WILDCARD = "*"


# Cluster resource -> the ClusterLoadAssignment name it waits for (None: not
# an EDS cluster). Parsed at most once per resource object, which every snapshot
# holding that cluster shares.
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


def _type_order(type_url: str) -> tuple[int, str]:
    try:
        return (PUSH_ORDER.index(type_url), "")
    except ValueError:
        return (len(PUSH_ORDER), type_url)


class StreamMachine:
    """What both machines share: the snapshot they serve, the stream's nonces, the
    events not yet drained, and flushing every type in PUSH_ORDER."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self._nonces = itertools.count(1)
        self._events: list[Event] = []
        # `types` in PUSH_ORDER, re-sorted only when a type is added (types are
        # never removed): every push flushes every stream.
        self._order: list[Any] = []

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
        if len(self._order) != len(self.types):
            self._order = [self.types[t] for t in sorted(self.types, key=_type_order)]
        out: list[Outgoing] = []
        for st in self._order:
            sent = self._evaluate(st)
            if sent is not None:
                out.append(sent)
        return out

    @staticmethod
    def _error(req: discovery_pb2.DiscoveryRequest | discovery_pb2.DeltaDiscoveryRequest,
               ) -> tuple[str, int] | None:
        if not req.HasField("error_detail"):
            return None
        return req.error_detail.message, req.error_detail.code
