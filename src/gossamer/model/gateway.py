"""Gateway API Gateway (gateway.networking.k8s.io/v1): a standalone Envoy at the edge.

The schema follows the vendored CRD (deploy/crds/gateway-api, v1.5.1), including its
CEL rules, so a document `apply` takes the CRD takes too (tests/unit/k8s). What the
CRD takes but Gossamer cannot serve (another gatewayClassName, protocol UDP, a
certificate of another kind) is accepted and reported in the Gateway's status, as the
Gateway API asks (index/gateways.py), never refused and never a crash.

Settings of the Envoy itself are annotations on the Gateway (`ANNOTATIONS`), checked
at apply: they are per gateway, not per listener, and the Gateway API leaves them to
the implementation.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Literal

from pydantic import Field, field_validator, model_validator

from gossamer.model.httproute import HOSTNAME
from gossamer.model.meta import (
    DNS_SUBDOMAIN,
    GATEWAY_API_VERSION,
    GATEWAY_GROUP,
    Resource,
    Strict,
)

GATEWAY_CLASS = "gossamer"
# Envoy settings of a gateway: annotation -> (default, lowest, highest).
XFF_HOPS = "gateway.gossamer.dev/xff-num-trusted-hops"
MAX_HEADERS_KB = "gateway.gossamer.dev/max-request-headers-kb"
MAX_BODY_KB = "gateway.gossamer.dev/max-request-body-kb"
ANNOTATIONS: dict[str, tuple[int, int, int]] = {
    XFF_HOPS: (0, 0, 16),
    MAX_HEADERS_KB: (60, 1, 8192),
    # 1 MiB; at most 1 GiB (the gateway buffers a whole request body).
    MAX_BODY_KB: (1024, 1, 1024 * 1024),
}
_PROTOCOL = r"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$|[a-z0-9]([-a-z0-9]*[a-z0-9])?" \
            r"(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/[A-Za-z0-9]+$"
_GROUP = r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_KIND = r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$"
_NAMESPACE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# The protocols Gossamer serves; others are accepted and reported UnsupportedProtocol.
SUPPORTED_PROTOCOLS = ("HTTP", "HTTPS", "TLS", "TCP")


class TLSMode(str, Enum):
    TERMINATE = "Terminate"
    PASSTHROUGH = "Passthrough"


class SecretObjectReference(Strict):
    group: str = Field(default="", max_length=253, pattern=_GROUP)
    kind: str = Field(default="Secret", min_length=1, max_length=63, pattern=_KIND)
    name: str = Field(min_length=1, max_length=253)
    namespace: str | None = Field(default=None, min_length=1, max_length=63,
                                  pattern=_NAMESPACE)


class GatewayTLSConfig(Strict):
    mode: TLSMode = TLSMode.TERMINATE
    certificate_refs: list[SecretObjectReference] = Field(
        default_factory=list, alias="certificateRefs", max_length=64)
    options: dict[str, str] = Field(default_factory=dict, max_length=16)

    @field_validator("options")
    @classmethod
    def _options(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if len(value) > 4096:
                raise ValueError(f"{key}: at most 4096 characters")
        return v

    @model_validator(mode="after")
    def _refs(self) -> GatewayTLSConfig:
        if self.mode is TLSMode.TERMINATE and not self.certificate_refs and not self.options:
            raise ValueError("certificateRefs: certificateRefs or options must be specified "
                             "when mode is Terminate")
        return self


class FromNamespaces(str, Enum):
    ALL = "All"
    SELECTOR = "Selector"
    SAME = "Same"


class SelectorOperator(str, Enum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class LabelSelectorRequirement(Strict):
    key: str = Field(min_length=1, max_length=317)
    operator: SelectorOperator
    values: list[str] = Field(default_factory=list, max_length=64)

    @model_validator(mode="after")
    def _values(self) -> LabelSelectorRequirement:
        listed = self.operator in (SelectorOperator.IN, SelectorOperator.NOT_IN)
        if listed and not self.values:
            raise ValueError(f"values: required for operator {self.operator.value}")
        if not listed and self.values:
            raise ValueError(f"values: must be empty for operator {self.operator.value}")
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator is SelectorOperator.IN:
            return labels.get(self.key) in self.values
        if self.operator is SelectorOperator.NOT_IN:
            return labels.get(self.key) not in self.values
        return (self.key in labels) == (self.operator is SelectorOperator.EXISTS)


class LabelSelector(Strict):
    """Kubernetes' label selector: every matchLabels pair and every expression must
    hold (an empty selector selects everything)."""

    match_labels: dict[str, str] = Field(default_factory=dict, alias="matchLabels",
                                         max_length=64)
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, alias="matchExpressions", max_length=64)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels.items()) and all(
            e.matches(labels) for e in self.match_expressions)


class RouteNamespaces(Strict):
    from_: FromNamespaces = Field(default=FromNamespaces.SAME, alias="from")
    selector: LabelSelector | None = None

    @model_validator(mode="after")
    def _selector(self) -> RouteNamespaces:
        if self.from_ is FromNamespaces.SELECTOR and self.selector is None:
            raise ValueError("selector: required when from is Selector")
        return self


class RouteGroupKind(Strict):
    group: str = Field(default=GATEWAY_GROUP, max_length=253, pattern=_GROUP)
    kind: str = Field(min_length=1, max_length=63, pattern=_KIND)


class AllowedRoutes(Strict):
    namespaces: RouteNamespaces = Field(default_factory=RouteNamespaces)
    kinds: list[RouteGroupKind] = Field(default_factory=list, max_length=8)


class Listener(Strict):
    name: str = Field(min_length=1, max_length=253)
    hostname: str | None = Field(default=None, min_length=1, max_length=253)
    port: int = Field(ge=1, le=65535, strict=True)
    protocol: str = Field(min_length=1, max_length=255, pattern=_PROTOCOL)
    tls: GatewayTLSConfig | None = None
    allowed_routes: AllowedRoutes = Field(default_factory=AllowedRoutes, alias="allowedRoutes")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not DNS_SUBDOMAIN.match(v):
            raise ValueError("must be lowercase letters, digits, '-' and '.' (RFC 1123)")
        return v

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, v: str | None) -> str | None:
        if v is not None and not HOSTNAME.match(v):
            raise ValueError(f"{v!r} is not a valid hostname (a DNS name, or *. and one)")
        return v

    @model_validator(mode="after")
    def _by_protocol(self) -> Listener:
        """The CRD's CEL rules on one listener."""
        if self.protocol in ("HTTP", "TCP", "UDP") and self.tls is not None:
            raise ValueError(f"tls: must not be specified for protocol {self.protocol}")
        if self.protocol == "HTTPS":
            if self.tls is None:
                raise ValueError("tls: required for protocol HTTPS (its certificateRefs)")
            if self.tls.mode is not TLSMode.TERMINATE:
                raise ValueError("tls.mode: must be Terminate for protocol HTTPS")
        if self.protocol == "TLS" and self.tls is None:
            raise ValueError("tls: tls mode must be set for protocol TLS")
        if self.protocol in ("TCP", "UDP") and self.hostname:
            raise ValueError(f"hostname: must not be specified for protocol {self.protocol}")
        return self


