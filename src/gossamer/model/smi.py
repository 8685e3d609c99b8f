"""The SMI APIs as resources: TrafficSplit (split.smi-spec.io/v1alpha4), TrafficTarget
(access.smi-spec.io/v1alpha3), HTTPRouteGroup and TCPRoute (specs.smi-spec.io/v1alpha4),
with the fields of the SMI specification and of smi-sdk-go's types.

They are accepted as they are and mapped onto native resources by `gossamer.smi`
(docs/smi.md). What no mapping could use is refused here, at apply, with the field:
a UDPRoute rule, subjects that are not ServiceAccounts, a destination in another
namespace, a split whose root is one of its own backends. What depends on other
resources (a missing HTTPRouteGroup, a path regex an AuthorizationPolicy cannot
match) is refused by the mapping.

SMI's TCPRoute has the kind name of the Gateway API's TCPRoute; the registry tells
them apart by apiVersion, and stores and names this one `TCPRoute.specs.smi-spec.io`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from gossamer.model.meta import HEADER_NAME, METHODS, Resource, ResourceKey, ServiceName, Strict
from gossamer.model.regex import check_re2

SPLIT_API_VERSION = "split.smi-spec.io/v1alpha4"
ACCESS_API_VERSION = "access.smi-spec.io/v1alpha3"
SPECS_GROUP = "specs.smi-spec.io"
SPECS_API_VERSION = f"{SPECS_GROUP}/v1alpha4"
SMI_TCPROUTE = f"TCPRoute.{SPECS_GROUP}"


def _check_regex(value: str) -> str:
    check_re2(value)
    return value


Regex = Annotated[str, AfterValidator(_check_regex)]


class GroupRef(Strict):
    """corev1.TypedLocalObjectReference: an HTTPRouteGroup in the split's namespace."""

    api_group: str | None = Field(default=None, alias="apiGroup")
    kind: Literal["HTTPRouteGroup"]
    name: str = Field(min_length=1, max_length=253)

    @field_validator("api_group")
    @classmethod
    def _group(cls, v: str | None) -> str | None:
        if v not in (None, "", SPECS_GROUP):
            raise ValueError(f"an HTTPRouteGroup is in group {SPECS_GROUP}, not {v!r}")
        return v


class TrafficSplitBackend(Strict):
    service: ServiceName
    # Weights, not percentages: 1000 and 500 send a third to the second backend.
    weight: int = Field(ge=0, le=1_000_000, strict=True)


class TrafficSplitSpec(Strict):
    # The root (apex) Service clients call, in the split's namespace.
    service: ServiceName
    backends: list[TrafficSplitBackend] = Field(min_length=1, max_length=16)
    matches: list[GroupRef] = Field(default_factory=list, max_length=16)

    @model_validator(mode="after")
    def _backends(self) -> TrafficSplitSpec:
        names = [b.service for b in self.backends]
        for i, name in enumerate(names):
            if name == self.service:
                raise ValueError(f"backends[{i}].service: a split cannot send to its root "
                                 f"Service {name!r} (SMI: TrafficSplits are not "
                                 "self-referential)")
            if names.index(name) != i:
                raise ValueError(f"backends[{i}].service: {name!r} is listed twice")
        return self


class TrafficSplit(Resource):
    KIND = "TrafficSplit"
    API_VERSIONS = (SPLIT_API_VERSION,)
    kind: Literal["TrafficSplit"] = "TrafficSplit"
    spec: TrafficSplitSpec


class Subject(Strict):
    """IdentityBindingSubject: a ServiceAccount, whose workloads' SPIFFE identity is
    `ns/<namespace>/sa/<name>`."""

    kind: str
    name: ServiceName
    namespace: ServiceName | None = None

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if v != "ServiceAccount":
            raise ValueError(f"{v!r}: only ServiceAccount subjects can be mapped (they are "
                             "the workloads' identities)")
        return v


