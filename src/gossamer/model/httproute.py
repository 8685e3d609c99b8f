"""Gateway API HTTPRoute as the GAMMA initiative uses it for a mesh.

A route attaches to a Service through `parentRefs` and replaces that
service's default route for every caller in the mesh.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Literal

from pydantic import Field, field_validator, model_validator

from gossamer.contract.checks import DNS_LABEL
from gossamer.model.cors import CORS
from gossamer.model.duration import parse_duration_ms
from gossamer.model.meta import (
    DNS_SUBDOMAIN,
    GATEWAY_API_VERSION,
    GATEWAY_GROUP,
    Resource,
    Strict,
    check_header_name,
    check_header_value,
    check_method,
)
from gossamer.model.regex import check_re2

HOSTNAME = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
# The Gateway API's namespace of a reference (a DNS label).
NAMESPACE_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# Gateway API: the matches of all rules of one route, together.
MAX_MATCHES = 128


def check_unique_headers(headers: list[HeaderMatch]) -> None:
    """Matching one header twice would be an AND of two values: never true."""
    names = [h.name.lower() for h in headers]
    if len(names) != len(set(names)):
        raise ValueError("headers: each header name may be matched only once")


class ParentRef(Strict):
    """A Service (GAMMA: the route applies to the mesh's callers of it), or a Gateway
    (group gateway.networking.k8s.io, kind Gateway: the route is served at the edge).
    Without group and kind a parent is a Service, unlike the Gateway API's default."""

    group: str = ""
    kind: str = "Service"
    name: str = Field(min_length=1, max_length=63)
    namespace: str | None = Field(default=None, min_length=1, max_length=63,
                                  pattern=NAMESPACE_PATTERN)
    port: int | None = Field(default=None, ge=1, le=65535, strict=True)
    section_name: str | None = Field(default=None, alias="sectionName", min_length=1,
                                     max_length=253)

    @property
    def is_gateway(self) -> bool:
        return self.kind == "Gateway"

    @model_validator(mode="after")
    def _is_service(self) -> ParentRef:
        if self.kind == "Gateway" and self.group == GATEWAY_GROUP:
            if not DNS_SUBDOMAIN.match(self.name):
                raise ValueError("name: must be a Gateway name (RFC 1123)")
            if self.section_name is not None and not DNS_SUBDOMAIN.match(self.section_name):
                raise ValueError("sectionName: must be a listener name (RFC 1123)")
            return self
        if self.kind != "Service" or self.group not in ("", "core"):
            raise ValueError(
                "kind: a route's parent is a Service (group \"\", kind Service) or a "
                f"Gateway (group {GATEWAY_GROUP}, kind Gateway); "
                f"got group {self.group!r} kind {self.kind!r}"
            )
        if not DNS_LABEL.match(self.name):
            raise ValueError("name: must be a Service name (a DNS label)")
        return self


def service_parents(parents: list[ParentRef]) -> list[ParentRef]:
    """The parentRefs that name Services (the mesh's side of a route)."""
    return [p for p in parents if not p.is_gateway]


class PathMatchType(str, Enum):
    EXACT = "Exact"
    PATH_PREFIX = "PathPrefix"
    REGULAR_EXPRESSION = "RegularExpression"


class PathMatch(Strict):
    type: PathMatchType = PathMatchType.PATH_PREFIX
    value: str = Field(default="/", max_length=1024)

    @model_validator(mode="after")
    def _value(self) -> PathMatch:
        if self.type is PathMatchType.REGULAR_EXPRESSION:
            try:
                check_re2(self.value)
            except ValueError as exc:
                raise ValueError(f"value: {exc}") from exc
            return self
        if not self.value.startswith("/"):
            raise ValueError("value: an Exact or PathPrefix path must start with '/'")
        if "//" in self.value or "/./" in self.value or "/../" in self.value:
            raise ValueError("value: path must be normalized (no '//', '/./' or '/../')")
        if "?" in self.value or "#" in self.value:
            raise ValueError("value: path must not contain a query ('?') or fragment ('#')")
        return self


class ValueMatchType(str, Enum):
    EXACT = "Exact"
    REGULAR_EXPRESSION = "RegularExpression"


class _ValueMatch(Strict):
    """A name/value match whose value is a RE2 pattern when type says so."""

    type: ValueMatchType = ValueMatchType.EXACT
    value: str

    @model_validator(mode="after")
    def _regex(self) -> _ValueMatch:
        if self.type is ValueMatchType.REGULAR_EXPRESSION:
            try:
                check_re2(self.value)
            except ValueError as exc:
                raise ValueError(f"value: {exc}") from exc
        return self


class HeaderMatch(_ValueMatch):
    name: str
    value: str = Field(min_length=1, max_length=4096)  # as the Gateway API CRDs say

    _n = field_validator("name")(check_header_name)


class QueryParamMatch(_ValueMatch):
    name: str = Field(min_length=1, max_length=256)
    value: str = Field(min_length=1, max_length=1024)  # as the Gateway API CRDs say


class RouteMatch(Strict):
    path: PathMatch | None = None
    headers: list[HeaderMatch] = Field(default_factory=list, max_length=16)
    query_params: list[QueryParamMatch] = Field(
        default_factory=list, alias="queryParams", max_length=16
    )
    method: str | None = None

    _method = field_validator("method")(check_method)

    @model_validator(mode="after")
    def _unique(self) -> RouteMatch:
        check_unique_headers(self.headers)
        qnames = [q.name for q in self.query_params]
        if len(qnames) != len(set(qnames)):
            raise ValueError("queryParams: each parameter may be matched only once")
        return self


# The Gateway API's HTTPHeaderValue: printable ASCII words, single spaces or tabs between.
_HEADER_VALUE = re.compile(r"^[!-~]+([\t ]?[!-~]+)*\Z")


def _gateway_header_value(v: str) -> str:
    if not _HEADER_VALUE.match(v):
        raise ValueError("must be printable ASCII, not empty, without leading, trailing or "
                         "doubled spaces (the Gateway API's header value)")
    return v


class HeaderValue(Strict):
    name: str
    # Literal text: `%` is not Envoy's format syntax here (translation escapes it).
    value: str = Field(min_length=1, max_length=4096)

    _n = field_validator("name")(check_header_name)
    _v = field_validator("value")(check_header_value)
    _g = field_validator("value")(_gateway_header_value)


class HeaderModifier(Strict):
    set: list[HeaderValue] = Field(default_factory=list, max_length=16)
    add: list[HeaderValue] = Field(default_factory=list, max_length=16)
    remove: list[str] = Field(default_factory=list, max_length=16)

    @field_validator("remove")
    @classmethod
    def _remove(cls, v: list[str]) -> list[str]:
        for name in v:
            check_header_name(name)
        return v

    @model_validator(mode="after")
    def _no_conflicts(self) -> HeaderModifier:
        names = [h.name.lower() for h in self.set] + [h.name.lower() for h in self.add]
        names += [n.lower() for n in self.remove]
        if len(names) != len(set(names)):
            raise ValueError("a header name may appear only once across set, add and remove")
        for n in names:
            if n.startswith(":") or n == "host":
                raise ValueError(f"header {n!r} cannot be modified; use URLRewrite.hostname")
        return self


class PathModifierType(str, Enum):
    REPLACE_FULL_PATH = "ReplaceFullPath"
    REPLACE_PREFIX_MATCH = "ReplacePrefixMatch"


class PathModifier(Strict):
    type: PathModifierType
    replace_full_path: str | None = Field(default=None, alias="replaceFullPath", max_length=1024)
    replace_prefix_match: str | None = Field(
        default=None, alias="replacePrefixMatch", max_length=1024
    )

    @model_validator(mode="after")
    def _one_of(self) -> PathModifier:
        full, prefix = self.replace_full_path, self.replace_prefix_match
        if self.type is PathModifierType.REPLACE_FULL_PATH:
            if full is None or prefix is not None:
                raise ValueError("type ReplaceFullPath needs replaceFullPath and nothing else")
            value = full
        else:
            if prefix is None or full is not None:
                raise ValueError(
                    "type ReplacePrefixMatch needs replacePrefixMatch and nothing else"
                )
            value = prefix
        if not value.startswith("/"):
            raise ValueError("the replacement path must start with '/'")
        try:
            check_header_value(value)
        except ValueError as exc:
            field = "replaceFullPath" if full is not None else "replacePrefixMatch"
            raise ValueError(f"{field}: {exc}") from exc
        return self


class URLRewrite(Strict):
    hostname: str | None = Field(default=None, max_length=253)
    path: PathModifier | None = None

    @field_validator("hostname")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        if v is not None and (not HOSTNAME.match(v) or v.startswith("*")):
            raise ValueError(f"{v!r} is not a valid hostname")
        return v


class RequestRedirect(Strict):
    scheme: Literal["http", "https"] | None = None
    hostname: str | None = Field(default=None, max_length=253)
    path: PathModifier | None = None
    port: int | None = Field(default=None, ge=1, le=65535, strict=True)
    status_code: Literal[301, 302, 303, 307, 308] = Field(default=302, alias="statusCode")

    @field_validator("hostname")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        if v is not None and (not HOSTNAME.match(v) or v.startswith("*")):
            raise ValueError(f"{v!r} is not a valid hostname")
        return v


class BackendObjectRef(Strict):
    """A Service and port, as RequestMirror names its target (no weight)."""

    group: str = ""
    kind: str = "Service"
    name: str = Field(min_length=1, max_length=63)
    namespace: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535, strict=True)

    @model_validator(mode="after")
    def _is_service(self) -> BackendObjectRef:
        if self.kind != "Service" or self.group not in ("", "core"):
            raise ValueError(f"kind: a backend is a Service; got {self.group!r}/{self.kind!r}")
        if not DNS_LABEL.match(self.name):
            raise ValueError("name: must be a Service name (a DNS label)")
        return self