class GatewayAddress(Strict):
    type: str = Field(default="IPAddress", min_length=1, max_length=253)
    value: str = Field(default="", max_length=253)


class ParametersReference(Strict):
    group: str = Field(max_length=253, pattern=_GROUP)
    kind: str = Field(min_length=1, max_length=63, pattern=_KIND)
    name: str = Field(min_length=1, max_length=253)


class GatewayInfrastructure(Strict):
    annotations: dict[str, str] = Field(default_factory=dict, max_length=8)
    labels: dict[str, str] = Field(default_factory=dict, max_length=8)
    parameters_ref: ParametersReference | None = Field(default=None, alias="parametersRef")


class GatewaySpec(Strict):
    gateway_class_name: str = Field(alias="gatewayClassName", min_length=1, max_length=253)
    listeners: list[Listener] = Field(min_length=1, max_length=64)
    addresses: list[GatewayAddress] = Field(default_factory=list, max_length=16)
    infrastructure: GatewayInfrastructure | None = None

    @model_validator(mode="after")
    def _unique(self) -> GatewaySpec:
        """The CRD's CEL rules across listeners."""
        names = [lis.name for lis in self.listeners]
        for i, name in enumerate(names):
            if names.index(name) != i:
                raise ValueError(f"listeners[{i}].name: Listener name must be unique "
                                 "within the Gateway")
        seen: set[tuple[int, str, str | None]] = set()
        for i, lis in enumerate(self.listeners):
            key = (lis.port, lis.protocol, lis.hostname)
            if key in seen:
                raise ValueError(f"listeners[{i}]: Combination of port, protocol and "
                                 "hostname must be unique for each listener")
            seen.add(key)
        return self


class Gateway(Resource):
    KIND = "Gateway"
    API_VERSIONS = (GATEWAY_API_VERSION, f"{GATEWAY_GROUP}/v1beta1")
    kind: Literal["Gateway"] = "Gateway"
    spec: GatewaySpec

    @model_validator(mode="after")
    def _annotations(self) -> Gateway:
        for key, (_, low, high) in ANNOTATIONS.items():
            value = self.metadata.annotations.get(key)
            if value is not None and not (value.isdigit() and low <= int(value) <= high):
                raise ValueError(f"metadata.annotations: {key} must be a whole number "
                                 f"from {low} to {high}")
        return self

    def setting(self, annotation: str) -> int:
        """An Envoy setting of this gateway: its annotation, else the default."""
        value = self.metadata.annotations.get(annotation)
        return int(value) if value is not None else ANNOTATIONS[annotation][0]
