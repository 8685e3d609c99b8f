"""Sidecar: which Services a group of sidecars can call, so each gets only their config.

Without one, every sidecar holds every Service's clusters, endpoints and routes,
and every change anywhere reaches every sidecar: fine for tens of services, the
main cost of the control plane and of each Envoy at thousands (Istio's Sidecar
resource exists for the same reason). A Sidecar lists the hosts its workloads
call as `namespace/service`, `.` for its own namespace and `*` for any:

    egress: {hosts: ["./*", "payments/ledger"]}

Which one applies to a sidecar (model after Istio): the first by name in its
namespace whose `workloadSelector` matches its labels; else its namespace's
Sidecar without a selector; else the mesh root namespace's (`gossamer-system`)
without a selector; else none, and it sees the whole mesh. A sidecar always keeps
the upstreams its agent declares, and the backends that the routes of the
Services in its scope send to.

`outboundTrafficPolicy.mode` (`ALLOW_ANY` | `REGISTRY_ONLY`) overrides the Mesh's
for the sidecars this Sidecar applies to (as Istio's Sidecar does); it matters to
sidecars in capture mode only. A Sidecar may set it alone: without `egress` it
does not narrow the scope.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from gossamer.model.mesh import OutboundTrafficPolicy
from gossamer.model.meta import DNS_LABEL, Resource, Strict, check_labels


def split_host(host: str) -> tuple[str, str]:
    """`namespace/service` -> (namespace, service); either may be `*`, the namespace `.`."""
    namespace, sep, service = host.partition("/")
    if not sep:
        raise ValueError(f"{host!r}: must be namespace/service (e.g. ./catalog, "
                         "payments/*, */*)")
    if namespace not in (".", "*") and not DNS_LABEL.match(namespace):
        raise ValueError(f"{host!r}: namespace {namespace!r} must be '.', '*' or a "
                         "namespace name")
    if service != "*" and (not DNS_LABEL.match(service) or len(service) > 63):
        raise ValueError(f"{host!r}: service {service!r} must be '*' or a Service name")
    return namespace, service


class WorkloadSelector(Strict):
    match_labels: dict[str, str] = Field(alias="matchLabels", min_length=1)

    @field_validator("match_labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        return check_labels(v)

    def matches(self, labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels.items())


def _check_host(host: str) -> str:
    split_host(host)
    return host


class Egress(Strict):
    hosts: list[Annotated[str, AfterValidator(_check_host)]] = Field(min_length=1,
                                                                      max_length=1000)


class SidecarSpec(Strict):
    # None: every sidecar of the namespace (of the mesh, in gossamer-system).
    workload_selector: WorkloadSelector | None = Field(default=None, alias="workloadSelector")
    # None: every Service (only with outboundTrafficPolicy).
    egress: Egress | None = None
    outbound_traffic_policy: OutboundTrafficPolicy | None = Field(
        default=None, alias="outboundTrafficPolicy")

    @model_validator(mode="after")
    def _says_something(self) -> SidecarSpec:
        if self.egress is None and self.outbound_traffic_policy is None:
            raise ValueError("egress: required unless outboundTrafficPolicy is set")
        return self


class Sidecar(Resource):
    KIND = "Sidecar"
    kind: Literal["Sidecar"] = "Sidecar"
    spec: SidecarSpec

    def host_patterns(self) -> list[tuple[str, str]]:
        """(namespace, service) patterns with `.` resolved to this Sidecar's namespace."""
        if self.spec.egress is None:
            return [("*", "*")]
        out = []
        for host in self.spec.egress.hosts:
            namespace, service = split_host(host)
            out.append((self.metadata.namespace if namespace == "." else namespace, service))
        return out