class Fraction(Strict):
    numerator: int = Field(ge=0, le=1_000_000, strict=True)
    denominator: int = Field(default=100, ge=1, le=1_000_000, strict=True)

    @model_validator(mode="after")
    def _at_most_one(self) -> Fraction:
        if self.numerator > self.denominator:
            raise ValueError("numerator: must not be greater than denominator")
        return self


class RequestMirror(Strict):
    """Copies of requests go to `backendRef` as well; its responses are discarded."""

    backend_ref: BackendObjectRef = Field(alias="backendRef")
    percent: int | None = Field(default=None, ge=0, le=100, strict=True)
    fraction: Fraction | None = None

    @model_validator(mode="after")
    def _one_share(self) -> RequestMirror:
        if self.percent is not None and self.fraction is not None:
            raise ValueError("percent: percent and fraction are mutually exclusive")
        return self

    @property
    def per_million(self) -> int:
        """The mirrored share in millionths (all requests when neither field is set)."""
        if self.fraction is not None:
            return round(self.fraction.numerator * 1_000_000 / self.fraction.denominator)
        return (100 if self.percent is None else self.percent) * 10_000


class LocalObjectReference(Strict):
    group: str
    kind: str
    name: str = Field(min_length=1, max_length=253)


class FilterType(str, Enum):
    REQUEST_HEADER_MODIFIER = "RequestHeaderModifier"
    RESPONSE_HEADER_MODIFIER = "ResponseHeaderModifier"
    URL_REWRITE = "URLRewrite"
    REQUEST_REDIRECT = "RequestRedirect"
    REQUEST_MIRROR = "RequestMirror"
    CORS = "CORS"
    EXTENSION_REF = "ExtensionRef"


