"""Telemetry: what sidecars record about the requests they carry: access logs and
traces.

Scopes as for PeerAuthentication (model/policy.py): in the mesh root namespace
without a targetRef it covers the whole mesh, elsewhere without one its
namespace, with a targetRef one Service. Each field is taken from the most
specific scope that sets it, so a Service may change only its sampling rate and
keep the mesh's collector and access logs. One Telemetry per scope counts: the
first by name.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import Field, StrictBool, field_validator

from gossamer.model.meta import Resource, Strict
from gossamer.model.policy import TargetedSpec

_HOSTNAME = re.compile(
    r"^[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?)*\Z")


def split_address(value: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port`; the host a DNS name or an IP address."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit() and len(port) <= 10):
        raise ValueError(f"{value!r}: must be host:port (e.g. otel-collector:4317)")
    number = int(port)
    if not 0 < number < 65536:
        raise ValueError(f"{value!r}: port must be 1-65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise ValueError(f"{value!r}: {host!r} is not an IPv6 address") from exc
    elif not _HOSTNAME.match(host) or len(host) > 253:
        raise ValueError(f"{value!r}: {host!r} is not a host name or IPv4 address")
    return host, number


class Collector(Strict):
    """An OpenTelemetry collector's OTLP/gRPC endpoint (plaintext HTTP/2)."""

    address: str

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        split_address(value)
        return value


class Tracing(Strict):
    # Share of the requests a trace starts at that are traced; later hops
    # follow the caller's decision (the traceparent sampled flag).
    sampling_percent: float | None = Field(default=None, alias="samplingPercent", ge=0, le=100,
                                          strict=True)
    collector: Collector | None = None


class AccessLog(Strict):
    """One JSON line per request, inbound and outbound, in the sidecar's access log file."""

    enabled: StrictBool = True
    # Only requests answered with status >= 400, or that Envoy flagged (no healthy
    # upstream, timeout, overflow, reset...), whatever their status.
    errors_only: StrictBool = Field(default=False, alias="errorsOnly")


class TelemetrySpec(TargetedSpec):
    access_log: AccessLog | None = Field(default=None, alias="accessLog")
    tracing: Tracing | None = None


class Telemetry(Resource):
    KIND = "Telemetry"
    kind: Literal["Telemetry"] = "Telemetry"
    spec: TelemetrySpec
