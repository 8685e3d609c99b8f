"""Service: a named set of workloads reachable on logical ports."""

from __future__ import annotations

import ipaddress
from enum import Enum
from typing import Literal

from pydantic import Field, field_validator, model_validator

from gossamer.model.meta import DNS_LABEL, Resource, Strict, check_labels


class Protocol(str, Enum):
    HTTP = "http"
    HTTP2 = "http2"
    GRPC = "grpc"
    TCP = "tcp"

    @property
    def is_http(self) -> bool:
        return self is not Protocol.TCP

    @property
    def is_h2(self) -> bool:
        """The app speaks HTTP/2."""
        return self in (Protocol.HTTP2, Protocol.GRPC)

    @property
    def mesh_h2(self) -> bool:
        """Sidecars carry this port's traffic to each other over HTTP/2, whatever the
        app speaks: many requests share one connection (one TLS handshake), and the
        callee's sidecar speaks the app's protocol to it."""
        return self.is_http


def check_virtual_ip(v: str) -> str:
    """A unicast IPv4 address that capture can redirect: not loopback (the capture
    rules leave loopback destinations alone), not 0.0.0.0, multicast or broadcast."""
    try:
        ip = ipaddress.IPv4Address(v)
    except ValueError as exc:
        raise ValueError(f"{v!r} is not an IPv4 address (a.b.c.d)") from exc
    if ip.is_loopback or ip.is_unspecified or ip.is_multicast or ip.is_link_local \
            or ip == ipaddress.IPv4Address("255.255.255.255"):
        raise ValueError(f"{v!r} cannot be a virtual IP: loopback, link-local, multicast, "
                         "0.0.0.0 and 255.255.255.255 are never redirected to the sidecar")
    if str(ip) != v:
        raise ValueError(f"{v!r}: write the address in its plain form, {ip}")
    return v


class ServicePort(Strict):
    port: int = Field(ge=1, le=65535, strict=True)
    protocol: Protocol = Protocol.HTTP
    name: str | None = Field(default=None, max_length=63)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not DNS_LABEL.match(v):
            raise ValueError("must be a DNS label: lowercase letters, digits and '-'")
        return v


class ServiceSpec(Strict):
    # Workloads whose labels contain all of these belong to the service. Empty
    # selects the workloads registered with `spec.service` equal to this name.
    selector: dict[str, str] = Field(default_factory=dict)
    ports: list[ServicePort] = Field(min_length=1, max_length=32)
    # The address capturing sidecars resolve the Service's names to (mesh DNS) and
    # route by; None: one the control plane allocates from its --vip-range.
    virtual_ip: str | None = Field(default=None, alias="virtualIP")

    @field_validator("virtual_ip")
    @classmethod
    def _virtual_ip(cls, v: str | None) -> str | None:
        return None if v is None else check_virtual_ip(v)

    @field_validator("selector")
    @classmethod
    def _selector(cls, v: dict[str, str]) -> dict[str, str]:
        return check_labels(v)

    @model_validator(mode="after")
    def _unique_ports(self) -> ServiceSpec:
        seen: set[int] = set()
        for p in self.ports:
            if p.port in seen:
                raise ValueError(f"ports: port {p.port} is listed twice")
            seen.add(p.port)
        return self


class Service(Resource):
    KIND = "Service"
    kind: Literal["Service"] = "Service"
    spec: ServiceSpec

    @model_validator(mode="after")
    def _service_name_is_dns_label(self) -> Service:
        if not DNS_LABEL.match(self.metadata.name) or len(self.metadata.name) > 63:
            raise ValueError("metadata.name: a Service name must be a DNS label (no dots)")
        return self

    def port(self, number: int) -> ServicePort | None:
        return next((p for p in self.spec.ports if p.port == number), None)
