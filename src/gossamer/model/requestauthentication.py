"""RequestAuthentication: which JWTs a workload accepts (Istio semantics).

A request without a token passes (AuthorizationPolicy decides whether one is
required, with `requestPrincipals: ["*"]`); a request with a token that is not
valid for any rule (bad signature, expired, unknown issuer, wrong audience) is
rejected with 401 before any authorization policy runs.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, field_validator, model_validator

from gossamer.model.duration import parse_duration_ms
from gossamer.model.httproute import HOSTNAME
from gossamer.model.jwks import check_usable_key
from gossamer.model.meta import HEADER_NAME, Resource, Strict, check_header_value
from gossamer.model.policy import EdgeTargetRef, TargetedSpec

_CLAIM = re.compile(r"^[^\s]{1,256}\Z")
# Headers the sidecar must own: a JWT rule may not write (or read a token from) these.
_RESERVED = {"host", "content-length", "transfer-encoding", "connection", "te", "upgrade"}


def _header_name(v: str) -> str:
    if not HEADER_NAME.match(v) or len(v) > 256:
        raise ValueError(f"{v!r} is not a valid HTTP header name")
    if v.lower() in _RESERVED:
        raise ValueError(f"header {v!r} cannot be used here")
    return v


HeaderName = Annotated[str, AfterValidator(_header_name)]


@dataclass(frozen=True)
class JwksUri:
    """A parsed http(s) URL of a JWKS document; Envoy needs a cluster for its host."""

    scheme: str
    host: str
    port: int
    is_ip: bool


def parse_jwks_uri(uri: str) -> JwksUri:
    """ValueError says what is wrong with the URL."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{uri!r} is not an http:// or https:// URL")
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise ValueError(f"{uri!r}: no user info or fragment in a JWKS URL")
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise ValueError(f"{uri!r}: bad port") from exc
    try:
        ipaddress.ip_address(host)
        is_ip = True
    except ValueError:
        is_ip = False
        if not HOSTNAME.match(host) or host.startswith("*"):
            raise ValueError(f"{uri!r}: {host!r} is not a host name or IP address") from None
    return JwksUri(parts.scheme, host, port, is_ip)


def check_jwks(text: str) -> str:
    """An inline JWKS: a JSON object with a non-empty `keys` list of JWKs, one of
    them at least a key Envoy can use."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list) or not doc["keys"]:
        raise ValueError('a JWKS is a JSON object with a non-empty "keys" list')
    for i, key in enumerate(doc["keys"]):
        if not isinstance(key, dict) or not isinstance(key.get("kty"), str):
            raise ValueError(f'keys[{i}] is not a JWK (an object with "kty")')
    check_usable_key(doc["keys"])
    return text


class ClaimToHeader(Strict):
    header: HeaderName
    claim: str

    @field_validator("claim")
    @classmethod
    def _claim(cls, v: str) -> str:
        if not _CLAIM.match(v):
            raise ValueError("a claim name is 1-256 characters without spaces")
        return v


class TokenHeader(Strict):
    name: HeaderName
    # Envoy's HTTP_HEADER_VALUE rule: a NUL, CR or LF here was a NACK of the listener.
    prefix: Annotated[str, AfterValidator(check_header_value)] = Field(default="",
                                                                        max_length=64)


class JwtRule(Strict):
    issuer: str = Field(min_length=1, max_length=1024)
    audiences: list[str] = Field(default_factory=list, max_length=64)
    jwks: str | None = Field(default=None, max_length=65536)
    jwks_uri: str | None = Field(default=None, alias="jwksUri", max_length=2048)
    # How long the fetch of jwksUri may take.
    timeout: str = "5s"
    forward_original_token: bool = Field(default=False, alias="forwardOriginalToken",
                                         strict=True)
    output_claim_to_headers: list[ClaimToHeader] = Field(
        default_factory=list, alias="outputClaimToHeaders", max_length=32)
    output_payload_to_header: HeaderName | None = Field(
        default=None, alias="outputPayloadToHeader")
    from_headers: list[TokenHeader] = Field(
        default_factory=list, alias="fromHeaders", max_length=8)
    from_params: list[str] = Field(default_factory=list, alias="fromParams", max_length=8)

    @field_validator("audiences")
    @classmethod
    def _audiences(cls, v: list[str]) -> list[str]:
        if any(not a or len(a) > 1024 for a in v):
            raise ValueError("an audience is 1-1024 characters")
        return v

    @field_validator("jwks")
    @classmethod
    def _jwks(cls, v: str | None) -> str | None:
        return None if v is None else check_jwks(v)

    @field_validator("jwks_uri")
    @classmethod
    def _jwks_uri(cls, v: str | None) -> str | None:
        if v is not None:
            parse_jwks_uri(v)
        return v

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: str) -> str:
        if not parse_duration_ms(v):
            raise ValueError("the JWKS fetch timeout must be longer than 0s")
        return v

    @field_validator("from_params")
    @classmethod
    def _params(cls, v: list[str]) -> list[str]:
        if any(not _CLAIM.match(p) for p in v):
            raise ValueError("a query parameter name is 1-256 characters without spaces")
        return v

    @model_validator(mode="after")
    def _one_key_source(self) -> JwtRule:
        if (self.jwks is None) == (self.jwks_uri is None):
            raise ValueError("jwks: give exactly one of jwks (inline JSON) and jwksUri")
        headers = [h.header.lower() for h in self.output_claim_to_headers]
        if self.output_payload_to_header:
            headers.append(self.output_payload_to_header.lower())
        if len(headers) != len(set(headers)):
            raise ValueError("outputClaimToHeaders: each header may be written only once")
        return self

    @property
    def uri(self) -> JwksUri | None:
        return None if self.jwks_uri is None else parse_jwks_uri(self.jwks_uri)


class RequestAuthenticationSpec(TargetedSpec):
    # JWT at the edge: a Gateway as target (docs/gateways.md#policies-at-the-edge).
    target_ref: EdgeTargetRef | None = Field(  # type: ignore[assignment]
        default=None, alias="targetRef")
    jwt_rules: list[JwtRule] = Field(alias="jwtRules", min_length=1, max_length=16)


class RequestAuthentication(Resource):
    KIND = "RequestAuthentication"
    kind: Literal["RequestAuthentication"] = "RequestAuthentication"
    spec: RequestAuthenticationSpec
