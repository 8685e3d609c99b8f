"""The grpc.aio Aggregated Discovery Service: SotW and delta ADS over one port.

The same class also serves other xDS services whose methods speak the same
DiscoveryRequest/DeltaDiscoveryRequest messages (`services=`): the agent runs
it as Envoy's SecretDiscoveryService on a Unix socket (`agent/sds.py`).

Both methods are registered through a generic handler whose response
serializer is the identity, so streams write the bytes the stream machines
(`sotw.py`, `delta.py`) assembled from cached per-resource encodings: no message
is built or serialized per stream.

Theory of operation (one stream):

    reader task ──requests──▶ ┐
                              ├─ inbox ─▶ main loop ─▶ machine ─▶ Outgoing ─▶ write
    cache watch ──"changed"─▶ ┘                         │
                                                        └─ events ─▶ registry, metrics

1. The first request must name the node. The stream registers with the
   `ProxyRegistry` (which hands out a stream id), then calls
   `hooks.proxy_connected` and only then looks at the cache:
   the control plane typically computes the node's snapshot in that hook.
2. The stream watches its node in the `SnapshotCache`, which queues one
   coalesced "changed" marker in the stream's inbox (`inbox.py`); the reader
   task queues requests. The main loop is the only one touching the sans-I/O
   machine, so the machine needs no locks, and requests and snapshots are
   handled in arrival order.
3. Each response is written inside a window shared by all streams
   (`window.py`), which caps responses and their bytes in flight: a push of
   big responses to thousands of proxies then proceeds a few at a time
   instead of holding every response in memory, and small ones go at once.
4. When a stream ends, only the end of its node's last open stream disconnects
   the node and runs `hooks.proxy_disconnected` (Envoy reconnects before the
   old stream is torn down). If the node's newest stream ends first, the older
   one is current again and `hooks.proxy_connected` runs for its node.

A node id belongs to the grant of its open streams: another grant's stream
for it is refused PERMISSION_DENIED (one credential cannot take over, or end,
another's proxy); the same grant's is admitted (a reconnect).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final, Protocol

import grpc
import grpc.aio
from envoy.service.discovery.v3 import discovery_pb2
from prometheus_client import CollectorRegistry

from gossamer.xds import wire
from gossamer.xds.cache import SnapshotCache
from gossamer.xds.delta import DeltaStream
from gossamer.xds.events import Acked, Event, Nacked, Outgoing
from gossamer.xds.inbox import CHANGED, END, REVOKED, StreamInbox
from gossamer.xds.metrics import XdsMetrics
from gossamer.xds.sotw import SotwStream
from gossamer.xds.status import NodeInfo, ProxyRegistry
from gossamer.xds.types import SHORT
from gossamer.xds.window import SendWindow

__all__ = ["ADS_SERVICE", "SDS_SERVICE", "NoHooks", "NodeInfo", "StreamDenied", "XdsHooks",
           "XdsServer"]

log = logging.getLogger(__name__)

SERVICE: Final = "envoy.service.discovery.v3.AggregatedDiscoveryService"
ADS_SERVICE: Final = SERVICE
SDS_SERVICE: Final = "envoy.service.secret.v3.SecretDiscoveryService"
# Service -> (state-of-the-world method, delta method). Every xDS service uses
# the same request and response messages, so one pair of handlers serves any
# of them; what differs is only the resource types a client asks for.
METHODS: Final = {
    ADS_SERVICE: ("StreamAggregatedResources", "DeltaAggregatedResources"),
    SDS_SERVICE: ("StreamSecrets", "DeltaSecrets"),
}
UNIX_PREFIX: Final = "unix:"
MAX_MESSAGE_BYTES: Final = 64 << 20
TLS_RECORD_BYTES: Final = 4096


class StreamDenied(Exception):
    """Raised by an `authorize` hook: the stream is refused with this status."""

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.PERMISSION_DENIED):
        super().__init__(message)
        self.code = code


class XdsHooks(Protocol):
    """What the server asks and tells its owner about streams, as go-control-plane's
    `Callbacks`: who may open one, and proxies coming and going (see the module
    doc). `NoHooks` admits everyone and ignores the rest; subclass it to implement
    only some."""

    async def authorize(self, node: NodeInfo,
                        metadata: Sequence[tuple[str, str | bytes]]) -> str | None:
        """Check a stream's credentials (gRPC metadata) against the node it claims to
        be, before anything is sent; raise StreamDenied to refuse it. The result is
        the stream's grant (say, the id of the token it presented):
        `XdsServer.end_streams(grant)` ends every stream opened with it."""
        ...

    async def proxy_connected(self, node_id: str, node: NodeInfo) -> None:
        """The node's stream is open (or current again). The stream sends config once
        `cache.get(node_id)` has a snapshot, so this may also just schedule that work.
        An exception is logged, and the stream goes on."""
        ...

    async def proxy_disconnected(self, node_id: str) -> None:
        """The node's last open stream ended. An exception is logged."""
        ...