class TrafficTargetRule(Strict):
    kind: Literal["HTTPRouteGroup", "TCPRoute"]
    name: str = Field(min_length=1, max_length=253)
    # Names of the HTTPRouteGroup's matches; none: all of them.
    matches: list[str] = Field(default_factory=list, max_length=64)

    @model_validator(mode="after")
    def _matches(self) -> TrafficTargetRule:
        if self.kind == "TCPRoute" and self.matches:
            raise ValueError("matches: a TCPRoute rule has no named matches")
        return self


class TrafficTargetSpec(Strict):
    destination: Subject
    sources: list[Subject] = Field(min_length=1, max_length=64)
    rules: list[TrafficTargetRule] = Field(min_length=1, max_length=16)


class TrafficTarget(Resource):
    KIND = "TrafficTarget"
    API_VERSIONS = (ACCESS_API_VERSION,)
    kind: Literal["TrafficTarget"] = "TrafficTarget"
    spec: TrafficTargetSpec

    @model_validator(mode="after")
    def _same_namespace(self) -> TrafficTarget:
        ns = self.spec.destination.namespace
        if ns is not None and ns != self.metadata.namespace:
            raise ValueError(f"spec.destination.namespace: {ns!r} is not the TrafficTarget's "
                             f"namespace {self.metadata.namespace!r}; a TrafficTarget grants "
                             "access to its own namespace's workloads")
        return self


def _check_header(name: str) -> str:
    if not HEADER_NAME.match(name) or len(name) > 256:
        raise ValueError(f"{name!r} is not a valid HTTP header name")
    return name


class HTTPMatch(Strict):
    name: str = Field(min_length=1, max_length=253)
    # "*" or HTTP methods (RFC 7231); none: any method.
    methods: list[str] = Field(default_factory=list, max_length=10)
    # Matched from the start of the path (SMI anchors it with `^`, not at the end).
    path_regex: Regex | None = Field(default=None, alias="pathRegex", max_length=1024)
    # Header name -> a regex its value must match (all of them: AND).
    headers: dict[str, Regex] = Field(default_factory=dict, max_length=16)

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        for m in v:
            if m != "*" and m not in METHODS:
                raise ValueError(f"{m!r} is not '*' or an HTTP method ({', '.join(METHODS)})")
        return v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            _check_header(name)
        if len({n.lower() for n in v}) != len(v):
            raise ValueError("a header name is given twice (names are case-insensitive)")
        return v


class HTTPRouteGroupSpec(Strict):
    matches: list[HTTPMatch] = Field(min_length=1, max_length=64)

    @model_validator(mode="after")
    def _unique(self) -> HTTPRouteGroupSpec:
        names = [m.name for m in self.matches]
        for i, name in enumerate(names):
            if names.index(name) != i:
                raise ValueError(f"matches[{i}].name: {name!r} is used twice (a match's name "
                                 "is its key)")
        return self


class HTTPRouteGroup(Resource):
    KIND = "HTTPRouteGroup"
    API_VERSIONS = (SPECS_API_VERSION,)
    kind: Literal["HTTPRouteGroup"] = "HTTPRouteGroup"
    spec: HTTPRouteGroupSpec


class TCPMatch(Strict):
    name: str | None = Field(default=None, max_length=253)
    # None or empty: every port of the Service.
    ports: list[Annotated[int, Field(ge=1, le=65535, strict=True)]] = Field(
        default_factory=list, max_length=64)


class SmiTCPRouteSpec(Strict):
    matches: TCPMatch


class SmiTCPRoute(Resource):
    """SMI's TCPRoute: the ports a TrafficTarget allows (not a Gateway API TCPRoute)."""

    KIND = SMI_TCPROUTE
    API_VERSIONS = (SPECS_API_VERSION,)
    kind: Literal["TCPRoute"] = "TCPRoute"
    spec: SmiTCPRouteSpec

    @property
    def key(self) -> ResourceKey:
        return ResourceKey(self.KIND, self.metadata.namespace, self.metadata.name)


SMI_KINDS: tuple[type[Resource], ...] = (TrafficSplit, TrafficTarget, HTTPRouteGroup,
                                         SmiTCPRoute)
