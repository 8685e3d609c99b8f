"""Fields every resource shares: metadata, status conditions, identity key."""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, NamedTuple

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from gossamer.contract.checks import DNS_LABEL, check_labels

# RFC 1123 subdomain (dots allowed), the rule for most Kubernetes object names.
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")

MESH_GROUP = "mesh.gossamer.dev"
MESH_API_VERSION = f"{MESH_GROUP}/v1alpha1"
GATEWAY_GROUP = "gateway.networking.k8s.io"
GATEWAY_API_VERSION = f"{GATEWAY_GROUP}/v1"


# Envoy's HTTP_HEADER_VALUE rule: what it writes into a header (a header value, a
# rewritten or redirected path, a token prefix) never holds NUL, CR or LF; one would
# be a NACK of the whole route config or listener.
_NOT_IN_HEADER = re.compile(r"[\x00\r\n]")


def check_header_value(v: str) -> str:
    if _NOT_IN_HEADER.search(v):
        raise ValueError("must not contain NUL, CR or LF (they cannot be in an HTTP header)")
    return v


# An HTTP header name (RFC 9110 token), as every resource that names a header takes it.
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+\Z")


def check_header_name(v: str) -> str:
    if not HEADER_NAME.match(v) or len(v) > 256:
        raise ValueError(f"{v!r} is not a valid HTTP header name")
    return v


METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")


def check_method(v: str | None) -> str | None:
    if v is not None and v not in METHODS:
        raise ValueError(f"{v!r} is not an HTTP method; use one of {', '.join(METHODS)}")
    return v


class Strict(BaseModel):
    """Base for every schema object: unknown fields are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def check_service_name(v: str) -> str:
    if not DNS_LABEL.match(v) or len(v) > 63:
        raise ValueError("must be a Service name (a DNS label)")
    return v


# A reference to a Service by name, validated the same way everywhere.
ServiceName = Annotated[str, AfterValidator(check_service_name)]


class ObjectMeta(Strict):
    name: str = Field(min_length=1, max_length=253)
    namespace: str = Field(default="default", min_length=1, max_length=63)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    # Store revision of the last write; set by the store, and when given on
    # apply it is a precondition (optimistic concurrency).
    resource_version: str | None = Field(default=None, alias="resourceVersion")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not DNS_SUBDOMAIN.match(v):
            raise ValueError(
                "must be lowercase letters, digits, '-' and '.', starting and ending "
                "with a letter or digit (RFC 1123)"
            )
        return v

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        if not DNS_LABEL.match(v):
            raise ValueError("must be a DNS label: lowercase letters, digits and '-'")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        return check_labels(v)

    @field_validator("resource_version")
    @classmethod
    def _resource_version(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[0-9]{1,18}\Z", v):
            raise ValueError(f"{v!r} is not a revision: use the number the store returned, "
                             "such as '42' ('0': the object must not exist yet)")
        return v


class Condition(Strict):
    """A status condition, as Kubernetes and Gateway API report them."""

    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str = ""


class ResourceKey(NamedTuple):
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


class Resource(Strict):
    """A document: apiVersion, kind, metadata, spec."""

    KIND: ClassVar[str] = ""
    API_VERSIONS: ClassVar[tuple[str, ...]] = (MESH_API_VERSION,)
    # A cluster-wide kind (Mesh): the one namespace its resources are stored in.
    CLUSTER_NAMESPACE: ClassVar[str | None] = None

    api_version: str = Field(alias="apiVersion")
    kind: str
    metadata: ObjectMeta

    @model_validator(mode="before")
    @classmethod
    def _cluster_wide(cls, data: Any) -> Any:
        """Put a cluster-wide kind's document that names no namespace into the one
        it is stored in (`CLUSTER_NAMESPACE`)."""
        if cls.CLUSTER_NAMESPACE is not None and isinstance(data, dict) \
                and isinstance(data.get("metadata"), dict) and "namespace" not in data["metadata"]:
            data = {**data, "metadata": {**data["metadata"], "namespace": cls.CLUSTER_NAMESPACE}}
        return data

    @property
    def key(self) -> ResourceKey:
        return ResourceKey(self.kind, self.metadata.namespace, self.metadata.name)

    def with_revision(self, revision: int) -> Resource:
        meta = self.metadata.model_copy(update={"resource_version": str(revision)})
        return self.model_copy(update={"metadata": meta})

    def to_document(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
