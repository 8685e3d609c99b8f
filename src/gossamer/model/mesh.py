"""Mesh: the settings that hold for the whole mesh, one resource named `default`.

Cluster-wide, like Istio's MeshConfig or Kuma's Mesh: there is only ever one,
stored in the mesh root namespace (`gossamer-system`, model/policy.py). A
document that leaves `metadata.namespace` out is put there; one that names
another namespace, or another name than `default`, is refused at apply, so two
Mesh resources can never disagree.

- `outboundTrafficPolicy.mode`: what a sidecar in capture mode does with a
  connection to a destination that is not a mesh Service: `ALLOW_ANY` (the
  default) passes it through to where the app sent it, `REGISTRY_ONLY` refuses
  it. A `Sidecar` may set its own mode for the workloads it covers
  (model/sidecar.py).
- `onDemand`: sidecars that no `Sidecar` scopes (and not under capture) fetch a
  Service's routes and cluster on their first request to it, instead of holding
  every Service's up front (translate/ondemand.py).
- `dnsDomain`: the mesh's own DNS domain: a capturing sidecar answers
  `svc.ns.<dnsDomain>` (besides `svc`, `svc.ns`, `svc.ns.svc` and
  `svc.ns.svc.cluster.local`) with the Service's virtual IP.
"""

from __future__ import annotations

from enum import Enum
from typing import ClassVar, Literal

from pydantic import Field, StrictBool, field_validator, model_validator

from gossamer.model.meta import DNS_SUBDOMAIN, Resource, Strict
from gossamer.model.policy import MESH_ROOT_NAMESPACE

MESH_NAME = "default"
DEFAULT_DNS_DOMAIN = "mesh"


class OutboundMode(str, Enum):
    ALLOW_ANY = "ALLOW_ANY"
    REGISTRY_ONLY = "REGISTRY_ONLY"


class Reachability(str, Enum):
    """What a sidecar no Sidecar applies to is sent: inferred, or every Service (all)."""

    INFERRED = "inferred"  # the Services its AuthorizationPolicies could admit it to
    ALL = "all"  # every Service of the mesh


class OutboundTrafficPolicy(Strict):
    mode: OutboundMode = OutboundMode.ALLOW_ANY


def check_dns_domain(v: str) -> str:
    if len(v) > 200 or not DNS_SUBDOMAIN.match(v):
        raise ValueError(f"{v!r} is not a DNS domain (lowercase labels joined by '.', "
                         "no trailing dot, at most 200 characters)")
    if v in ("svc", "cluster.local", "svc.cluster.local"):
        raise ValueError(f"{v!r} is already one of the names every Service has "
                         "(svc.ns.svc.cluster.local); pick another domain")
    return v


class MeshSpec(Strict):
    outbound_traffic_policy: OutboundTrafficPolicy = Field(
        default_factory=OutboundTrafficPolicy, alias="outboundTrafficPolicy")
    dns_domain: str = Field(default=DEFAULT_DNS_DOMAIN, alias="dnsDomain")
    reachability: Reachability = Reachability.ALL
    # Sidecars no Sidecar scopes fetch a Service's routes and cluster on their first
    # request to it (translate/ondemand.py) instead of holding every Service's.
    on_demand: StrictBool = Field(default=False, alias="onDemand")

    @field_validator("dns_domain")
    @classmethod
    def _domain(cls, v: str) -> str:
        return check_dns_domain(v)


class Mesh(Resource):
    KIND = "Mesh"
    kind: Literal["Mesh"] = "Mesh"
    spec: MeshSpec = Field(default_factory=MeshSpec)
    # Where the one Mesh lives; `gossamer get/delete mesh` look there.
    CLUSTER_NAMESPACE: ClassVar[str | None] = MESH_ROOT_NAMESPACE

    @model_validator(mode="after")
    def _singleton(self) -> Mesh:
        if self.metadata.name != MESH_NAME:
            raise ValueError(f"metadata.name: the Mesh is cluster-wide and there is one: it "
                             f"must be named {MESH_NAME!r}")
        if self.metadata.namespace != MESH_ROOT_NAMESPACE:
            raise ValueError(f"metadata.namespace: the Mesh is cluster-wide: leave the "
                             f"namespace out (it is stored in {MESH_ROOT_NAMESPACE!r})")
        return self
