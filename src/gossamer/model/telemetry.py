"""Telemetry: what the sidecars of a scope record about the requests they carry.

Scopes as for PeerAuthentication (model/policy.py): in `gossamer-system` without a
targetRef the whole mesh, elsewhere without one its namespace, with a targetRef the
Service's workloads. Only the most specific Telemetry takes effect (service >
namespace > mesh), whole: a Service's Telemetry without `accessLog` turns access
logs off for it even when its namespace's turns them on. One per scope: the first
by name; the others are reported `Accepted=False, reason Conflicted`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, StrictBool

from gossamer.model.meta import Resource, Strict
from gossamer.model.policy import TargetedSpec


class AccessLog(Strict):
    """One JSON line per request, inbound and outbound, in the sidecar's access log file."""

    enabled: StrictBool = True
    # Only requests answered with status >= 400, or that Envoy flagged (no healthy
    # upstream, timeout, overflow, reset...), whatever their status.
    errors_only: StrictBool = Field(default=False, alias="errorsOnly")


class TelemetrySpec(TargetedSpec):
    access_log: AccessLog | None = Field(default=None, alias="accessLog")


class Telemetry(Resource):
    KIND = "Telemetry"
    kind: Literal["Telemetry"] = "Telemetry"
    spec: TelemetrySpec
