"""Access logs: which Telemetry covers a proxy, and the access loggers of its HCMs.

Two loggers on every inbound and outbound HTTP connection manager:

- the file log a Telemetry turns on: one JSON object per line, per request, into the
  file the agent named in the node metadata (`access_log`, in the agent's workdir);
  a proxy whose agent names no file writes none;
- the failure log, always on: the requests that failed (status >= 400 or any response
  flag) streamed over gRPC to the control plane (explain/logservice.py), which keeps
  the last few thousand for `gossamer explain`. Successful requests cost a filter
  check, nothing more.
"""

from __future__ import annotations

from typing import Any

from envoy.extensions.access_loggers.file.v3 import file_pb2  # noqa: F401
from envoy.extensions.access_loggers.grpc.v3 import als_pb2  # noqa: F401

from gossamer.contract.names import INBOUND_LOG, LISTENER_TAG, OUTBOUND_LOG, XDS_CLUSTER
from gossamer.contract.node import NodeMetadata, Upstream
from gossamer.index import MeshIndex, SvcKey
from gossamer.model.policy import Scope, policy_scope, target_name
from gossamer.model.telemetry import AccessLog, Telemetry
from gossamer.translate.names import upstream_listener
from gossamer.translate.policies import covers

FILE_ACCESS_LOG = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
GRPC_ACCESS_LOG = ("type.googleapis.com/envoy.extensions.access_loggers.grpc.v3."
                   "HttpGrpcAccessLogConfig")
# How long a failed request may wait in a sidecar's buffer before it is sent.
FAILURE_LOG_FLUSH = "0.5s"

# Envoy command operators (docs/observability.md says what each means).
_REQUEST_FIELDS: dict[str, str] = {
    "start_time": "%START_TIME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "authority": "%REQ(:AUTHORITY)%",
    "protocol": "%PROTOCOL%",
    "status": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "response_code_details": "%RESPONSE_CODE_DETAILS%",
    "connection_termination_details": "%CONNECTION_TERMINATION_DETAILS%",
    "duration_ms": "%DURATION%",
    "upstream_service_time_ms": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "upstream_host": "%UPSTREAM_HOST%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    "route_name": "%ROUTE_NAME%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "user_agent": "%REQ(USER-AGENT)%",
}
_ERROR_STATUS = 400


def telemetry_for(index: MeshIndex, namespace: str,
                  services: frozenset[SvcKey]) -> Telemetry | None:
    """The most specific Telemetry covering a proxy that sets `accessLog` (service >
    namespace > mesh): each Telemetry field comes from the most specific scope that
    sets it, so a Service's Telemetry that only changes tracing keeps the mesh's access
    logs. Among several at one scope (a workload several Services select), the first
    by name."""
    seen: set[tuple[str, str | None]] = set()
    covering: list[Telemetry] = []
    for t in index.telemetries:  # in (namespace, name) order
        slot = (t.metadata.namespace, target_name(t))
        if slot not in seen:  # the index reports the others as Conflicted
            seen.add(slot)
            if t.spec.access_log is not None and covers(t, namespace, services):
                covering.append(t)
    for scope in (Scope.SERVICE, Scope.NAMESPACE, Scope.MESH):
        for t in covering:
            if policy_scope(t) is scope:
                return t
    return None


def _errors_only() -> dict[str, Any]:
    # A response flag with any status (a 200 cut short by a reset is still an error).
    return {"orFilter": {"filters": [
        {"statusCodeFilter": {"comparison": {"op": "GE", "value": {
            "defaultValue": _ERROR_STATUS,
            "runtimeKey": "gossamer.access_log.error_status"}}}},
        {"responseFlagFilter": {}},
    ]}}


def failure_log(direction: str, listener: str | None = None) -> dict[str, Any]:
    """The gRPC logger of failed requests to the control plane, for `gossamer explain`.

    `listener`: an upstream listener's name (`upstream|PORT||SVC.NS`), sent with each
    entry (the `listener` custom tag): a request to a local upstream port has the host
    `127.0.0.1:LOCALPORT`, which names no Service, and a request that failed before
    the router chose a cluster (an injected abort) has no cluster either."""
    common: dict[str, Any] = {
        "logName": INBOUND_LOG if direction == "inbound" else OUTBOUND_LOG,
        "transportApiVersion": "V3",
        "grpcService": {"envoyGrpc": {"clusterName": XDS_CLUSTER}},
        "bufferFlushInterval": FAILURE_LOG_FLUSH,
    }
    if listener is not None:
        common["customTags"] = [{"tag": LISTENER_TAG, "literal": {"value": listener}}]
    return {
        "name": "envoy.access_loggers.http_grpc",
        "filter": _errors_only(),
        "typedConfig": {"@type": GRPC_ACCESS_LOG, "commonConfig": common},
    }


def access_log(path: str | None, settings: AccessLog | None,
               labels: dict[str, str]) -> tuple[dict[str, Any], ...]:
    """An HCM's `accessLog` list: empty when logging is off or the agent named no file.

    `labels`: constant mesh labels of this HCM (direction, source and destination as
    far as the listener knows them).
    """
    if path is None or settings is None or not settings.enabled:
        return ()
    log: dict[str, Any] = {
        "name": "envoy.access_loggers.file",
        "typedConfig": {"@type": FILE_ACCESS_LOG, "path": path, "logFormat": {
            "jsonFormat": {**labels, **_REQUEST_FIELDS}}},
    }
    if settings.errors_only:
        log["filter"] = _errors_only()
    return (log,)


def proxy_access_log(index: MeshIndex, proxy: NodeMetadata, services: frozenset[SvcKey],
                     direction: str, upstream: Upstream | None = None
                     ) -> tuple[dict[str, Any], ...]:
    """The access loggers of one of `proxy`'s HCMs: `direction` "inbound" (the proxy is
    the destination; the caller is known by its certificate's SPIFFE ID) or "outbound"
    (the proxy is the source; `upstream` the one Service of a per-upstream listener,
    else the destination is the request's cluster, `upstream_cluster`)."""
    telemetry = telemetry_for(index, proxy.namespace, services)
    settings = telemetry.spec.access_log if telemetry else None
    own = {"namespace": proxy.namespace, "service": proxy.service, "workload": proxy.workload}
    labels = {"direction": direction}
    listener = None
    if direction == "inbound":
        labels |= {f"destination_{k}": v for k, v in own.items()}
        labels["source_principal"] = "%DOWNSTREAM_PEER_URI_SAN%"
    else:
        labels |= {f"source_{k}": v for k, v in own.items()}
        if upstream is not None:
            labels |= {"destination_namespace": upstream.namespace,
                       "destination_service": upstream.service,
                       "destination_port": str(upstream.port)}
            listener = upstream_listener(upstream.namespace, upstream.service, upstream.port)
    return (*access_log(proxy.access_log, settings, labels),
            failure_log(direction, listener))
