"""One `apiextensions.k8s.io/v1` CustomResourceDefinition per Gossamer kind, generated
from the models, so that a cluster validates what `gossamer apply` validates.

Gateway API kinds (HTTPRoute, GRPCRoute, TCPRoute) are not generated: they come from
the Gateway API's own CRDs (`deploy/crds/gateway-api/`). The SMI kinds' CRDs
(`smi_crds`) are generated the same way from model/smi.py, in SMI's groups and the one
version of each that Gossamer reads: they are the chart's `smi.crds` option. What a
CRD cannot check is listed in `validations.CONTROL_PLANE_ONLY` (and docs/kubernetes-crds.md).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterable
from typing import Any

import yaml

from gossamer.k8s.schema import Schema, structural
from gossamer.k8s.validations import CLASS_PATCHES, NAME_SCHEMA, NAME_SCHEMAS, VALUE_PATCHES
from gossamer.model.meta import MESH_API_VERSION, MESH_GROUP, Resource
from gossamer.model.registry import KINDS

VERSION = MESH_API_VERSION.rsplit("/", 1)[1]
CATEGORIES = ["gossamer"]
# g-prefixed: Istio's (pa, ra, ap) and core's (svc) short names stay theirs.
SHORT_NAMES = {
    "Service": ["gsvc"], "Workload": ["gwl"], "PeerAuthentication": ["gpa"],
    "AuthorizationPolicy": ["gap"], "RequestAuthentication": ["gra"],
    "ResiliencePolicy": ["grp"], "RateLimitPolicy": ["grlp"], "FaultPolicy": ["gfp"],
    "Telemetry": ["gtel"], "Sidecar": ["gsc"], "Mesh": ["gmesh"],
    "ExternalService": ["gext"],
}
PLURALS = {"Telemetry": "telemetries", "AuthorizationPolicy": "authorizationpolicies",
           "ResiliencePolicy": "resiliencepolicies", "RateLimitPolicy": "ratelimitpolicies",
           "FaultPolicy": "faultpolicies", "Mesh": "meshes"}


def _column(name: str, path: str, kind: str = "string", priority: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "type": kind, "jsonPath": path}
    if priority:
        out["priority"] = priority
    return out


_TARGET = _column("Target", ".spec.targetRef.name")
_ACCEPTED = _column("Accepted", '.status.conditions[?(@.type=="Accepted")].status')
_AGE = _column("Age", ".metadata.creationTimestamp", "date")
COLUMNS: dict[str, list[dict[str, Any]]] = {
    "Service": [_column("Ports", ".spec.ports[*].port"),
                _column("Protocols", ".spec.ports[*].protocol"),
                _column("Selector", ".spec.selector", priority=1)],
    "Workload": [_column("Service", ".spec.service"), _column("Address", ".spec.address"),
                 _column("Port", ".spec.port", "integer"), _column("Health", ".spec.health"),
                 _column("Account", ".spec.serviceAccount", priority=1)],
    "PeerAuthentication": [_column("Mode", ".spec.mtls.mode"), _TARGET, _ACCEPTED],
    "AuthorizationPolicy": [_column("Action", ".spec.action"), _TARGET, _ACCEPTED],
    "Sidecar": [_column("Hosts", ".spec.egress.hosts", priority=1), _ACCEPTED],
    "Mesh": [_column("Outbound", ".spec.outboundTrafficPolicy.mode"),
             _column("DNS domain", ".spec.dnsDomain", priority=1)],
    "ExternalService": [_column("Hosts", ".spec.hosts"), _column("Ports", ".spec.ports[*].port"),
                        _column("TLS", ".spec.tls.mode", priority=1)],
}
STATUS: Schema = {
    "type": "object",
    "description": "Written by the control plane: Accepted and ResolvedRefs conditions, and "
                   "what the policy's effect depends on.",
    "properties": {"conditions": {
        "type": "array", "maxItems": 16,
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
        "items": {"type": "object", "required": ["type", "status"], "properties": {
            "type": {"type": "string", "maxLength": 316},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": {"type": "string", "maxLength": 1024},
            "message": {"type": "string", "maxLength": 32768},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "observedGeneration": {"type": "integer", "minimum": 0}}}}},
}


def mesh_kinds() -> list[type[Resource]]:
    """Gossamer's own kinds (group mesh.gossamer.dev), in registry order."""
    return [cls for cls in KINDS.values() if cls.API_VERSIONS == (MESH_API_VERSION,)]


