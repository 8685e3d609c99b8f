"""Gateway API ReferenceGrant (gateway.networking.k8s.io/v1beta1): the owner of a
namespace lets objects of other namespaces refer to its objects.

A Gateway's certificateRef to a Secret, or a route's backendRef to a Service, in
another namespace is honoured only when a ReferenceGrant in the target's namespace
names the referrer's kind and namespace (`from`) and the target's kind, and
optionally name (`to`). The referrer cannot grant itself access: the grant lives
beside what it opens.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gossamer.model.meta import GATEWAY_GROUP, Resource, Strict

_GROUP = r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_KIND = r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$"
_NAMESPACE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class ReferenceGrantFrom(Strict):
    group: str = Field(max_length=253, pattern=_GROUP)
    kind: str = Field(min_length=1, max_length=63, pattern=_KIND)
    namespace: str = Field(min_length=1, max_length=63, pattern=_NAMESPACE)


class ReferenceGrantTo(Strict):
    group: str = Field(max_length=253, pattern=_GROUP)
    kind: str = Field(min_length=1, max_length=63, pattern=_KIND)
    name: str | None = Field(default=None, min_length=1, max_length=253)


class ReferenceGrantSpec(Strict):
    from_: list[ReferenceGrantFrom] = Field(alias="from", min_length=1, max_length=16)
    to: list[ReferenceGrantTo] = Field(min_length=1, max_length=16)


class ReferenceGrant(Resource):
    KIND = "ReferenceGrant"
    API_VERSIONS = (f"{GATEWAY_GROUP}/v1beta1", f"{GATEWAY_GROUP}/v1")
    kind: Literal["ReferenceGrant"] = "ReferenceGrant"
    spec: ReferenceGrantSpec

    def permits(self, group: str, kind: str, namespace: str, to_group: str, to_kind: str,
                name: str) -> bool:
        """Whether this grant lets a `kind` of `namespace` refer to the object `name` of
        kind `to_kind` in the grant's namespace (group "" is the core group)."""
        core = ("", "core")
        return any(f.group == group and f.kind == kind and f.namespace == namespace
                   for f in self.spec.from_) and any(
            (t.group == to_group or (t.group in core and to_group in core))
            and t.kind == to_kind and t.name in (None, name) for t in self.spec.to)
