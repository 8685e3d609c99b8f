"""RateLimitPolicy: how many requests one Service accepts per window.

It attaches to exactly one Service (`spec.targetRef`) and is enforced by that
Service's own inbound sidecars (or to a Gateway, enforced by its replicas), after
authentication and authorization (denied requests consume no quota) and before the
request reaches the application.

- `local`: a token bucket in each sidecar (Envoy local_ratelimit); N sidecars
  together accept up to N times the limit.
- `global`: one counter per rule (and key value) shared by every sidecar of the
  Service, kept by the control plane, which serves Envoy's rate-limit gRPC API.

Only one policy may target a Service: the first by (namespace, name) wins, the
others are reported `Accepted=False, reason Conflicted`.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from gossamer.contract.checks import DNS_LABEL
from gossamer.model.duration import parse_duration_ms
from gossamer.model.httproute import HeaderMatch, PathMatch, PathMatchType, check_unique_headers
from gossamer.model.meta import GATEWAY_GROUP, MESH_GROUP, Resource, Strict, check_method
from gossamer.model.policy import EdgeTargetRef, TargetedSpec, TargetRef
from gossamer.model.regex import check_re2
from gossamer.model.resiliencepolicy import check_header

_QUERY = r"(\?.*)?"


def path_regex(kind: PathMatchType, value: str) -> str:
    """A full-match RE2 for `:path`, which carries the query string too: what a rule's
    path match becomes in Envoy's rate limit actions (a header match on `:path`)."""
    if kind is PathMatchType.REGULAR_EXPRESSION:
        return f"(?:{value}){_QUERY}"
    if kind is PathMatchType.EXACT:
        return re.escape(value) + _QUERY
    # Gateway prefixes match whole segments: /foo matches /foo and /foo/bar, not /foobar.
    return re.escape(value.rstrip("/")) + r"(/[^?]*)?" + _QUERY


UINT32_MAX = 4_294_967_295
# Envoy's local_ratelimit refuses a fill_interval shorter than this.
MIN_LOCAL_WINDOW_MS = 50
# Fixed windows of the global limit are aligned to multiples of `per` since the epoch.
MIN_GLOBAL_WINDOW_MS = 1_000
MAX_RULES = 16


def check_window(value: str) -> str:
    if parse_duration_ms(value) == 0:
        raise ValueError(f"{value!r}: must be longer than 0")
    return value


Window = Annotated[str, AfterValidator(check_window)]
Requests = Annotated[int, Field(ge=1, le=UINT32_MAX, strict=True)]


class LocalLimit(Strict):
    """A token bucket of `requests + burst` tokens, refilled with `requests` per `per`."""

    requests: Requests
    per: Window
    burst: int = Field(default=0, ge=0, le=UINT32_MAX, strict=True)

    @model_validator(mode="after")
    def _window(self) -> LocalLimit:
        if parse_duration_ms(self.per) < MIN_LOCAL_WINDOW_MS:
            raise ValueError(f"per: must be at least {MIN_LOCAL_WINDOW_MS}ms")
        if self.requests + self.burst > UINT32_MAX:
            raise ValueError(f"burst: requests + burst must not exceed {UINT32_MAX}")
        return self

    @property
    def per_ms(self) -> int:
        return parse_duration_ms(self.per)


class RateLimitMatch(Strict):
    """Which requests a global rule counts (all of the given conditions must hold)."""

    path: PathMatch | None = None
    method: str | None = None
    headers: list[HeaderMatch] = Field(default_factory=list, max_length=16)

    _method = field_validator("method")(check_method)

    @model_validator(mode="after")
    def _unique(self) -> RateLimitMatch:
        check_unique_headers(self.headers)
        if self.path is not None and self.path.type is PathMatchType.REGULAR_EXPRESSION:
            try:  # the regex Envoy compiles is the path regex with the query added
                check_re2(path_regex(self.path.type, self.path.value), max_length=None)
            except ValueError as exc:
                raise ValueError(f"path.value: {exc}") from exc
        return self


class KeyType(str, Enum):
    CALLER = "caller"
    HEADER = "header"
    PATH = "path"
    # The client's address as the gateway sees it (its trusted X-Forwarded-For hops).
    CLIENT_IP = "clientIP"


class RateLimitKey(Strict):
    """What separates counters: the caller's SPIFFE identity, a header's value, the path."""

    type: KeyType
    header: Annotated[str, AfterValidator(check_header)] | None = None

    @model_validator(mode="after")
    def _header(self) -> RateLimitKey:
        if self.type is KeyType.HEADER and self.header is None:
            raise ValueError("header: required with type header (the header name)")
        if self.type is not KeyType.HEADER and self.header is not None:
            raise ValueError(f"header: only used with type header, not {self.type.value}")
        if self.header is not None and self.header.startswith(":"):
            raise ValueError("header: pseudo-headers cannot be keys; use type path")
        return self


class GlobalRule(Strict):
    match: RateLimitMatch | None = None
    # None: one counter for the whole Service.
    key: RateLimitKey | None = None
    requests: Requests
    per: Window

    @model_validator(mode="after")
    def _window(self) -> GlobalRule:
        if parse_duration_ms(self.per) < MIN_GLOBAL_WINDOW_MS:
            raise ValueError(f"per: must be at least {MIN_GLOBAL_WINDOW_MS // 1000}s")
        return self

    @property
    def per_ms(self) -> int:
        return parse_duration_ms(self.per)


class GlobalLimit(Strict):
    rules: list[GlobalRule] = Field(min_length=1, max_length=MAX_RULES)


EXTERNAL_KIND = "ExternalService"


class RateLimitTargetRef(EdgeTargetRef):
    """A Service, a Gateway, or an ExternalService: the calls to the outside are
    limited at its egress gateway, or without one at each caller's sidecar."""

    @model_validator(mode="after")
    def _kind(self) -> RateLimitTargetRef:
        if self.kind == EXTERNAL_KIND and self.group in ("", MESH_GROUP):
            if not DNS_LABEL.match(self.name) or len(self.name) > 63:
                raise ValueError("name: must be an ExternalService name (a DNS label)")
        elif not (self.kind == "Gateway" and self.group == GATEWAY_GROUP):
            TargetRef.model_validate({"group": self.group, "kind": self.kind,
                                      "name": self.name})
        return self

    @property
    def external(self) -> bool:
        return self.kind == EXTERNAL_KIND


class RateLimitPolicySpec(TargetedSpec):
    # A Service, a Gateway (docs/gateways.md#policies-at-the-edge) or an ExternalService.
    target_ref: RateLimitTargetRef = Field(alias="targetRef")  # type: ignore[assignment]
    local: LocalLimit | None = None
    global_: GlobalLimit | None = Field(default=None, alias="global")

    @model_validator(mode="after")
    def _some_limit(self) -> RateLimitPolicySpec:
        if self.local is None and self.global_ is None:
            raise ValueError("a RateLimitPolicy needs local, global or both")
        rules = self.global_.rules if self.global_ is not None else []
        for i, rule in enumerate(rules):
            if rule.key is not None and rule.key.type is KeyType.CLIENT_IP \
                    and not self.target_ref.is_gateway:
                # Inside the mesh the peer is the caller's sidecar, not a client.
                raise ValueError(f"global.rules[{i}].key.type: clientIP is only for a policy "
                                 "that targets a Gateway; in the mesh use caller")
        return self


class RateLimitPolicy(Resource):
    KIND = "RateLimitPolicy"
    kind: Literal["RateLimitPolicy"] = "RateLimitPolicy"
    spec: RateLimitPolicySpec
