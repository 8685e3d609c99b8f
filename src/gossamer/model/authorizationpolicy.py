"""AuthorizationPolicy: who may call a workload, and which requests, with Istio's semantics.

A rule matches when the request matches any of its `from` sources, any of its
`to` operations and every `when` condition (an absent list matches anything).
DENY policies are checked first; then, if any ALLOW policy applies to the
workload, the request must match one of its rules. So an ALLOW policy with no
rules denies everything it covers: the canonical default-deny resource.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from gossamer.contract.checks import DNS_LABEL
from gossamer.contract.spiffe import BadSpiffeId, SpiffeId, check_trust_domain
from gossamer.model.meta import HEADER_NAME, Resource, Strict
from gossamer.model.policy import TargetedSpec, check_path_pattern, check_pattern

MAX_ITEMS = 64
_METHOD = re.compile(r"^[A-Z][A-Z_-]{0,31}\Z")


class Action(str, Enum):
    ALLOW = "ALLOW"
    DENY = "DENY"


def check_principal(value: str) -> str:
    """`*`, a SPIFFE ID, or Istio's `<trust-domain>/ns/<ns>/sa/<account>`."""
    if value == "*":
        return value
    text = value if value.startswith("spiffe://") else f"spiffe://{value}"
    try:
        sid = SpiffeId.parse(text)
        check_trust_domain(sid.trust_domain)
    except (BadSpiffeId, ValueError) as exc:
        raise ValueError(
            f"{value!r} is not a principal: use '*', spiffe://<trust-domain>/ns/<ns>/sa/"
            "<account> or <trust-domain>/ns/<ns>/sa/<account>"
        ) from exc
    if not DNS_LABEL.match(sid.namespace) or not DNS_LABEL.match(sid.account):
        raise ValueError(f"{value!r}: the namespace and account must be DNS labels")
    return value


def principal_id(value: str) -> str:
    """The full SPIFFE ID a (non-`*`) principal names."""
    return value if value.startswith("spiffe://") else f"spiffe://{value}"


def check_namespace(value: str) -> str:
    if value != "*" and (not DNS_LABEL.match(value) or len(value) > 63):
        raise ValueError(f"{value!r} is not a namespace (a DNS label) or '*'")
    return value


def check_request_principal(value: str) -> str:
    """`*`, `<iss>/<sub>`, `<iss>/*` or `*/<sub>`; the subject follows the last '/'."""
    if value == "*":
        return value
    iss, sep, sub = value.rpartition("/")
    if not sep or not iss or not sub or len(value) > 1024:
        raise ValueError(
            f"{value!r} is not a request principal: use '*', '<issuer>/<subject>', "
            "'<issuer>/*' or '*/<subject>'"
        )
    for part in (iss, sub):
        if "*" in part and part != "*":
            raise ValueError(f"{value!r}: '*' may only stand for the whole issuer or subject")
    if iss == sub == "*":
        raise ValueError(f"{value!r}: write '*' for any request principal")
    return value


def check_method(value: str) -> str:
    if value != "*" and not _METHOD.match(value):
        raise ValueError(f"{value!r} is not an HTTP method: use uppercase, such as GET, or '*'")
    return value