class NoHooks:
    """XdsHooks that admit every stream (grant None) and ignore comings and goings."""

    async def authorize(self, node: NodeInfo,
                        metadata: Sequence[tuple[str, str | bytes]]) -> str | None:
        return None

    async def proxy_connected(self, node_id: str, node: NodeInfo) -> None:
        return None

    async def proxy_disconnected(self, node_id: str) -> None:
        return None


class _StreamGone(Exception):
    """The peer stopped taking responses; end the stream (Envoy will reconnect)."""


def _identity(payload: bytes) -> bytes:
    return payload


def _bind_private_unix(server: grpc.aio.Server, address: str,
                       credentials: grpc.ServerCredentials | None) -> int:
    """Bind a Unix socket that only this user can connect to.

    grpc binds *and listens* inside add_*_port, so a chmod afterwards would
    leave a moment in which another user could connect and keep the
    connection. The umask makes the socket 0600 from its creation; it is
    process-wide, but held only for this one synchronous call, and anything
    another thread creates meanwhile only comes out more private. The chmod
    after it states the mode outright, whatever grpc does to the file.
    """
    path = address[len(UNIX_PREFIX):]
    old = os.umask(0o177)
    try:
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
    finally:
        os.umask(old)
    with contextlib.suppress(FileNotFoundError):
        os.chmod(path, 0o600)
    return int(bound)


def _address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