def plural(kind: str) -> str:
    return PLURALS.get(kind, kind.lower() + "s")


def _summary(cls: type[Resource]) -> str:
    doc = inspect.getdoc(sys.modules[cls.__module__]) or cls.KIND
    return doc.split("\n\n", 1)[0].replace("\n", " ")


def open_api_schema(cls: type[Resource]) -> Schema:
    """The CRD's `openAPIV3Schema` for one kind."""
    converted = structural(cls, CLASS_PATCHES, VALUE_PATCHES)
    props = converted["properties"]
    root: Schema = {
        "type": "object",
        "description": _summary(cls),
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object", "properties": {
                "name": NAME_SCHEMAS.get(cls.KIND, NAME_SCHEMA)}},
            "spec": props["spec"],
            "status": STATUS,
        },
    }
    if "spec" in converted.get("required", ()):
        root["required"] = ["spec"]
    return root


def crd(cls: type[Resource]) -> dict[str, Any]:
    name = plural(cls.KIND)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{name}.{MESH_GROUP}",
                     "labels": {"app.kubernetes.io/part-of": "gossamer"}},
        "spec": {
            "group": MESH_GROUP,
            # The one Mesh is cluster-wide (universal mode keeps it in CLUSTER_NAMESPACE).
            "scope": "Cluster" if cls.CLUSTER_NAMESPACE else "Namespaced",
            "names": {"kind": cls.KIND, "listKind": f"{cls.KIND}List", "plural": name,
                      "singular": cls.KIND.lower(), "shortNames": SHORT_NAMES[cls.KIND],
                      "categories": CATEGORIES},
            "versions": [{
                "name": VERSION, "served": True, "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [*COLUMNS.get(cls.KIND, [_TARGET, _ACCEPTED]),
                                             _AGE],
                "schema": {"openAPIV3Schema": open_api_schema(cls)},
            }],
        },
    }


# SMI: the columns of `kubectl get`; the kinds' names are SMI's (model/smi.py).
SMI_COLUMNS: dict[str, list[dict[str, Any]]] = {
    "TrafficSplit": [_column("Service", ".spec.service"),
                     _column("Backends", ".spec.backends[*].service", priority=1)],
    "TrafficTarget": [_column("Destination", ".spec.destination.name"),
                      _column("Sources", ".spec.sources[*].name", priority=1)],
}


def smi_crd(cls: type[Resource]) -> dict[str, Any]:
    """An SMI kind's CRD, with the status subresource the controller writes to (its
    Accepted conditions), which SMI's own CRDs do not have."""
    group, version = cls.API_VERSIONS[0].split("/")
    kind = str(cls.model_fields["kind"].default)
    name = plural(kind)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{name}.{group}",
                     "labels": {"app.kubernetes.io/part-of": "gossamer"}},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": name,
                      "singular": kind.lower(), "categories": ["smi"]},
            "versions": [{
                "name": version, "served": True, "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [*SMI_COLUMNS.get(kind, []), _ACCEPTED, _AGE],
                "schema": {"openAPIV3Schema": open_api_schema(cls)},
            }],
        },
    }


def smi_crds() -> list[dict[str, Any]]:
    from gossamer.model.smi import SMI_KINDS

    return [smi_crd(cls) for cls in SMI_KINDS]


def crds(kinds: Iterable[type[Resource]] | None = None) -> list[dict[str, Any]]:
    return [crd(cls) for cls in (mesh_kinds() if kinds is None else kinds)]


def crds_yaml() -> str:
    """Every CRD as one YAML stream (`kubectl apply -f -`)."""
    return yaml.safe_dump_all(crds(), sort_keys=False, width=100)
