"""Workload: one registered instance of a service, reached at address:port."""

from __future__ import annotations

import ipaddress
from enum import Enum
from typing import Literal

from pydantic import Field, field_validator

from gossamer.model.meta import Resource, ServiceName, Strict


class Health(str, Enum):
    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"
    UNKNOWN = "Unknown"


class WorkloadSpec(Strict):
    # The service this instance runs as; its sidecar gets that service's view.
    service: ServiceName
    # Where the mesh reaches the instance: its sidecar's inbound listener.
    address: str
    port: int = Field(ge=1, le=65535, strict=True)
    # Where the sidecar forwards inbound traffic to the application.
    app_port: int | None = Field(default=None, alias="appPort", ge=1, le=65535, strict=True)
    # Only Healthy instances are endpoints; the agent's probe sets this.
    health: Health = Health.HEALTHY
    # The xDS node id of the sidecar that serves this workload, if any.
    proxy: str | None = None
    # Registrations made by an agent expire unless renewed within this many
    # seconds, so a crashed host cannot leave dead endpoints behind. 0 = never.
    ttl_seconds: int = Field(default=0, alias="ttlSeconds", ge=0, le=86400, strict=True)
    # The account part of the workload's SPIFFE identity
    # (spiffe://<trust-domain>/ns/<namespace>/sa/<account>); defaults to `service`.
    service_account: ServiceName | None = Field(default=None, alias="serviceAccount")

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        try:
            ipaddress.ip_address(v)
        except ValueError as exc:
            raise ValueError(f"{v!r} is not an IPv4 or IPv6 address") from exc
        return v


class Workload(Resource):
    KIND = "Workload"
    kind: Literal["Workload"] = "Workload"
    spec: WorkloadSpec

    @property
    def account(self) -> str:
        """The service account the workload runs as: its identity's last part."""
        return self.spec.service_account or self.spec.service
