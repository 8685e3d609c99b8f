"""The benchmark mesh: S services, their workloads, and N sidecars, made the way the
real agent makes them (its node metadata, its Workload document, its join token).

Layout: every service `svc-NNNN` has E = max(3, ceil(N / S)) workloads. Workload j
belongs to service j mod S (replica j // S), and proxy j is the sidecar of workload
j, so proxies spread evenly over services. Each sidecar has the catch-all outbound
listener (HTTP_PROXY), an inbound listener, and declares UPSTREAMS dedicated
upstreams (the next services by number), as `gossamer up` and `gossamer proxy
--upstream` set them.

Scoped (`--scoped`): each service also has a Sidecar resource selecting its
workloads, whose egress hosts are its UPSTREAMS upstreams, the services its app
calls. A route change on service i then concerns the callers of i only.

Policies (`--policies`): instead, each service has an ALLOW AuthorizationPolicy naming
the service accounts of its UPSTREAMS callers, and the Mesh says `reachability:
inferred`. With no Sidecar, the control plane infers the same scopes from them
(translate/reach.py).

On demand (`--on-demand`): no Sidecar, and the Mesh says `onDemand: true`
(translate/ondemand.py): each sidecar holds no Service's virtual host or cluster
until it asks. A simulated sidecar asks, as Envoy does on its app's first request
through the catch-all listener, for its UPSTREAMS services' virtual hosts by Host
(`outbound/svc-NNNN`, a VHDS alias); their clusters it has already (its dedicated
upstream listeners name them), so it needs no on-demand cluster lookup.

VHDS: the sidecars take the outbound virtual hosts by VHDS, as the agent's default
(`--xds-mode delta`); `--no-vhds` runs them as `--xds-mode delta-rds`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gossamer.agent.runner import Agent, AgentConfig, UpstreamSpec
from gossamer.contract.node import node_id_of
from gossamer.translate import names
from gossamer.xds.types import ROUTE, VHOST

NAMESPACE = "default"
UPSTREAMS = 3
PORT = 80


def service_name(i: int) -> str:
    return f"svc-{i:04d}"


def service_doc(i: int) -> dict[str, Any]:
    name = service_name(i)
    return {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Service",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"selector": {"app": name}, "ports": [{"port": PORT, "protocol": "http"}]}}


def route_doc(i: int, s: int, weight: int) -> dict[str, Any]:
    """An HTTPRoute splitting service i between itself and the next service."""
    name, other = service_name(i), service_name((i + 1) % s)
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": f"bench-{name}", "namespace": NAMESPACE},
            "spec": {"parentRefs": [{"name": name, "port": PORT}],
                     "rules": [{"backendRefs": [
                         {"name": name, "port": PORT, "weight": weight},
                         {"name": other, "port": PORT, "weight": 100 - weight}]}]}}


def sidecar_doc(i: int, s: int) -> dict[str, Any]:
    """Service i's sidecars may call its upstreams only."""
    name = service_name(i)
    return {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Sidecar",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"workloadSelector": {"matchLabels": {"app": name}},
                     "egress": {"hosts": [f"./{service_name((i + k) % s)}"
                                          for k in range(1, UPSTREAMS + 1)]}}}


def mesh_doc(inferred: bool, on_demand: bool) -> dict[str, Any]:
    """The Mesh that turns the inference and on-demand discovery on (both off by
    default)."""
    spec: dict[str, Any] = {"reachability": "inferred"} if inferred else {}
    if on_demand:
        spec["onDemand"] = True
    return {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Mesh",
            "metadata": {"name": "default"}, "spec": spec}


def allow_doc(i: int, s: int, trust_domain: str = "gossamer.local") -> dict[str, Any]:
    """Service i admits its callers (the services it is an upstream of) only."""
    name = service_name(i)
    callers = [service_name((i - k) % s) for k in range(1, UPSTREAMS + 1)]
    return {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"targetRef": {"kind": "Service", "name": name}, "rules": [{"from": [
                {"source": {"principals": [f"{trust_domain}/ns/{NAMESPACE}/sa/{c}"
                                           for c in callers]}}]}]}}


def eds_name(i: int) -> str:
    return names.outbound_cluster(NAMESPACE, service_name(i), PORT)


def route_names(i: int, vhds: bool = True) -> list[tuple[str, str]]:
    """(type, name) of the resources a route change on service i touches: the
    service's virtual host in the catch-all listener's routes (by VHDS, or the whole
    `outbound` route config without it), and the dedicated upstream listener's
    route config."""
    upstream = (ROUTE, names.upstream_listener(NAMESPACE, service_name(i), PORT))
    if not vhds:
        return [(ROUTE, names.OUTBOUND_ROUTES), upstream]
    vhost = f"{names.OUTBOUND_ROUTES}/{service_name(i)}.{NAMESPACE}:{PORT}"  # translate/vhds.py
    return [(VHOST, vhost), upstream]


@dataclass(frozen=True)
class Layout:
    n: int
    s: int
    vhds: bool = True

    @property
    def replicas(self) -> int:
        return max(3, math.ceil(self.n / self.s))

    @property
    def workloads(self) -> int:
        return self.s * self.replicas

    def service_of(self, j: int) -> int:
        return j % self.s

    def callers_of(self, i: int) -> list[int]:
        """The proxies whose egress scope holds service i (their service's upstreams)."""
        return [j for j in range(self.n)
                if any((self.service_of(j) + k) % self.s == i for k in range(1, UPSTREAMS + 1))]

    def workload_name(self, j: int) -> str:
        return f"{service_name(j % self.s)}-{j // self.s}"

    def agent(self, j: int) -> Agent:
        """The real agent's view of workload j (no process, no client: only its documents)."""
        i = self.service_of(j)
        config = AgentConfig(
            service=service_name(i), app_port=10000 + j % 20000, namespace=NAMESPACE,
            inbound_port=30000 + j % 30000, outbound_port=15001, admin_port=15000,
            name=self.workload_name(j),
            upstreams=[UpstreamSpec(service_name((i + k) % self.s), PORT, 16000 + k,
                                    NAMESPACE) for k in range(1, UPSTREAMS + 1)],
            vhds=self.vhds)
        agent = Agent.__new__(Agent)  # Agent() would also open an HTTP client; not needed
        agent.config, agent.workload = config, config.workload
        agent.node_id = node_id_of(agent.workload, config.namespace)
        agent.capture, agent._resolvers = None, ()  # what node() reads besides the config
        return agent

    def workload_doc(self, j: int) -> dict[str, Any]:
        """The agent's registration, without a lease: the bench does not heartbeat
        thousands of endpoints every 5 s (that would be a load test of the API)."""
        doc = self.agent(j).workload_doc()
        doc["spec"]["ttlSeconds"] = 0  # type: ignore[index]
        return doc

    def calls(self, j: int) -> list[str]:
        """The VHDS aliases proxy j asks for on demand: its upstreams by short name."""
        i = self.service_of(j)
        return [f"{names.OUTBOUND_ROUTES}/{service_name((i + k) % self.s)}"
                for k in range(1, UPSTREAMS + 1)]

    def proxy(self, j: int, token: str, on_demand: bool = False) -> dict[str, Any]:
        agent = self.agent(j)
        node = agent.node(f"/tmp/gossamer-{agent.node_id}/access.log")
        return {"index": j, "node_id": node.node_id, "cluster": node.service,
                "metadata": node.to_metadata(), "token": token,
                "calls": self.calls(j) if on_demand else []}
