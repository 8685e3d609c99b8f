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
from gossamer.model.meta import Resource, Strict

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


class TargetedSpec(Strict):
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
    spec = getattr(policy, "spec", None)
    if isinstance(spec, TargetedSpec) and spec.target_ref is not None:
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
