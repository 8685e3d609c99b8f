"""Envoy's gRPC access-log service (`envoy.service.accesslog.v3.AccessLogService`),
served on the control plane's gRPC port next to ADS, receiving the failed requests
every sidecar logs (translate/telemetry.py) into `RecentFailures`.

Envoy opens one stream per logger and worker and names itself (node and log name)
in the first message only. Entries are kept only for a node that is connected
over xDS now (an authenticated stream): the endpoint takes no credentials of its
own, as Envoy has none to send that would not sit in every proxy's config (see
docs/security.md), so this keeps unknown senders out of the record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import grpc
import grpc.aio
from envoy.service.accesslog.v3 import als_pb2
from prometheus_client import CollectorRegistry, Counter

from gossamer.explain.recent import RecentFailures
from gossamer.explain.records import Reporter, from_entry

log = logging.getLogger(__name__)

SERVICE: Final = "envoy.service.accesslog.v3.AccessLogService"
METHOD: Final = "StreamAccessLogs"


class AccessLogService:
    def __init__(self, recent: RecentFailures, reporter: Callable[[str], Reporter | None],
                 registry: CollectorRegistry | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """`reporter`: the connected proxy of a node id, None when there is none."""
        self.recent = recent
        self._reporter = reporter
        self._clock = clock
        registry = registry if registry is not None else CollectorRegistry()
        self.received = Counter("gossamer_failed_requests_logged",
                                "failed requests the sidecars reported (for explain)",
                                ["direction"], registry=registry)
        self.dropped = Counter("gossamer_failed_requests_dropped",
                               "access-log entries from a node not connected over xDS",
                               registry=registry)

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(SERVICE, {
            METHOD: grpc.stream_unary_rpc_method_handler(
                self._stream,
                request_deserializer=als_pb2.StreamAccessLogsMessage.FromString,
                response_serializer=als_pb2.StreamAccessLogsResponse.SerializeToString),
        })

    async def _stream(self, messages: AsyncIterator[als_pb2.StreamAccessLogsMessage],
                      context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await self.consume(messages)
        return als_pb2.StreamAccessLogsResponse()

    async def consume(self, messages: AsyncIterator[als_pb2.StreamAccessLogsMessage]) -> None:
        node_id, log_name = "", ""
        async for message in messages:
            if message.HasField("identifier"):
                node_id = message.identifier.node.id
                log_name = message.identifier.log_name
            self.take(node_id, log_name, message)

    def take(self, node_id: str, log_name: str,
             message: als_pb2.StreamAccessLogsMessage) -> None:
        entries = message.http_logs.log_entry
        if not entries:
            return
        reporter = self._reporter(node_id)
        if reporter is None:
            self.dropped.inc(len(entries))
            log.debug("%d access-log entries from unknown node %r dropped", len(entries),
                      node_id)
            return
        now = self._clock()
        logged = [from_entry(e, log_name, reporter, now) for e in entries]
        self.recent.add(logged)
        for entry in logged:
            self.received.labels(entry.direction).inc()
