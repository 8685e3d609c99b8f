"""What the security policies share: attachment to a Service, scopes, value patterns.

A policy attaches like a Gateway API policy: `spec.targetRef` names a Service in
the policy's namespace. Without a targetRef it covers its whole namespace, and
in the mesh root namespace (`gossamer-system`, like Istio's root namespace) the
whole mesh. Most specific wins where only one policy can (PeerAuthentication);
authorization policies of every scope apply together.
"""

from __future__ import annotations

import re
from enum import Enum

from pydantic import Field, model_validator

from gossamer.contract.checks import DNS_LABEL
from gossamer.model.meta import GATEWAY_GROUP, Resource, Strict

# Policies here without a targetRef apply to every workload of the mesh.
MESH_ROOT_NAMESPACE = "gossamer-system"


class Scope(str, Enum):
    MESH = "mesh"
    NAMESPACE = "namespace"
    SERVICE = "service"


class TargetRef(Strict):
    """The Service a policy attaches to (Gateway API policy attachment, local only)."""

    group: str = ""
    kind: str = "Service"
    name: str = Field(min_length=1, max_length=63)

    @model_validator(mode="after")
    def _is_service(self) -> TargetRef:
        if self.kind != "Service" or self.group not in ("", "core"):
            raise ValueError(
                "kind: a policy attaches to a Service (group \"\", kind Service); "
                f"got group {self.group!r} kind {self.kind!r}"
            )
        if not DNS_LABEL.match(self.name):
            raise ValueError("name: must be a Service name (a DNS label)")
        return self


class EdgeTargetRef(Strict):
    """A Service, or a Gateway (group gateway.networking.k8s.io, kind Gateway): the
    policies that make sense at the edge attach to a Gateway this way."""

    group: str = ""
    kind: str = "Service"
    name: str = Field(min_length=1, max_length=253)

    @property
    def is_gateway(self) -> bool:
        return self.kind == "Gateway"

    @model_validator(mode="after")
    def _kind(self) -> EdgeTargetRef:
        if self.kind == "Gateway" and self.group == GATEWAY_GROUP:
            return self
        TargetRef.model_validate({"group": self.group, "kind": self.kind, "name": self.name})
        return self


class TargetedSpec(Strict):
    """A policy that attaches to a Service (or, `EdgeTargetRef`, to a Gateway too)."""

    target_ref: TargetRef | None = Field(default=None, alias="targetRef")


def policy_scope(policy: Resource) -> Scope:
    """Where a policy applies, read from its namespace and targetRef."""
    target = getattr(policy, "spec", None)
    if isinstance(target, TargetedSpec) and target.target_ref is not None:
        return Scope.SERVICE
    if policy.metadata.namespace == MESH_ROOT_NAMESPACE:
        return Scope.MESH
    return Scope.NAMESPACE


def target_name(policy: Resource) -> str | None:
    """The Service a policy targets; None for a namespace or mesh policy, and for one
    that targets a Gateway (`gateway_target`)."""
    spec = getattr(policy, "spec", None)
    ref = spec.target_ref if isinstance(spec, TargetedSpec) else None
    if ref is not None and not (isinstance(ref, EdgeTargetRef) and ref.is_gateway):
        return ref.name
    return None


def gateway_target(policy: Resource) -> str | None:
    """The Gateway a policy targets, if it targets one."""
    spec = getattr(policy, "spec", None)
    if isinstance(spec, TargetedSpec) and isinstance(spec.target_ref, EdgeTargetRef) \
            and spec.target_ref.is_gateway:
        return spec.target_ref.name
    return None


# Istio-style string values: exact, `prefix*`, `*suffix`, or `*` (present, non-empty).
def check_pattern(value: str, *, what: str = "value", max_length: int = 1024) -> str:
    """Reject a `*` anywhere but at one end: Envoy matchers here are exact/prefix/suffix."""
    if not value:
        raise ValueError(f"{what} must not be empty")
    if len(value) > max_length:
        raise ValueError(f"{what} longer than {max_length} characters")
    if value == "*":
        return value
    inner = value[1:] if value.startswith("*") else value
    inner = inner[:-1] if inner.endswith("*") and not value.startswith("*") else inner
    if "*" in inner:
        raise ValueError(
            f"{value!r}: '*' may only be the whole value, or at its start (suffix match) "
            "or its end (prefix match)"
        )
    return value


_PATH_CHARS = re.compile(r"^[^\s?#]+\Z")


def check_path_pattern(value: str) -> str:
    """Paths: exact `/a/b`, prefix `/api/*`, suffix `*.json`, or `*`."""
    check_pattern(value, what="path")
    if not _PATH_CHARS.match(value):
        raise ValueError(f"{value!r}: a path has no spaces, query ('?') or fragment ('#')")
    if value != "*" and not value.startswith(("/", "*")):
        raise ValueError(f"{value!r}: a path starts with '/' (or '*' for a suffix match)")
    return value
