"""Typed mesh resources: the desired state and its validation.

Every document has the Kubernetes shape (apiVersion, kind, metadata, spec) so
the same YAML is `gossamer apply` input in universal mode and a CRD on
Kubernetes. `parse_document` is the single entry point that turns untrusted
input into a typed resource or raises `InvalidResource` naming each bad field.
"""

from gossamer.model.authorizationpolicy import AuthorizationPolicy
from gossamer.model.errors import FieldError, InvalidResource
from gossamer.model.externalservice import ExternalService
from gossamer.model.faultpolicy import FaultPolicy
from gossamer.model.gateway import Gateway
from gossamer.model.grpcroute import GRPCRoute
from gossamer.model.httproute import HTTPRoute
from gossamer.model.mesh import Mesh
from gossamer.model.meta import Condition, ObjectMeta, Resource, ResourceKey
from gossamer.model.namespace import Namespace
from gossamer.model.peerauthentication import PeerAuthentication
from gossamer.model.ratelimitpolicy import RateLimitPolicy
from gossamer.model.referencegrant import ReferenceGrant
from gossamer.model.registry import (
    KINDS,
    dump_document,
    kind_for,
    parse_document,
    parse_documents,
)
from gossamer.model.requestauthentication import RequestAuthentication
from gossamer.model.resiliencepolicy import ResiliencePolicy
from gossamer.model.secret import Secret
from gossamer.model.service import Service
from gossamer.model.sidecar import Sidecar
from gossamer.model.tcproute import TCPRoute
from gossamer.model.telemetry import Telemetry
from gossamer.model.tlsroute import TLSRoute
from gossamer.model.workload import Workload

__all__ = [
    "KINDS",
    "AuthorizationPolicy",
    "Condition",
    "ExternalService",
    "FaultPolicy",
    "FieldError",
    "GRPCRoute",
    "Gateway",
    "HTTPRoute",
    "InvalidResource",
    "Mesh",
    "Namespace",
    "ObjectMeta",
    "PeerAuthentication",
    "RateLimitPolicy",
    "ReferenceGrant",
    "RequestAuthentication",
    "ResiliencePolicy",
    "Resource",
    "ResourceKey",
    "Secret",
    "Service",
    "Sidecar",
    "TCPRoute",
    "TLSRoute",
    "Telemetry",
    "Workload",
    "dump_document",
    "kind_for",
    "parse_document",
    "parse_documents",
]