_FILTER_FIELD = {
    FilterType.REQUEST_HEADER_MODIFIER: "requestHeaderModifier",
    FilterType.RESPONSE_HEADER_MODIFIER: "responseHeaderModifier",
    FilterType.URL_REWRITE: "urlRewrite",
    FilterType.REQUEST_REDIRECT: "requestRedirect",
    FilterType.REQUEST_MIRROR: "requestMirror",
    FilterType.CORS: "cors",
    FilterType.EXTENSION_REF: "extensionRef",
}
BACKEND_FILTERS = (FilterType.REQUEST_HEADER_MODIFIER, FilterType.RESPONSE_HEADER_MODIFIER)
EXTENSION_REF_UNSUPPORTED = (
    "type: ExtensionRef filters are not supported by Gossamer (no extension "
    "resources exist); use the built-in filter types")


class RouteFilter(Strict):
    type: FilterType
    request_header_modifier: HeaderModifier | None = Field(
        default=None, alias="requestHeaderModifier"
    )
    response_header_modifier: HeaderModifier | None = Field(
        default=None, alias="responseHeaderModifier"
    )
    url_rewrite: URLRewrite | None = Field(default=None, alias="urlRewrite")
    request_redirect: RequestRedirect | None = Field(default=None, alias="requestRedirect")
    request_mirror: RequestMirror | None = Field(default=None, alias="requestMirror")
    cors: CORS | None = None
    extension_ref: LocalObjectReference | None = Field(default=None, alias="extensionRef")

    @model_validator(mode="after")
    def _matching_config(self) -> RouteFilter:
        check_filter_config(self.type, {
            "requestHeaderModifier": self.request_header_modifier,
            "responseHeaderModifier": self.response_header_modifier,
            "urlRewrite": self.url_rewrite,
            "requestRedirect": self.request_redirect,
            "requestMirror": self.request_mirror,
            "cors": self.cors,
            "extensionRef": self.extension_ref,
        })
        return self


