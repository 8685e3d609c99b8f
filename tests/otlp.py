"""Shared by the tracing tests: an OTLP/gRPC trace collector on loopback, and the
Telemetry document that points the mesh's tracing at one."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

API = "mesh.gossamer.dev/v1alpha1"


class Recorded:
    """One exported span with the service.name of the resource that carried it."""

    def __init__(self, service: str, span: Span) -> None:
        self.service = service
        self.span = span
        self.trace = span.trace_id.hex()
        self.id = span.span_id.hex()
        self.parent = span.parent_span_id.hex()
        self.kind = span.kind
        self.text = json.dumps([str(a.value) for a in span.attributes])

    def __repr__(self) -> str:
        return (f"<{self.service} {Span.SpanKind.Name(self.kind)} {self.id} "
                f"parent={self.parent or '-'} trace={self.trace}>")


class OtlpReceiver:
    """An OTLP/gRPC trace collector on loopback."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[Recorded] = []
        self.exports = 0
        self.server = grpc.server(ThreadPoolExecutor(max_workers=4))
        handler = grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService",
            {"Export": grpc.unary_unary_rpc_method_handler(
                self._export, request_deserializer=ExportTraceServiceRequest.FromString,
                response_serializer=ExportTraceServiceResponse.SerializeToString)})
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _export(self, request: ExportTraceServiceRequest,
                context: grpc.ServicerContext) -> ExportTraceServiceResponse:
        got = []
        for rs in request.resource_spans:
            attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
            got += [Recorded(attrs.get("service.name", ""), span)
                    for ss in rs.scope_spans for span in ss.spans]
        with self._lock:
            self._spans += got
            self.exports += 1
        return ExportTraceServiceResponse()

    @property
    def spans(self) -> list[Recorded]:
        with self._lock:
            return list(self._spans)

    def trace_of(self, marker: str) -> list[Recorded]:
        """Every span of the trace(s) whose spans mention `marker` (a request path)."""
        spans = self.spans
        traces = {s.trace for s in spans if marker in s.text}
        return [s for s in spans if s.trace in traces]

    def close(self) -> None:
        self.server.stop(grace=None)


def open_receiver() -> Iterator[OtlpReceiver]:
    """A receiver for a fixture to yield from, closed however the test ends."""
    rec = OtlpReceiver()
    try:
        yield rec
    finally:
        rec.close()


def tracing_telemetry(name: str, namespace: str = "gossamer-system", *,
                      target: str | None = None, percent: float | None = None,
                      address: str | None = None) -> dict[str, Any]:
    tracing: dict[str, Any] = {}
    if percent is not None:
        tracing["samplingPercent"] = percent
    if address is not None:
        tracing["collector"] = {"address": address}
    spec: dict[str, Any] = {"tracing": tracing}
    if target is not None:
        spec["targetRef"] = {"kind": "Service", "name": target}
    return {"apiVersion": API, "kind": "Telemetry",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}
