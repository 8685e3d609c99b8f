"""The mesh index: an immutable, query-friendly view of the desired state.

Built from one consistent listing of the store (`build.py`); translation reads
only this. Every part is immutable, and a rebuild keeps a part whose inputs did not
change as the same object, so translation tells an unchanged part by identity.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TypeVar

from gossamer.index.gateways import GatewayView
from gossamer.model import (
    AuthorizationPolicy,
    Condition,
    FaultPolicy,
    GRPCRoute,
    HTTPRoute,
    PeerAuthentication,
    RateLimitPolicy,
    RequestAuthentication,
    ResiliencePolicy,
    Resource,
    ResourceKey,
    Service,
    Sidecar,
    TCPRoute,
    Telemetry,
    Workload,
)
from gossamer.model.externalservice import ExternalService
from gossamer.model.mesh import Mesh

SvcKey = tuple[str, str]  # (namespace, name)
WorkloadKey = tuple[str, str]  # (namespace, name)
PortKey = tuple[str, str, int]  # (namespace, service, port)
AnyRoute = HTTPRoute | GRPCRoute | TCPRoute
Policy = (PeerAuthentication | AuthorizationPolicy | RequestAuthentication | ResiliencePolicy
          | RateLimitPolicy | FaultPolicy | Telemetry)
R = TypeVar("R", bound=Resource)


@dataclass(frozen=True)
class Endpoint:
    address: str
    port: int
    workload: str
    namespace: str
    labels: Mapping[str, str]


@dataclass(frozen=True)
class MeshIndex:
    revision: int
    services: Mapping[SvcKey, Service]
    workloads: tuple[Workload, ...]
    routes: tuple[HTTPRoute, ...]
    # Healthy endpoints of each service, in a stable order.
    endpoints: Mapping[SvcKey, tuple[Endpoint, ...]]
    # Routes attached to each service, in precedence-stable (namespace, name) order.
    routes_by_parent: Mapping[SvcKey, tuple[HTTPRoute, ...]]
    conditions: Mapping[ResourceKey, tuple[Condition, ...]] = field(default_factory=dict)
    # Security policies, each in (namespace, name) order.
    peer_authentications: tuple[PeerAuthentication, ...] = ()
    authorization_policies: tuple[AuthorizationPolicy, ...] = ()
    request_authentications: tuple[RequestAuthentication, ...] = ()
    # Service accounts of every workload a service selects, healthy or not, so
    # that health changes never change the identities callers verify.
    accounts: Mapping[SvcKey, tuple[str, ...]] = field(default_factory=dict)
    # The services that select each workload.
    workload_services: Mapping[WorkloadKey, tuple[SvcKey, ...]] = field(default_factory=dict)
    # The ResiliencePolicy in effect for each Service (the first by (namespace, name)).
    resilience: Mapping[SvcKey, ResiliencePolicy] = field(default_factory=dict)
    # The RateLimitPolicy in effect for each Service (the first by (namespace, name)).
    rate_limits: Mapping[SvcKey, RateLimitPolicy] = field(default_factory=dict)
    # The FaultPolicy in effect for each Service (the first by (namespace, name)).
    faults: Mapping[SvcKey, FaultPolicy] = field(default_factory=dict)
    # The same two kinds targeting a Gateway, by the Gateway's (namespace, name).
    gateway_rate_limits: Mapping[SvcKey, RateLimitPolicy] = field(default_factory=dict)
    gateway_faults: Mapping[SvcKey, FaultPolicy] = field(default_factory=dict)
    # GRPCRoutes attached to each service, in (namespace, name) order.
    grpc_routes_by_parent: Mapping[SvcKey, tuple[GRPCRoute, ...]] = field(default_factory=dict)
    # The TCPRoute in effect on each TCP service port (the first by (namespace, name)).
    tcp_routes: Mapping[PortKey, TCPRoute] = field(default_factory=dict)
    # Telemetry resources in effect, at most one per scope, in (namespace, name) order.
    telemetries: tuple[Telemetry, ...] = ()
    # Sidecar resources in effect, in (namespace, name) order (model/sidecar.py).
    sidecars: tuple[Sidecar, ...] = ()
    # Capture: each Service's virtual IP (virtualips/assign.py), and the
    # Mesh resource (model/mesh.py), None when none is applied.
    virtual_ips: Mapping[SvcKey, str] = field(default_factory=dict)
    mesh: Mesh | None = None
    # ExternalServices by (namespace, name), and their virtual IPs
    # (virtualips/external.py).
    external_services: Mapping[SvcKey, ExternalService] = field(default_factory=dict)
    external_vips: Mapping[SvcKey, str] = field(default_factory=dict)
    # The ResiliencePolicy in effect for each ExternalService (the first by name).
    external_resilience: Mapping[SvcKey, ResiliencePolicy] = field(default_factory=dict)
    # RateLimitPolicies on ExternalServices, by the ExternalService's key.
    external_rate_limits: Mapping[SvcKey, RateLimitPolicy] = field(default_factory=dict)
    # The Gateways of class gossamer, as served (index/gateways.py), and the
    # status of Gateways and of routes with a Gateway parent.
    gateways: Mapping[SvcKey, GatewayView] = field(default_factory=dict)
    gateway_status: Mapping[ResourceKey, Mapping[str, object]] = field(default_factory=dict)

    def service(self, namespace: str, name: str) -> Service | None:
        return self.services.get((namespace, name))

    @cached_property
    def workloads_by_account(self) -> Mapping[tuple[str, str], int]:
        """How many Workloads each (namespace, account) holds (a join token's quota):
        counted once per index, not on every registration, which made registering W
        workloads O(W^2)."""
        return Counter((w.metadata.namespace, w.account) for w in self.workloads)

    def service_accounts(self, namespace: str, name: str) -> tuple[str, ...]:
        """Accounts a caller of the service may meet; the service's name if none is known."""
        return self.accounts.get((namespace, name)) or (name,)

    def proxy_services(self, namespace: str, workload: str, service: str) -> frozenset[SvcKey]:
        """The services whose policies cover a proxy: those selecting its workload, and
        the service it runs as (its workload may not be registered yet)."""
        return frozenset({*self.workload_services.get((namespace, workload), ()),
                          (namespace, service)})

    def status(self, key: ResourceKey) -> dict[str, object]:
        conds = self.conditions.get(key, ())
        out: dict[str, object] = {}
        if key.kind == Service.KIND and (vip := self.virtual_ips.get(key[1:])) is not None:
            out["virtualIP"] = vip
        if key.kind == "ExternalService" and (vip := self.external_vips.get(key[1:])) is not None:
            out["virtualIP"] = vip
        if conds:
            out["conditions"] = [c.model_dump(mode="json") for c in conds]
        out.update(self.gateway_status.get(key, {}))
        return out