def check_filter_config(kind: FilterType, given: dict[str, object]) -> None:
    """A filter carries the config of its own type and nothing else."""
    if kind is FilterType.EXTENSION_REF:
        raise ValueError(EXTENSION_REF_UNSUPPORTED)
    want = _FILTER_FIELD[kind]
    if given.get(want) is None:
        raise ValueError(f"type {kind.value} needs the field {want}")
    extra = [k for k, v in given.items() if v is not None and k != want]
    if extra:
        raise ValueError(f"type {kind.value} does not take {', '.join(extra)}")


class BackendRef(Strict):
    group: str = ""
    kind: str = "Service"
    name: str = Field(min_length=1, max_length=63)
    namespace: str | None = Field(default=None, min_length=1, max_length=63,
                                  pattern=NAMESPACE_PATTERN)
    port: int | None = Field(default=None, ge=1, le=65535, strict=True)
    weight: int = Field(default=1, ge=0, le=1_000_000, strict=True)
    # Applied only to requests sent to this backend (HTTPRoute and GRPCRoute; a
    # TCPRoute refuses them). None, not [], so stored documents stay as written.
    filters: list[RouteFilter] | None = Field(default=None, max_length=16)

    @model_validator(mode="after")
    def _is_service(self) -> BackendRef:
        if self.kind != "Service" or self.group not in ("", "core"):
            raise ValueError(f"kind: a backend is a Service; got {self.group!r}/{self.kind!r}")
        if not DNS_LABEL.match(self.name):
            raise ValueError("name: must be a Service name (a DNS label)")
        kinds = [f.type for f in self.filters or ()]
        check_filter_repeats(kinds)
        other = sorted({k.value for k in kinds} - {k.value for k in BACKEND_FILTERS})
        if other:
            raise ValueError(f"filters: a backend takes only RequestHeaderModifier and "
                             f"ResponseHeaderModifier; got {', '.join(other)}")
        return self


