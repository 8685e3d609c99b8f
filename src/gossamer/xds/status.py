"""Who is connected over xDS, what each proxy runs, and what it last rejected.

The registry answers the operator's questions behind `gossamer check`: is the
proxy connected, does it run the latest config (for every type it subscribes
to, the version it ACKed is the cache's current version for its node), and if
not, what did Envoy say when it NACKed.

Theory of operation: the xDS server calls `connect` when a stream's first
request names the node, then `record_sent` / `record_event` as its stream
machine produces responses and events, and `disconnect` when the stream ends.
`connect` returns a stream id and gives the stream an entry of its own; a node
may have several open streams at once (Envoy reconnects before the old stream
is torn down). What the registry shows for a node is its newest open stream's
entry, so an older stream's reports never overwrite the newer one's state.
Only the end of a node's last open stream disconnects it: when the newest
ends while an older one is still open, the older one's entry (its node
metadata, its versions) is current again, so one stream's end never drops
another's proxy. The last NACK carries over to whichever entry becomes
current: a proxy that crashed on bad config and came back should still show
why. Each stream also keeps the grant it was admitted with (`live_grants`),
so the xDS server can refuse a node id to another credential while it is
connected. Disconnected entries stay (connected=False) for
`retain_disconnected` seconds, then are pruned lazily. Pure bookkeeping: no
I/O, no asyncio, call from one thread.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.protobuf import struct_pb2

from gossamer.xds.events import Acked, Event, Nacked, Outgoing, Subscribed
from gossamer.xds.types import PUSH_ORDER, SHORT, Snapshot


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A proxy's identity as its Envoy reports it in the first request."""

    id: str
    cluster: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    user_agent: str = ""

    @classmethod
    def from_proto(cls, node: Any) -> NodeInfo:
        """From an `envoy.config.core.v3.Node` (the metadata Struct becomes a plain dict)."""
        metadata: dict[str, Any] = {}
        if node.HasField("metadata"):
            metadata = _plain(node.metadata)
        agent = node.user_agent_name
        version_kind = node.WhichOneof("user_agent_version_type")
        if version_kind == "user_agent_version":
            agent = f"{agent}/{getattr(node, 'user_agent_version', '')}"
        elif version_kind == "user_agent_build_version":
            build = getattr(node, "user_agent_build_version", None)
            semver = getattr(build, "version", None)
            if semver is not None:
                agent = (f"{agent}/{semver.major_number}.{semver.minor_number}."
                         f"{semver.patch}")
        return cls(node.id, node.cluster, metadata, agent)


_INTERN_MAX = 64  # longer strings (an access log path, say) are rarely shared