def _port(value: object) -> object:
    """Istio writes ports as strings; take numbers and numeric strings alike."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 5:
        return int(value)
    return value


Principal = Annotated[str, AfterValidator(check_principal)]
Namespace = Annotated[str, AfterValidator(check_namespace)]
RequestPrincipal = Annotated[str, AfterValidator(check_request_principal)]
Method = Annotated[str, AfterValidator(check_method)]
PathPattern = Annotated[str, AfterValidator(check_path_pattern)]
Pattern = Annotated[str, AfterValidator(check_pattern)]


def _check_host_pattern(value: str) -> str:
    check_pattern(value, what="host", max_length=253)
    if any(c.isspace() or c in "/?#" for c in value):
        raise ValueError(f"{value!r}: a host has no spaces, '/', '?' or '#'")
    return value


HostPattern = Annotated[str, AfterValidator(_check_host_pattern)]
Port = Annotated[int, BeforeValidator(_port), Field(ge=1, le=65535, strict=True)]


class Source(Strict):
    principals: list[Principal] = Field(default_factory=list, max_length=MAX_ITEMS)
    not_principals: list[Principal] = Field(
        default_factory=list, alias="notPrincipals", max_length=MAX_ITEMS)
    request_principals: list[RequestPrincipal] = Field(
        default_factory=list, alias="requestPrincipals", max_length=MAX_ITEMS)
    not_request_principals: list[RequestPrincipal] = Field(
        default_factory=list, alias="notRequestPrincipals", max_length=MAX_ITEMS)
    namespaces: list[Namespace] = Field(default_factory=list, max_length=MAX_ITEMS)
    not_namespaces: list[Namespace] = Field(
        default_factory=list, alias="notNamespaces", max_length=MAX_ITEMS)

    @model_validator(mode="after")
    def _not_empty(self) -> Source:
        if not any((self.principals, self.not_principals, self.request_principals,
                    self.not_request_principals, self.namespaces, self.not_namespaces)):
            raise ValueError("a source needs at least one field (leave `from` out to match "
                             "any source)")
        return self


class Operation(Strict):
    ports: list[Port] = Field(default_factory=list, max_length=MAX_ITEMS)
    not_ports: list[Port] = Field(default_factory=list, alias="notPorts", max_length=MAX_ITEMS)
    methods: list[Method] = Field(default_factory=list, max_length=MAX_ITEMS)
    not_methods: list[Method] = Field(
        default_factory=list, alias="notMethods", max_length=MAX_ITEMS)
    paths: list[PathPattern] = Field(default_factory=list, max_length=MAX_ITEMS)
    not_paths: list[PathPattern] = Field(
        default_factory=list, alias="notPaths", max_length=MAX_ITEMS)
    # The request's host (Host / :authority, with or without its port), as Istio's:
    # on an egress gateway, which external hosts a caller may reach.
    hosts: list[HostPattern] = Field(default_factory=list, max_length=MAX_ITEMS)
    not_hosts: list[HostPattern] = Field(
        default_factory=list, alias="notHosts", max_length=MAX_ITEMS)

    @model_validator(mode="after")
    def _not_empty(self) -> Operation:
        if not any((self.ports, self.not_ports, self.methods, self.not_methods, self.paths,
                    self.not_paths, self.hosts, self.not_hosts)):
            raise ValueError("an operation needs at least one field (leave `to` out to match "
                             "any operation)")
        return self

    @property
    def http_only(self) -> bool:
        return bool(self.methods or self.not_methods or self.paths or self.not_paths
                    or self.hosts or self.not_hosts)


class From(Strict):
    source: Source


class To(Strict):
    operation: Operation


@dataclass(frozen=True)
class ConditionKey:
    """A parsed `when` key: its kind and, for headers and claims, what it names."""

    kind: str  # one of KEY_KINDS
    path: tuple[str, ...] = ()

    @property
    def http_only(self) -> bool:
        return self.kind.startswith("request.")


KEY_KINDS = ("source.principal", "source.namespace", "destination.port",
             "request.headers", "request.auth.principal", "request.auth.audiences",
             "request.auth.presenter", "request.auth.claims")
_HEADER_KEY = re.compile(r"^request\.headers\[([^\[\]]*)\]\Z")
_CLAIMS_KEY = re.compile(r"^request\.auth\.claims((?:\[[^\[\]]*\])+)\Z")


def parse_condition_key(key: str) -> ConditionKey:
    """ValueError names the supported keys when `key` is not one of them."""
    if m := _HEADER_KEY.match(key):
        name = m.group(1)
        if not HEADER_NAME.match(name) or len(name) > 256:
            raise ValueError(f"{name!r} is not a valid HTTP header name")
        return ConditionKey("request.headers", (name.lower(),))
    if m := _CLAIMS_KEY.match(key):
        parts = tuple(re.findall(r"\[([^\[\]]*)\]", m.group(1)))
        if any(not p.strip() for p in parts) or len(parts) > 8:
            raise ValueError("a claim name must not be empty: request.auth.claims[<name>], "
                             "request.auth.claims[<name>][<nested>]")
        return ConditionKey("request.auth.claims", parts)
    if key in KEY_KINDS and key not in ("request.headers", "request.auth.claims"):
        return ConditionKey(key)
    raise ValueError(
        f"unsupported key {key!r}: use request.headers[<name>], request.auth.claims[<name>], "
        "request.auth.principal, request.auth.audiences, request.auth.presenter, "
        "source.principal, source.namespace or destination.port"
    )


_VALUE_CHECK = {
    "source.principal": check_principal,
    "source.namespace": check_namespace,
    "request.auth.principal": check_request_principal,
}


def _check_value(kind: str, value: str) -> None:
    if kind == "destination.port":
        if not (value.isascii() and value.isdigit() and len(value) <= 10
                and 1 <= int(value) <= 65535):
            raise ValueError(f"{value[:20]!r} is not a port number (1-65535)")
        return
    _VALUE_CHECK.get(kind, check_pattern)(value)


class RuleCondition(Strict):
    key: str = Field(min_length=1, max_length=512)
    values: list[str] = Field(default_factory=list, max_length=MAX_ITEMS)
    not_values: list[str] = Field(default_factory=list, alias="notValues", max_length=MAX_ITEMS)

    @model_validator(mode="after")
    def _key_and_values(self) -> RuleCondition:
        try:
            parsed = parse_condition_key(self.key)
        except ValueError as exc:
            raise ValueError(f"key: {exc}") from exc
        if not self.values and not self.not_values:
            raise ValueError("values: a condition needs values or notValues")
        for field, items in (("values", self.values), ("notValues", self.not_values)):
            for i, value in enumerate(items):
                try:
                    _check_value(parsed.kind, value)
                except ValueError as exc:
                    raise ValueError(f"{field}[{i}]: {exc}") from exc
        return self

    @property
    def parsed_key(self) -> ConditionKey:
        return parse_condition_key(self.key)


class Rule(Strict):
    from_: list[From] = Field(default_factory=list, alias="from", max_length=MAX_ITEMS)
    to: list[To] = Field(default_factory=list, max_length=MAX_ITEMS)
    when: list[RuleCondition] = Field(default_factory=list, max_length=MAX_ITEMS)


class AuthorizationPolicySpec(TargetedSpec):
    action: Action = Action.ALLOW
    rules: list[Rule] = Field(default_factory=list, max_length=128)


class AuthorizationPolicy(Resource):
    KIND = "AuthorizationPolicy"
    kind: Literal["AuthorizationPolicy"] = "AuthorizationPolicy"
    spec: AuthorizationPolicySpec = Field(default_factory=AuthorizationPolicySpec)