class RouteTimeouts(Strict):
    # The whole request, retries included, as the caller sees it.
    request: str | None = None
    # One attempt to the backend.
    backend_request: str | None = Field(default=None, alias="backendRequest")

    @field_validator("request", "backend_request")
    @classmethod
    def _duration(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration_ms(v)
        return v

    @model_validator(mode="after")
    def _order(self) -> RouteTimeouts:
        if self.request and self.backend_request:
            req, backend = parse_duration_ms(self.request), parse_duration_ms(self.backend_request)
            if req and backend > req:
                raise ValueError("backendRequest must not be longer than request")
        return self

    @property
    def request_ms(self) -> int | None:
        return None if self.request is None else parse_duration_ms(self.request)

    @property
    def backend_request_ms(self) -> int | None:
        return None if self.backend_request is None else parse_duration_ms(self.backend_request)


def check_rule_name(v: str | None) -> str | None:
    """Gateway API SectionName: how policies and status name one rule of a route."""
    if v is not None and not DNS_SUBDOMAIN.match(v):
        raise ValueError(f"{v!r} is not a valid rule name: lowercase letters, digits, '-' "
                         "and '.', starting and ending with a letter or digit")
    return v


def check_unique_rule_names(names: list[str | None]) -> None:
    given = [n for n in names if n is not None]
    for n in given:
        if given.count(n) > 1:
            raise ValueError(f"rules: rule name {n!r} is used more than once in this route")


def check_unique_parents(parents: list[ParentRef]) -> None:
    """Gateway API: a route names each parent (and port or section) once."""
    seen: set[tuple[str, str | None, str, int | None, str | None]] = set()
    for i, p in enumerate(parents):
        key = (p.kind, p.namespace, p.name, p.port, p.section_name)
        if key in seen:
            raise ValueError(f"parentRefs[{i}]: {p.kind} {p.name!r} is already a parent "
                             "with the same namespace, port and sectionName")
        seen.add(key)


def check_hostnames(v: list[str]) -> list[str]:
    for h in v:
        if not HOSTNAME.match(h):
            raise ValueError(f"{h!r} is not a valid hostname")
    return v


def check_filter_repeats(kinds: list[FilterType]) -> None:
    """Every filter type at most once per rule, except RequestMirror."""
    for kind in sorted(set(kinds), key=lambda k: k.value):
        if kind is not FilterType.REQUEST_MIRROR and kinds.count(kind) > 1:
            raise ValueError(f"filters: {kind.value} may appear only once in a rule")


class RouteRule(Strict):
    name: str | None = Field(default=None, max_length=253)
    matches: list[RouteMatch] = Field(default_factory=list, max_length=64)
    filters: list[RouteFilter] = Field(default_factory=list, max_length=16)
    backend_refs: list[BackendRef] = Field(default_factory=list, alias="backendRefs", max_length=16)
    timeouts: RouteTimeouts | None = None

    _name = field_validator("name")(check_rule_name)

    @property
    def mirrors(self) -> list[RequestMirror]:
        return [f.request_mirror for f in self.filters if f.request_mirror is not None]

    @model_validator(mode="after")
    def _filters(self) -> RouteRule:
        kinds = [f.type for f in self.filters]
        check_filter_repeats(kinds)
        if FilterType.REQUEST_REDIRECT in kinds:
            if FilterType.URL_REWRITE in kinds:
                raise ValueError("filters: RequestRedirect and URLRewrite cannot be combined")
            if self.backend_refs:
                raise ValueError("backendRefs: a rule with RequestRedirect has no backends")
            if FilterType.REQUEST_MIRROR in kinds:
                raise ValueError("filters: a redirected request is not forwarded, so "
                                 "RequestMirror cannot be combined with RequestRedirect")
        for f in self.filters:
            mod = f.url_rewrite.path if f.url_rewrite else None
            mod = mod or (f.request_redirect.path if f.request_redirect else None)
            if mod and mod.type is PathModifierType.REPLACE_PREFIX_MATCH:
                for m in self.matches:
                    if m.path is None or m.path.type is not PathMatchType.PATH_PREFIX:
                        raise ValueError(
                            "filters: ReplacePrefixMatch needs every match of the rule "
                            "to have a PathPrefix path"
                        )
        return self


class HTTPRouteSpec(Strict):
    parent_refs: list[ParentRef] = Field(alias="parentRefs", min_length=1, max_length=32)
    hostnames: list[str] = Field(default_factory=list, max_length=16)
    rules: list[RouteRule] = Field(default_factory=lambda: [RouteRule()], max_length=16)

    _hostnames = field_validator("hostnames")(check_hostnames)

    @model_validator(mode="after")
    def _rules(self) -> HTTPRouteSpec:
        check_unique_parents(self.parent_refs)
        check_unique_rule_names([r.name for r in self.rules])
        if sum(len(r.matches) for r in self.rules) > MAX_MATCHES:
            raise ValueError(f"rules: at most {MAX_MATCHES} matches in all rules together")
        return self


class HTTPRoute(Resource):
    KIND = "HTTPRoute"
    API_VERSIONS = (GATEWAY_API_VERSION, "gateway.networking.k8s.io/v1beta1")
    kind: Literal["HTTPRoute"] = "HTTPRoute"
    spec: HTTPRouteSpec
