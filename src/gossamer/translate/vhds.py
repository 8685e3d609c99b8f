"""The `outbound` route config in VHDS form, for sidecars on a delta stream.

Without a `Sidecar`, a proxy's `outbound` route config holds a virtual host per
Service port of the whole mesh, so one changed HTTPRoute made every proxy
receive the whole config again (508 KB each at 1000 Services). In VHDS form the
route config holds no virtual host, only `vhds` (over ADS), and each virtual
host is its own `VirtualHost` resource named `outbound/<its RDS name>` (so
`outbound/SVC.NS:PORT`; stats say `vhost.outbound/SVC.NS:PORT.`): a route
change then sends each proxy that has the Service the one virtual host that
changed. The server sends every virtual host of the proxy's scope up front
(Envoy's first VirtualHost request names nothing), so no request waits for one;
Envoy's on-demand lookups (`<route config>/<host>`, with the `on_demand` filter,
which these listeners do not have) would be answered from the same set.

SotW streams cannot carry VHDS: only nodes whose metadata says `vhds` get this
form (the agent sets it on delta streams).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from envoy.config.core.v3.config_source_pb2 import V3
from envoy.config.route.v3.route_components_pb2 import VirtualHost
from envoy.config.route.v3.route_pb2 import RouteConfiguration

from gossamer.contract.node import NodeMetadata
from gossamer.index import PortKey
from gossamer.translate import names
from gossamer.translate.mesh import MeshConfig, outbound_domains, virtual_host
from gossamer.translate.protos import build
from gossamer.translate.routes import UNREACHABLE_HEADER
from gossamer.translate.scope import Scope
from gossamer.translate.serviceparts import NO_SERVICE_VHOST
from gossamer.xds.types import ROUTE, VHOST, XdsResource, digest_sum, version_of_sum


def by_vhds(proxy: NodeMetadata, scope: Scope) -> bool:
    """Whether the proxy takes its outbound virtual hosts over VHDS: a delta proxy
    that can (the agent says so) and whose egress is the whole mesh (no `Sidecar`).
    There one route change resent the whole mesh's routes to every proxy; a scoped
    proxy's route config is small, and VHDS's extra request, response and ACK per
    proxy made its initial sync and resync slower (bench/controlplane/RESULTS.md)."""
    return proxy.vhds and scope is None


def _vhds_route_config(name: str) -> XdsResource:
    config = RouteConfiguration(name=name, response_headers_to_remove=[UNREACHABLE_HEADER])
    config.validate_clusters.SetInParent()  # as the RDS form (mesh.py)
    config.vhds.config_source.ads.SetInParent()
    config.vhds.config_source.resource_api_version = V3
    return XdsResource.from_message(ROUTE, name, config)


# Constant: what changes is its virtual hosts, never the route config itself.
VHDS_OUTBOUND = _vhds_route_config(names.OUTBOUND_ROUTES)


def _resource(vhost: VirtualHost) -> XdsResource:
    """The virtual host as the resource `outbound/<its name>`, which is also its
    name inside: Envoy keeps VHDS's virtual hosts by their own name and removes
    them by resource name, so the two must be one."""
    named = VirtualHost()
    named.CopyFrom(vhost)
    named.name = f"{names.OUTBOUND_ROUTES}/{vhost.name}"
    return XdsResource.from_message(VHOST, named.name, named)


_NO_SERVICE = _resource(build(VirtualHost, NO_SERVICE_VHOST))


@dataclass(frozen=True)
class VhostSet:
    """The virtual hosts one (namespace, scope) of proxies gets, and their sum."""

    resources: Mapping[str, XdsResource]
    total: int

    @property
    def version(self) -> str:
        return version_of_sum(self.total)


def outbound_vhosts(mesh: MeshConfig, namespace: str, scope: Scope) -> VhostSet:
    """Memoized per (namespace, scope): proxies of a namespace with one scope share
    one set. Each Service port's resource is kept by content across meshes, so a
    route change serializes only the virtual hosts it changed."""
    here, _ = mesh.vhds_memo
    slot = ("set", namespace, scope, mesh.external.key)
    found = here.get(slot)
    if isinstance(found, VhostSet):
        return found
    resources = [_port_vhost(mesh, pkey, namespace) for pkey in mesh.outbound_pkeys(scope)]
    resources.extend(_externals(mesh))
    resources.append(_NO_SERVICE)
    by_name = MappingProxyType({r.name: r for r in resources})
    found = VhostSet(by_name, digest_sum(by_name))
    here[slot] = found
    return found


def _port_vhost(mesh: MeshConfig, pkey: PortKey, namespace: str) -> XdsResource:
    """The port's virtual host for callers in `namespace`: by the names they use and
    the routes they follow (a consumer route's namespace has its own)."""
    here, prior = mesh.vhds_memo
    domains = outbound_domains(mesh, pkey, pkey[0] == namespace)
    slot = ("vhost", pkey, tuple(domains), mesh.port_route_config(pkey, namespace).version)
    found = here.get(slot) or prior.get(slot)
    if not isinstance(found, XdsResource):
        found = _resource(virtual_host(mesh, pkey, namespace, domains))
    here[slot] = found
    return found


def _externals(mesh: MeshConfig) -> tuple[XdsResource, ...]:
    here, prior = mesh.vhds_memo
    slot = ("external", mesh.external.key)
    found = here.get(slot) or prior.get(slot)
    if not isinstance(found, tuple):
        found = tuple(_resource(v) for v in mesh.external.vhosts)
    here[slot] = found
    return found
