"""Gateway API GRPCRoute, in the mesh (GAMMA) and at the edge.

A route attaches to a Service through `parentRefs`; on the Service's grpc and
http2 ports it replaces the default route for every caller in the mesh. A route
whose parent is a Gateway is served on its HTTP and HTTPS listeners (HTTP/2).
Matching is by gRPC service and method (the request path `/pkg.Service/Method`)
and by headers (gRPC metadata).
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Literal

from pydantic import Field, field_validator, model_validator

from gossamer.model.httproute import (
    MAX_MATCHES,
    BackendRef,
    FilterType,
    HeaderMatch,
    HeaderModifier,
    LocalObjectReference,
    ParentRef,
    RequestMirror,
    check_filter_config,
    check_filter_repeats,
    check_hostnames,
    check_rule_name,
    check_unique_parents,
    check_unique_rule_names,
)
from gossamer.model.meta import GATEWAY_API_VERSION, Resource, Strict
from gossamer.model.regex import check_re2

# Gateway API's patterns for an Exact method match.
GRPC_SERVICE = re.compile(r"^\.?[A-Za-z_][A-Za-z_0-9]*(\.[A-Za-z_][A-Za-z_0-9]*)*\Z")
GRPC_METHOD = re.compile(r"^[A-Za-z_][A-Za-z_0-9]*\Z")
# A regex for one path segment: a service or method a match leaves open.
ANY_SEGMENT = "[^/]+"
GRPC_FILTERS = (FilterType.REQUEST_HEADER_MODIFIER, FilterType.RESPONSE_HEADER_MODIFIER,
                FilterType.REQUEST_MIRROR, FilterType.EXTENSION_REF)


class MethodMatchType(str, Enum):
    EXACT = "Exact"
    REGULAR_EXPRESSION = "RegularExpression"


class MethodMatch(Strict):
    type: MethodMatchType = MethodMatchType.EXACT
    service: str | None = Field(default=None, max_length=1024)
    method: str | None = Field(default=None, max_length=1024)

    @model_validator(mode="after")
    def _value(self) -> MethodMatch:
        if not self.service and not self.method:
            raise ValueError("service: one or both of service and method must be given")
        for field, value, pattern in (("service", self.service, GRPC_SERVICE),
                                      ("method", self.method, GRPC_METHOD)):
            if not value:
                continue
            if self.type is MethodMatchType.REGULAR_EXPRESSION:
                try:
                    check_re2(value)
                except ValueError as exc:
                    raise ValueError(f"{field}: {exc}") from exc
            elif not pattern.match(value):
                raise ValueError(f"{field}: {value!r} is not a valid gRPC {field} name")
        regex = self.path_regex
        if regex is not None:
            try:  # Envoy compiles the two together, with the path around them
                check_re2(regex, max_length=None)
            except ValueError as exc:
                raise ValueError(f"{'service' if self.service else 'method'}: service "
                                 f"and method as one path regex: {exc}") from exc
        return self

    @property
    def path_regex(self) -> str | None:
        """The RE2 for the request path `/service/method` when the match is one (a regex
        match, or an exact method of any service); None for an exact path or prefix."""
        if self.type is MethodMatchType.EXACT:
            if self.service:
                return None
            return f"/{ANY_SEGMENT}/{re.escape(self.method or '')}"
        service = f"(?:{self.service})" if self.service else ANY_SEGMENT
        name = f"(?:{self.method})" if self.method else ANY_SEGMENT
        return f"/{service}/{name}"


class GRPCRouteMatch(Strict):
    method: MethodMatch | None = None
    headers: list[HeaderMatch] = Field(default_factory=list, max_length=16)

    @model_validator(mode="after")
    def _unique(self) -> GRPCRouteMatch:
        names = [h.name.lower() for h in self.headers]
        if len(names) != len(set(names)):
            raise ValueError("headers: each header name may be matched only once")
        return self


class GRPCRouteFilter(Strict):
    type: FilterType
    request_header_modifier: HeaderModifier | None = Field(
        default=None, alias="requestHeaderModifier"
    )
    response_header_modifier: HeaderModifier | None = Field(
        default=None, alias="responseHeaderModifier"
    )
    request_mirror: RequestMirror | None = Field(default=None, alias="requestMirror")
    extension_ref: LocalObjectReference | None = Field(default=None, alias="extensionRef")

    @model_validator(mode="after")
    def _matching_config(self) -> GRPCRouteFilter:
        if self.type not in GRPC_FILTERS:
            raise ValueError(f"type: {self.type.value} is not a GRPCRoute filter; use one of "
                             + ", ".join(f.value for f in GRPC_FILTERS[:3]))
        check_filter_config(self.type, {
            "requestHeaderModifier": self.request_header_modifier,
            "responseHeaderModifier": self.response_header_modifier,
            "requestMirror": self.request_mirror,
            "extensionRef": self.extension_ref,
        })
        return self


class GRPCRouteRule(Strict):
    name: str | None = Field(default=None, max_length=253)
    matches: list[GRPCRouteMatch] = Field(default_factory=list, max_length=8)
    filters: list[GRPCRouteFilter] = Field(default_factory=list, max_length=16)
    backend_refs: list[BackendRef] = Field(default_factory=list, alias="backendRefs",
                                           max_length=16)

    _name = field_validator("name")(check_rule_name)

    @property
    def mirrors(self) -> list[RequestMirror]:
        return [f.request_mirror for f in self.filters if f.request_mirror is not None]

    @model_validator(mode="after")
    def _filters(self) -> GRPCRouteRule:
        check_filter_repeats([f.type for f in self.filters])
        return self


class GRPCRouteSpec(Strict):
    parent_refs: list[ParentRef] = Field(alias="parentRefs", min_length=1, max_length=32)
    hostnames: list[str] = Field(default_factory=list, max_length=16)
    rules: list[GRPCRouteRule] = Field(default_factory=lambda: [GRPCRouteRule()],
                                       max_length=16)

    _hostnames = field_validator("hostnames")(check_hostnames)

    @model_validator(mode="after")
    def _rules(self) -> GRPCRouteSpec:
        check_unique_parents(self.parent_refs)
        check_unique_rule_names([r.name for r in self.rules])
        if sum(len(r.matches) for r in self.rules) > MAX_MATCHES:
            raise ValueError(f"rules: at most {MAX_MATCHES} matches in all rules together")
        return self


class GRPCRoute(Resource):
    KIND = "GRPCRoute"
    API_VERSIONS = (GATEWAY_API_VERSION,)
    kind: Literal["GRPCRoute"] = "GRPCRoute"
    spec: GRPCRouteSpec