class XdsServer:
    """ADS server over a `SnapshotCache`, reporting to a `ProxyRegistry`."""

    def __init__(
        self,
        cache: SnapshotCache,
        hooks: XdsHooks | None = None,
        registry: ProxyRegistry | None = None,
        *,
        metrics_registry: CollectorRegistry | None = None,
        server_credentials: grpc.ServerCredentials | None = None,
        max_in_flight: int = 1024,
        max_in_flight_bytes: int = 32 << 20,
        write_timeout: float = 60.0,
        max_streams: int = 100_000,
        extra_options: Sequence[tuple[str, Any]] = (),
        services: Sequence[str] = (ADS_SERVICE,),
        extra_handlers: Sequence[grpc.GenericRpcHandler] = (),
    ) -> None:
        unknown = [s for s in services if s not in METHODS]
        if unknown or not services:
            raise ValueError(f"cannot serve {unknown or 'no services'}; known: {sorted(METHODS)}")
        self.services = tuple(services)
        self.cache = cache
        self.hooks: XdsHooks = hooks if hooks is not None else NoHooks()
        self.registry = registry if registry is not None else ProxyRegistry()
        self.metrics = XdsMetrics(metrics_registry)
        # SotW bodies (all but the nonce) shared by every stream of this server.
        self.bodies = wire.BodyCache()
        self._credentials = server_credentials
        self._window = SendWindow(max_in_flight, max_in_flight_bytes)
        # A proxy that stops reading must not hold a write slot forever.
        self.write_timeout = write_timeout
        self._max_streams = max_streams
        self._extra_options = tuple(extra_options)
        # Other services on the same port (the CA), behind the same TLS.
        self._extra_handlers = tuple(extra_handlers)
        self._server: grpc.aio.Server | None = None
        self._streams: set[asyncio.Task[Any]] = set()
        # The open streams' inboxes by the grant `authorize` returned for them.
        self._granted: dict[str, set[StreamInbox]] = {}
        self.port = 0

    def options(self) -> list[tuple[str, Any]]:
        """grpc server channel arguments (see the module docstring and DESIGN.md)."""
        return [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Streams per HTTP/2 connection (one Envoy uses one; a proxy in
            # front of us may multiplex many).
            ("grpc.max_concurrent_streams", self._max_streams),
            # With the defaults (1000, hard limit 3000) a mass reconnect
            # after a control-plane restart gets streams rejected CANCELLED.
            ("grpc.server.max_pending_requests", self._max_streams),
            ("grpc.server.max_pending_requests_hard_limit", self._max_streams),
            # Our keepalive pings find dead proxies; and Envoy's own pings on
            # an idle stream (when configured on the xds cluster) must not be
            # punished with GOAWAY, which would drop a healthy ADS stream.
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            ("grpc.http2.max_ping_strikes", 0),
            ("grpc.http2.max_pings_without_data", 0),
            # Fail loudly if another process already serves this port.
            ("grpc.so_reuseport", 0),
            # TLS records of at most 4 KiB, not 16: grpc keeps buffers of the
            # record size per connection. 8 MiB of the control plane at a
            # thousand proxies; 20 KiB a stream in bench/controlplane/grpcfloor.py.
            # Envoy reads records of any size; a big push is more records.
            ("grpc.tsi.max_frame_size", TLS_RECORD_BYTES),
            *self._extra_options,
        ]

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on host:port (0: any free port) and return the bound port.

        `host` may also be `unix:<path>` (port ignored, 0 returned): the
        socket is created mode 0600, so only this user can connect. That is
        how the agent keeps its SDS (which hands out private keys) to its
        own Envoy.
        """
        if self._server is not None:
            raise RuntimeError("XdsServer already started")
        server = grpc.aio.server(options=self.options())
        for service in self.services:
            sotw, delta = METHODS[service]
            handler = grpc.method_handlers_generic_handler(service, {
                sotw: grpc.stream_stream_rpc_method_handler(
                    self._stream_sotw,
                    request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                    response_serializer=_identity),
                delta: grpc.stream_stream_rpc_method_handler(
                    self._stream_delta,
                    request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
                    response_serializer=_identity),
            })
            server.add_generic_rpc_handlers((handler,))
        if self._extra_handlers:
            server.add_generic_rpc_handlers(self._extra_handlers)
        unix = host.startswith(UNIX_PREFIX)
        address = host if unix else _address(host, port)
        try:
            if unix:
                bound = _bind_private_unix(server, address, self._credentials)
            elif self._credentials is None:
                bound = server.add_insecure_port(address)
            else:
                bound = server.add_secure_port(address, self._credentials)
        except RuntimeError as exc:
            raise OSError(f"xDS server cannot listen on {address}: {exc}") from exc
        if not bound:
            raise OSError(f"xDS server cannot listen on {address}")
        await server.start()
        self._server, self.port = server, 0 if unix else int(bound)
        log.info("xDS server (%s) listening on %s", ", ".join(self.services),
                 address if unix else _address(host, self.port))
        return self.port

    async def stop(self, grace: float | None = 5.0) -> None:
        """Stop accepting streams and end the open ones after `grace` seconds."""
        server, self._server = self._server, None
        if server is None:
            return
        await server.stop(grace)
        # grpc cancels the stream handlers but does not wait for them; let their
        # cleanup (registry, disconnect hooks) finish before we report stopped.
        streams = [t for t in self._streams if not t.done()]
        for task in streams:
            task.cancel()
        if streams:
            await asyncio.wait(streams, timeout=5.0)

    def end_streams(self, grant: str) -> int:
        """End every open stream that `authorize` admitted with `grant` (a revoked
        token's id, say) with UNAUTHENTICATED; returns how many. The client may
        reconnect, and `authorize` then decides again."""
        inboxes = self._granted.pop(grant, set())
        for inbox in inboxes:
            inbox.mark_revoked()
        return len(inboxes)

    def _release(self, grant: str, inbox: StreamInbox) -> None:
        inboxes = self._granted.get(grant)
        if inboxes is not None:
            inboxes.discard(inbox)
            if not inboxes:
                del self._granted[grant]

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    # -- streams ---------------------------------------------------------------------------

    async def _stream_sotw(self, requests: AsyncIterator[Any],
                           context: grpc.aio.ServicerContext[Any, bytes]) -> None:
        await self._serve(requests, context, SotwStream(self.bodies))

    async def _stream_delta(self, requests: AsyncIterator[Any],
                            context: grpc.aio.ServicerContext[Any, bytes]) -> None:
        await self._serve(requests, context, DeltaStream())

    async def _serve(self, requests: AsyncIterator[Any],
                     context: grpc.aio.ServicerContext[Any, bytes],
                     machine: SotwStream | DeltaStream) -> None:
        this = asyncio.current_task()
        if this is not None:
            self._streams.add(this)
            this.add_done_callback(self._streams.discard)
        inbox = StreamInbox(limit=64)
        reader = asyncio.create_task(self._read(requests, inbox))
        unwatch: Callable[[], None] | None = None
        node_id = ""
        stream_id = 0
        grant: str | None = None
        kind = machine.kind
        try:
            first: Any = await inbox.get()
            if first is END:
                return
            node, grant = await self._admit(first, context)
            # No await from the check of the node's grants in _admit to here, so
            # two streams of different grants cannot both be admitted for a node.
            if grant is not None:
                self._granted.setdefault(grant, set()).add(inbox)
            node_id = node.id
            stream_id = self.registry.connect(node, kind, grant)
            self.metrics.streams.labels(kind).inc()
            self.metrics.stream_starts.labels(kind).inc()
            log.info("xDS %s stream %d from %s (%s) opened", kind, stream_id, node_id,
                     node.user_agent or "unknown agent")
            await self._connected(node_id, node)

            unwatch = self.cache.watch(node_id, inbox.mark_changed)
            out = machine.on_request(first)
            del first  # the parsed request would otherwise live as long as the stream
            applied = self.cache.get(node_id)
            if applied is not None:
                out += machine.on_snapshot(applied)
            await self._deliver(context, machine, node_id, stream_id, out)
            while True:
                item: Any = await inbox.get()
                if item is END:
                    break
                if item is REVOKED:
                    log.warning("xDS %s stream of %s ended: its credentials were revoked",
                                kind, node_id)
                    await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                        "the credentials of this stream were revoked")
                if item is CHANGED:
                    snapshot = self.cache.get(node_id)
                    if snapshot is None or snapshot is applied:
                        continue
                    applied = snapshot
                    out = machine.on_snapshot(snapshot)
                else:
                    out = machine.on_request(item)
                del item  # a request would otherwise live until the next one comes
                await self._deliver(context, machine, node_id, stream_id, out)
        except asyncio.CancelledError:
            raise  # server stopping or the client went away: the finally block cleans up
        except grpc.aio.AbortError:
            raise
        except _StreamGone as exc:
            log.warning("xDS %s stream of %s dropped: %s", kind, node_id, exc)
        except Exception:
            if context.done():  # the client went away mid-write
                log.debug("xDS %s stream of %s ended while writing", kind, node_id)
            else:
                log.exception("xDS %s stream of %s failed", kind, node_id or "unknown node")
        finally:
            reader.cancel()
            if unwatch is not None:
                unwatch()
            if grant is not None:
                self._release(grant, inbox)
            if stream_id:
                self.metrics.streams.labels(kind).dec()
                await self._ended(kind, node_id, stream_id)

    async def _ended(self, kind: str, node_id: str, stream_id: int) -> None:
        """Tell the registry and the hooks that a stream ended (see the module doc, 4)."""
        was_current = self.registry.is_current(node_id, stream_id)
        last = self.registry.disconnect(node_id, stream_id)
        log.info("xDS %s stream %d from %s closed", kind, stream_id, node_id)
        if last:
            self.metrics.forget(node_id)
            await self._disconnected(node_id)
            return
        current = self.registry.get(node_id)
        if was_current and current is not None:  # its older stream's metadata again
            await self._connected(node_id, current.node)

    async def _admit(self, first: Any, context: grpc.aio.ServicerContext[Any, bytes]
                     ) -> tuple[NodeInfo, str | None]:
        """The node a stream's first request names, and the grant `authorize` gave
        it; aborts the stream (raising AbortError) if it may not go on."""
        if not first.HasField("node") or not first.node.id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "the first request of a stream must carry node.id")
        node = NodeInfo.from_proto(first.node)
        try:
            grant = await self.hooks.authorize(node, context.invocation_metadata() or ())
        except StreamDenied as exc:
            log.warning("xDS stream of %s refused: %s", node.id, exc)
            await context.abort(exc.code, str(exc))
        held = self.registry.live_grants(node.id)
        if held and grant not in held:
            log.warning("xDS stream of %s refused: connected with another grant", node.id)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"node {node.id} is connected with another credential; "
                                "a node id is used by one credential at a time")
        return node, grant

    async def _deliver(self, context: grpc.aio.ServicerContext[Any, bytes],
                       machine: SotwStream | DeltaStream, node_id: str, stream_id: int,
                       out: list[Outgoing]) -> None:
        self._record(node_id, stream_id, machine.drain_events())
        for item in out:
            await self._window.acquire(item.size)
            try:
                # Assembled only now, inside the window, and dropped right after.
                payload = item.payload
                size = len(payload)
                try:
                    # A timer, not asyncio.wait_for: that wraps every write of
                    # every stream in a Task of its own (3.11).
                    async with asyncio.timeout(self.write_timeout):
                        await context.write(payload)
                except TimeoutError:
                    raise _StreamGone(f"write stalled for {self.write_timeout}s") from None
                del payload
            finally:
                self._window.release(item.size)
            self.registry.record_sent(node_id, stream_id, item)
            self.metrics.sent(item, size)

    def _record(self, node_id: str, stream_id: int, events: list[Event]) -> None:
        for event in events:
            self.registry.record_event(node_id, stream_id, event)
            if isinstance(event, Acked):
                if not event.implicit:
                    self.metrics.ack(event.type_url)
                    self.metrics.acked(node_id, event.type_url, event.version)
            elif isinstance(event, Nacked):
                label = SHORT.get(event.type_url, event.type_url)
                self.metrics.nacks.labels(label).inc()
                log.warning("proxy %s rejected %s version %s: %s", node_id, label,
                            event.version, event.message)

    @staticmethod
    async def _read(requests: AsyncIterator[Any], inbox: StreamInbox) -> None:
        try:
            async for request in requests:
                await inbox.put(request)
                del request  # the loop owns it now; do not hold it while reading on
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the client reset the stream, or sent garbage
            log.debug("xDS stream read ended: %r", exc)
        await inbox.put(END)

    async def _connected(self, node_id: str, node: NodeInfo) -> None:
        try:
            await self.hooks.proxy_connected(node_id, node)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("xDS hook proxy_connected(%s) failed", node_id)

    async def _disconnected(self, node_id: str) -> None:
        try:
            await self.hooks.proxy_disconnected(node_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("xDS hook proxy_disconnected(%s) failed", node_id)