def _plain(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain Python values, as json_format.MessageToDict gives them (numbers
    are floats) at a fraction of its cost: it runs for every connecting proxy. Read
    through the `fields` map and each Value's oneof: Struct's own mapping methods
    are Python wrappers around the same, a third slower.

    Keys and short strings are interned: every proxy's metadata has the same keys
    and mostly the same few values (namespace, service, upstream names), and the
    registry keeps each proxy's for as long as it is connected: 1.9 KB a proxy
    instead of 3.8 with the control-plane bench's metadata. Interned strings are
    freed when no longer used."""
    return {sys.intern(k): _plain_value(v) for k, v in struct.fields.items()}


def _plain_value(v: struct_pb2.Value) -> Any:
    kind = v.WhichOneof("kind")
    if kind == "struct_value":
        return _plain(v.struct_value)
    if kind == "list_value":
        return [_plain_value(x) for x in v.list_value.values]
    if kind is None or kind == "null_value":
        return None
    if kind == "string_value":
        text = v.string_value
        return sys.intern(text) if len(text) <= _INTERN_MAX else text
    return getattr(v, kind)


@dataclass(frozen=True, slots=True)
class NackRecord:
    type_url: str
    version: str
    error: str
    code: int
    at: float

    def to_json(self) -> dict[str, Any]:
        return {"type": SHORT.get(self.type_url, self.type_url), "type_url": self.type_url,
                "version": self.version, "error": self.error, "code": self.code,
                "at": self.at}


@dataclass(slots=True)
class TypeStatus:
    """One xDS type of one proxy."""

    type_url: str
    subscribed: bool = False
    wildcard: bool = False
    names: frozenset[str] = frozenset()
    sent_version: str | None = None
    sent_at: float | None = None
    sent_count: int = 0
    acked_version: str | None = None
    acked_at: float | None = None
    nack_count: int = 0
    last_nack: NackRecord | None = None
    # True from a NACK until the next ACK: the proxy runs an older version.
    rejecting: bool = False

    @property
    def wants_anything(self) -> bool:
        return self.subscribed and (self.wildcard or bool(self.names))


@dataclass(slots=True)
class ProxyStatus:
    node: NodeInfo
    kind: str
    stream_id: int
    connected_at: float
    connected: bool = True
    disconnected_at: float | None = None
    types: dict[str, TypeStatus] = field(default_factory=dict)
    last_nack: NackRecord | None = None
    # What `authorize` admitted the stream with (a token's id); None without one.
    grant: str | None = None

    def type(self, type_url: str) -> TypeStatus:
        status = self.types.get(type_url)
        if status is None:
            status = self.types[type_url] = TypeStatus(type_url)
        return status

    def synced(self, snapshot: Snapshot | None) -> bool:
        """Connected, and every subscribed type ACKed at the snapshot's version."""
        if not self.connected or snapshot is None:
            return False
        wanted = [t for t in self.types.values() if t.wants_anything]
        return bool(wanted) and all(
            t.acked_version == snapshot.version(t.type_url) for t in wanted)


class SnapshotSource(Protocol):
    def get(self, node_id: str) -> Snapshot | None: ...


def _type_key(type_url: str) -> tuple[int, str]:
    return (PUSH_ORDER.index(type_url), "") if type_url in PUSH_ORDER else (99, type_url)


class ProxyRegistry:
    """Per connected (and recently disconnected) proxy: identity, versions, NACKs."""

    def __init__(self, *, retain_disconnected: float = 3600.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.retain_disconnected = retain_disconnected
        self._clock = clock
        # Per node: its newest open stream's entry, or its last one once disconnected.
        self._proxies: dict[str, ProxyStatus] = {}
        # Per node with open streams: their entries, oldest first (usually one).
        self._live: dict[str, list[ProxyStatus]] = {}
        self._stream_ids = itertools.count(1)
        self._pruned_at = float("-inf")

    # -- fed by the xDS server ---------------------------------------------------------

    def connect(self, node: NodeInfo, kind: str, grant: str | None = None) -> int:
        """A stream for `node` started; returns its stream id for later reports."""
        self._prune()
        stream_id = next(self._stream_ids)
        status = ProxyStatus(node, kind, stream_id, self._clock(), grant=grant)
        previous = self._proxies.get(node.id)
        if previous is not None:
            _carry_nacks(previous, status)
        self._live.setdefault(node.id, []).append(status)
        self._proxies[node.id] = status
        return stream_id

    def disconnect(self, node_id: str, stream_id: int) -> bool:
        """The stream ended. True if it was the node's last open stream (the node is
        now disconnected); otherwise the newest stream still open is current."""
        live = self._live.get(node_id, [])
        status = next((s for s in live if s.stream_id == stream_id), None)
        if status is None:
            return False
        live.remove(status)
        if live:
            if self._proxies.get(node_id) is status:
                _carry_nacks(status, live[-1])
                self._proxies[node_id] = live[-1]
            return False
        del self._live[node_id]
        status.connected = False
        status.disconnected_at = self._clock()
        self._proxies[node_id] = status
        return True

    def is_current(self, node_id: str, stream_id: int) -> bool:
        return self._current(node_id, stream_id) is not None

    def live_grants(self, node_id: str) -> frozenset[str | None]:
        """The grants of the node's open streams (empty when it has none)."""
        return frozenset(s.grant for s in self._live.get(node_id, ()))

    def record_sent(self, node_id: str, stream_id: int, out: Outgoing) -> None:
        status = self._stream(node_id, stream_id)
        if status is None:
            return
        t = status.type(out.type_url)
        t.sent_version, t.sent_at = out.version, self._clock()
        t.sent_count += 1

    def record_event(self, node_id: str, stream_id: int, event: Event) -> None:
        status = self._stream(node_id, stream_id)
        if status is None:
            return
        t = status.type(event.type_url)
        now = self._clock()
        if isinstance(event, Acked):
            t.acked_version, t.acked_at, t.rejecting = event.version, now, False
        elif isinstance(event, Nacked):
            record = NackRecord(event.type_url, event.version, event.message, event.code, now)
            t.last_nack = status.last_nack = record
            t.nack_count += 1
            t.rejecting = True
        elif isinstance(event, Subscribed):
            t.subscribed, t.wildcard, t.names = True, event.wildcard, event.names

    # -- read by the API -----------------------------------------------------------------

    def get(self, node_id: str) -> ProxyStatus | None:
        return self._proxies.get(node_id)

    def proxies(self) -> list[ProxyStatus]:
        self._prune()
        return [self._proxies[n] for n in sorted(self._proxies)]

    def node_ids(self, *, connected_only: bool = True) -> list[str]:
        return [p.node.id for p in self.proxies() if p.connected or not connected_only]

    def to_json(self, cache: SnapshotSource | None = None) -> list[dict[str, Any]]:
        """Plain dicts for the HTTP API, one per proxy, sorted by node id.

        With `cache`, each entry says whether the proxy is `synced` (on the
        latest version of everything it subscribes to) and each type shows
        `latest_version`; without it, `synced` is None.
        """
        return [self._entry(p, cache) for p in self.proxies()]

    snapshot = to_json

    def _entry(self, p: ProxyStatus, cache: SnapshotSource | None) -> dict[str, Any]:
        snap = cache.get(p.node.id) if cache is not None else None
        types: dict[str, Any] = {}
        for type_url in sorted(p.types, key=_type_key):
            t = p.types[type_url]
            latest = snap.version(type_url) if snap is not None else None
            types[SHORT.get(type_url, type_url)] = {
                "type_url": type_url,
                "subscribed": t.subscribed,
                "wildcard": t.wildcard,
                "names": len(t.names),
                "sent_version": t.sent_version,
                "sent_count": t.sent_count,
                "acked_version": t.acked_version,
                "latest_version": latest,
                "synced": None if snap is None else t.acked_version == latest,
                "rejecting": t.rejecting,
                "nack_count": t.nack_count,
                "last_nack": t.last_nack.to_json() if t.last_nack else None,
            }
        return {
            "node_id": p.node.id,
            "cluster": p.node.cluster,
            "metadata": dict(p.node.metadata),
            "user_agent": p.node.user_agent,
            "stream": p.kind,
            "connected": p.connected,
            "connected_at": p.connected_at,
            "disconnected_at": p.disconnected_at,
            "synced": p.synced(snap) if cache is not None else None,
            "types": types,
            "last_nack": p.last_nack.to_json() if p.last_nack else None,
        }

    def _current(self, node_id: str, stream_id: int) -> ProxyStatus | None:
        status = self._proxies.get(node_id)
        if status is None or status.stream_id != stream_id or not status.connected:
            return None
        return status

    def _stream(self, node_id: str, stream_id: int) -> ProxyStatus | None:
        """The entry of an open stream, current or not: an older stream keeps its own
        state, to show again if the newer one ends first."""
        for status in self._live.get(node_id, ()):
            if status.stream_id == stream_id:
                return status
        return None

    def _prune(self) -> None:
        """Forget proxies disconnected for longer than `retain_disconnected`. At most
        once a second: it reads every proxy, and a control-plane restart brings a
        thousand connects in a few seconds."""
        now = self._clock()
        if now - self._pruned_at < 1.0:
            return
        self._pruned_at = now
        cutoff = now - self.retain_disconnected
        stale = [n for n, p in self._proxies.items()
                 if not p.connected and (p.disconnected_at or 0.0) < cutoff]
        for node_id in stale:
            del self._proxies[node_id]


def _carry_nacks(source: ProxyStatus, target: ProxyStatus) -> None:
    """Give `target` the NACKs of `source` that are newer than its own."""
    if _newer(source.last_nack, target.last_nack):
        target.last_nack = source.last_nack
    for type_url, old in source.types.items():
        if old.last_nack is not None and _newer(old.last_nack, target.types.get(
                type_url, TypeStatus(type_url)).last_nack):
            target.type(type_url).last_nack = old.last_nack


def _newer(a: NackRecord | None, b: NackRecord | None) -> bool:
    return a is not None and (b is None or a.at > b.at)
