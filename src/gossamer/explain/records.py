"""One failed request as a sidecar's access log reported it, in plain Python.

Sidecars stream the access-log entries of their failed requests (status >= 400, or
any response flag) to the control plane over Envoy's gRPC access-log service; see
translate/telemetry.py for the logger and explain/logservice.py for the receiver.
`from_entry` turns one `HTTPAccessLogEntry` into a `LoggedRequest`, keeping only
what an explanation needs. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final

from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2

from gossamer.contract.names import INBOUND_LOG, LISTENER_TAG

# ResponseFlags field -> (Envoy's short code, what it means in plain words).
FLAGS: Final[dict[str, tuple[str, str]]] = {
    "failed_local_healthcheck": ("LH", "the local health check failed"),
    "no_healthy_upstream": ("UH", "no healthy upstream instance"),
    "upstream_request_timeout": ("UT", "the upstream request timed out"),
    "local_reset": ("LR", "the connection was reset locally"),
    "upstream_remote_reset": ("UR", "the upstream reset the connection"),
    "upstream_connection_failure": ("UF", "connecting to the upstream failed"),
    "upstream_connection_termination": ("UC", "the upstream closed the connection"),
    "upstream_overflow": ("UO", "a circuit breaker was full (upstream overflow)"),
    "no_route_found": ("NR", "no route matched"),
    "delay_injected": ("DI", "a fault delay was injected"),
    "fault_injected": ("FI", "a fault abort was injected"),
    "rate_limited": ("RL", "rate limited"),
    "unauthorized_details": ("UAEX", "denied by an external authorizer"),
    "rate_limit_service_error": ("RLSE", "the rate-limit service failed"),
    "downstream_connection_termination": ("DC", "the caller closed the connection"),
    "upstream_retry_limit_exceeded": ("URX", "retries were exhausted"),
    "stream_idle_timeout": ("SI", "the stream was idle too long"),
    "invalid_envoy_request_headers": ("IH", "invalid x-envoy-* request headers"),
    "downstream_protocol_error": ("DPE", "the caller broke the HTTP protocol"),
    "upstream_max_stream_duration_reached": ("UMSDR", "the upstream stream ran too long"),
    "response_from_cache_filter": ("RFCF", "answered from cache"),
    "no_filter_config_found": ("NFCF", "a filter had no configuration"),
    "duration_timeout": ("DT", "the request ran longer than its maximum duration"),
    "upstream_protocol_error": ("UPE", "the upstream broke the HTTP protocol"),
    "no_cluster_found": ("NC", "the route's cluster does not exist"),
    "overload_manager": ("OM", "the proxy was overloaded"),
    "dns_resolution_failure": ("DF", "DNS resolution failed"),
    "downstream_remote_reset": ("DR", "the caller reset the stream"),
}


@dataclass(frozen=True)
class Reporter:
    """The proxy whose log this is."""

    node_id: str
    namespace: str
    service: str
    workload: str
    gateway: str = ""  # the ingress Gateway this proxy runs (`gossamer gateway`), if any


@dataclass(frozen=True)
class LoggedRequest:
    received_at: float  # when the control plane got it (Unix seconds)
    start_time: float  # when the proxy saw the request start (Unix seconds)
    direction: str  # "inbound" (the reporter is the callee) or "outbound" (the caller)
    reporter: Reporter
    request_id: str
    method: str
    authority: str
    path: str
    status: int  # 0: no response was sent (the caller went away, a reset)
    details: str  # Envoy's response code details: who produced the status and why
    flags: tuple[str, ...]  # ResponseFlags field names
    route_name: str
    upstream_cluster: str
    upstream_host: str
    upstream_failure: str  # upstream transport failure reason (TLS errors...)
    attempts: int  # upstream attempts (1 + retries); 0 when none was made
    duration_ms: float
    peer_principal: str  # the caller's URI SAN (inbound with mTLS)
    termination: str  # connection termination details
    listener: str = ""  # the upstream listener it came through, `upstream|PORT||SVC.NS`

    @property
    def listener_service(self) -> tuple[str, str] | None:
        """(namespace, name) of the Service its upstream listener serves, if it came
        through one: that listener's one Service is the one the caller addressed."""
        if not self.listener.startswith("upstream|"):
            return None
        name, _, ns = self.listener.rsplit("|", 1)[-1].partition(".")
        return (ns, name) if ns else None

    @property
    def codes(self) -> list[str]:
        return [FLAGS[f][0] for f in self.flags if f in FLAGS]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["flags"] = self.codes
        return out


def _address(addr: Any) -> str:
    sock = addr.socket_address
    return f"{sock.address}:{sock.port_value}" if sock.address else ""


def _flags(flags: accesslog_pb2.ResponseFlags) -> tuple[str, ...]:
    return tuple(f.name for f, value in flags.ListFields()
                 if f.name in FLAGS and value is True)


def _principal(common: accesslog_pb2.AccessLogCommon) -> str:
    if not common.HasField("tls_properties"):
        return ""
    sans = common.tls_properties.peer_certificate_properties.subject_alt_name
    return next((s.uri for s in sans if s.uri), "")


def from_entry(entry: accesslog_pb2.HTTPAccessLogEntry, log_name: str, reporter: Reporter,
               received_at: float) -> LoggedRequest:
    common, req, resp = entry.common_properties, entry.request, entry.response
    duration = common.duration.ToMilliseconds() if common.HasField("duration") else (
        common.time_to_last_downstream_tx_byte.ToMilliseconds())
    return LoggedRequest(
        received_at=received_at,
        start_time=common.start_time.ToMilliseconds() / 1000.0,
        direction="inbound" if log_name == INBOUND_LOG else "outbound",
        reporter=reporter,
        request_id=req.request_id,
        method=base_pb2.RequestMethod.Name(req.request_method)
        if req.request_method else "",
        authority=req.authority,
        path=req.original_path or req.path,
        status=resp.response_code.value,
        details=resp.response_code_details,
        flags=_flags(common.response_flags),
        route_name=common.route_name,
        upstream_cluster=common.upstream_cluster,
        upstream_host=_address(common.upstream_remote_address),
        upstream_failure=common.upstream_transport_failure_reason,
        attempts=common.upstream_request_attempt_count,
        duration_ms=float(duration),
        peer_principal=_principal(common),
        termination=common.connection_termination_details,
        listener=common.custom_tags.get(LISTENER_TAG, ""),
    )
