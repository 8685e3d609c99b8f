"""On-demand discovery: a sidecar fetches a Service's routes and cluster on its first
request to it, instead of holding the whole mesh's (the Mesh's `spec.onDemand`).

Why: without a `Sidecar` (or a scope inferred from AuthorizationPolicies), every
sidecar holds every Service's virtual host, cluster and endpoints, and every
change to any of them goes to every sidecar. On demand, a sidecar holds what its
app has called: a route or endpoint change reaches only the sidecars that use that
Service, and a sidecar's memory follows its app's calls, not the mesh.

How (Envoy's own mechanism): the outbound connection manager carries the
`on_demand` filter with ODCDS over ADS. A request whose Host no virtual host
matches makes Envoy ask for `outbound/<Host>` by VHDS (an alias: the server
answers with the virtual host whose domains hold that Host, xds/coverage.py); a
route whose cluster Envoy lacks makes it ask for that cluster by name (then its
endpoints, as for any EDS cluster); the request waits for both, once. The
snapshot still holds every virtual host and cluster of the scope; its `OnDemand`
marks them as sent only to explicit requests (xds/types.py).

Where: sidecars that take their outbound routes by VHDS (a delta stream, no
`Sidecar`), for their outbound listener only. Not under capture (its filter chains
per virtual IP and its TCP chains name their route configs and clusters up front)
and not for the clusters a sidecar's own listeners name (dedicated upstream
listeners, ExternalServices, its own app) or that routes mirror to (the lookup
fetches the cluster a request is routed to, not its mirrors'): those are sent as
before.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from envoy.config.route.v3.route_components_pb2 import VirtualHost

from gossamer.contract.node import NodeMetadata
from gossamer.translate import names
from gossamer.translate.mesh import MeshConfig, ScopedView
from gossamer.translate.protos import ADS
from gossamer.translate.scope import Scope
from gossamer.translate.vhds import by_vhds, outbound_vhosts
from gossamer.xds.types import CLUSTER, VHOST, OnDemand, XdsResource

ON_DEMAND = "type.googleapis.com/envoy.extensions.filters.http.on_demand.v3.OnDemand"
# First in the outbound chain: the fault and CORS filters read the route's
# per-filter config, which a first request only has once the filter fetched it.
ON_DEMAND_FILTER: dict[str, Any] = {
    "name": "envoy.filters.http.on_demand",
    "typedConfig": {"@type": ON_DEMAND, "odcds": {"source": ADS, "timeout": "10s"}},
}


def on_demand_for(mesh: MeshConfig, proxy: NodeMetadata, scope: Scope) -> bool:
    """Whether this sidecar's outbound routes and clusters come on demand."""
    setting = mesh.index.mesh is not None and mesh.index.mesh.spec.on_demand
    return bool(setting and by_vhds(proxy, scope) and proxy.outbound_port
                and proxy.capture is None and not proxy.gateway
                and not proxy.ingress_gateway)


def _domains_of(mesh: MeshConfig, resource: XdsResource) -> tuple[str, ...]:
    """A virtual host's domains, kept in the mesh's memo by content (and taken from
    the last mesh's), so a route change parses only the hosts it changed."""
    here, prior = mesh.vhds_memo
    slot = ("domains", resource.name, resource.version)
    found = here.get(slot) or prior.get(slot)
    if not isinstance(found, tuple):
        found = tuple(VirtualHost.FromString(resource.payload).domains)
    here[slot] = found
    return found


def vhost_demand(mesh: MeshConfig, namespace: str, scope: Scope) -> OnDemand:
    """Every virtual host of the set on demand, by the alias of each of its domains
    (`outbound/<domain>`, what Envoy asks for a Host it has no virtual host for).
    The catch-all (`*`) has no alias: a sidecar never holds it, so an unknown Host
    asks, and a Host no Service has is answered as an unresolved alias (Envoy's 404).
    Also the first answer's `outbound/` placeholder (xds/types.py `namespaces`)."""
    here, prior = mesh.vhds_memo
    slot = ("demand", namespace, scope, mesh.external.key)
    found = here.get(slot)
    if isinstance(found, OnDemand):
        return found
    vhosts = outbound_vhosts(mesh, namespace, scope)
    aliases = {f"{names.OUTBOUND_ROUTES}/{domain}": res.name
               for res in vhosts.resources.values()
               for domain in _domains_of(mesh, res) if domain != "*"}
    # A route change changes virtual hosts, not which host names them: keep the last
    # mesh's object then, so that no stream sees new rules (xds/delta.py compares
    # them by identity first, and by content only when they differ).
    last = prior.get(slot)
    if isinstance(last, OnDemand) and last.aliases == aliases:
        found = last
    else:
        found = OnDemand(None, MappingProxyType(aliases), (f"{names.OUTBOUND_ROUTES}/",))
    here[slot] = found
    return found


def mirrored(mesh: MeshConfig) -> frozenset[str]:
    """The clusters any route mirrors to: Envoy's on-demand lookup fetches the
    cluster a request is routed to, never a mirror's, so those are sent up front."""
    here, _ = mesh.vhds_memo
    found = here.get(("mirrored",))
    if not isinstance(found, frozenset):
        routes = [r for parts in mesh.parts.values()
                  for rs in [*parts.port_routes.values(),
                             *(c.routes for c in parts.consumers.values())] for r in rs]
        found = frozenset(m["cluster"] for r in routes
                          for m in r.get("route", {}).get("requestMirrorPolicies", ()))
        here[("mirrored",)] = found
    return found


def cluster_demand(mesh: MeshConfig, view: ScopedView, eager: frozenset[str]) -> OnDemand:
    """The scope's Service clusters on demand, but for `eager` (those the sidecar's
    own listeners name, which no on-demand lookup would fetch) and mirrors'. The
    set of names is one per mesh and scope; proxies that keep the same few share
    one object."""
    here, prior = mesh.vhds_memo
    whole_slot = ("clusters", view.cluster_sum, mirrored(mesh))
    whole = here.get(whole_slot) or prior.get(whole_slot)
    if not isinstance(whole, frozenset):
        whole = frozenset(view.clusters) - mirrored(mesh)
    here[whole_slot] = whole
    kept = eager & whole
    slot = ("demand-clusters", view.cluster_sum, kept)
    found = here.get(slot) or prior.get(slot)
    if not isinstance(found, OnDemand) or found.names is not whole:
        found = OnDemand(whole, kept=frozenset(kept))
    here[slot] = found
    return found


def demand_of(mesh: MeshConfig, proxy: NodeMetadata, view: ScopedView,
              eager: frozenset[str]) -> Mapping[str, OnDemand]:
    """The proxy's snapshot's `on_demand` (types: CLUSTER and VHOST)."""
    return {VHOST: vhost_demand(mesh, proxy.namespace, None),
            CLUSTER: cluster_demand(mesh, view, eager)}
