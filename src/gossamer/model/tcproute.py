"""Gateway API TCPRoute (v1alpha2) as a mesh uses it: weighted connection splits.

A route attaches to a Service's TCP port through `parentRefs`; each new
connection to that port goes to one backend, chosen by weight.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from gossamer.model.httproute import (
    BackendRef,
    ParentRef,
    check_rule_name,
    check_unique_parents,
)
from gossamer.model.meta import GATEWAY_GROUP, Resource, Strict

TCPROUTE_API_VERSION = f"{GATEWAY_GROUP}/v1alpha2"


class TCPRouteRule(Strict):
    name: str | None = Field(default=None, max_length=253)
    backend_refs: list[BackendRef] = Field(alias="backendRefs", min_length=1, max_length=16)

    _name = field_validator("name")(check_rule_name)

    @model_validator(mode="after")
    def _ports(self) -> TCPRouteRule:
        for i, ref in enumerate(self.backend_refs):
            if ref.port is None:
                raise ValueError(f"backendRefs[{i}].port: required for a Service backend")
            if ref.filters is not None:
                raise ValueError(f"backendRefs[{i}].filters: a TCPRoute's backends take no "
                                 "filters")
        return self


class TCPRouteSpec(Strict):
    parent_refs: list[ParentRef] = Field(alias="parentRefs", min_length=1, max_length=32)
    rules: list[TCPRouteRule] = Field(min_length=1, max_length=16)

    @model_validator(mode="after")
    def _one_rule(self) -> TCPRouteSpec:
        check_unique_parents(self.parent_refs)
        # Without matches nothing could choose between rules.
        if len(self.rules) != 1:
            raise ValueError("rules: a TCPRoute in a mesh takes exactly one rule; "
                             "split traffic with the weights of its backendRefs")
        return self


class TCPRoute(Resource):
    KIND = "TCPRoute"
    API_VERSIONS = (TCPROUTE_API_VERSION,)
    kind: Literal["TCPRoute"] = "TCPRoute"
    spec: TCPRouteSpec
