"""Gateway API TLSRoute (v1alpha2): TLS connections routed by SNI, not terminated.

Attaches to a Gateway's TLS listener in Passthrough mode; the gateway reads the SNI
of the ClientHello and forwards the connection's bytes to the backends, by weight.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from gossamer.model.httproute import ParentRef, check_hostnames, check_unique_parents
from gossamer.model.meta import GATEWAY_GROUP, Resource, Strict
from gossamer.model.tcproute import TCPRouteRule

TLSROUTE_API_VERSION = f"{GATEWAY_GROUP}/v1alpha2"


class TLSRouteSpec(Strict):
    parent_refs: list[ParentRef] = Field(alias="parentRefs", min_length=1, max_length=32)
    hostnames: list[str] = Field(default_factory=list, max_length=16)
    rules: list[TCPRouteRule] = Field(min_length=1, max_length=16)

    _hostnames = field_validator("hostnames")(check_hostnames)

    @model_validator(mode="after")
    def _checks(self) -> TLSRouteSpec:
        check_unique_parents(self.parent_refs)
        for i, p in enumerate(self.parent_refs):
            if not p.is_gateway:
                raise ValueError(f"parentRefs[{i}].kind: a TLSRoute attaches to a Gateway "
                                 f"(group {GATEWAY_GROUP}, kind Gateway)")
        if len(self.rules) != 1:
            raise ValueError("rules: a TLSRoute takes exactly one rule; split connections "
                             "with the weights of its backendRefs")
        return self


class TLSRoute(Resource):
    KIND = "TLSRoute"
    API_VERSIONS = (TLSROUTE_API_VERSION,)
    kind: Literal["TLSRoute"] = "TLSRoute"
    spec: TLSRouteSpec

