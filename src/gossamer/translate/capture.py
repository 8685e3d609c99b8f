"""Capture mode: what a sidecar gets when its agent redirects the workload's traffic
to it (`gossamer proxy --capture`, agent/capture.py), besides its usual listeners.

- Listener `outbound_capture` on 127.0.0.1:15001 (the port from the node metadata),
  where the nat rules send the workload's outbound TCP. The `original_dst` listener
  filter restores where the app was connecting, and filter chains match it:
  - a TCP Service port: {its virtual IP/32, port} -> tcp_proxy to its cluster (or
    its TCPRoute's split), as the per-upstream TCP listener does;
  - an HTTP Service port: {its virtual IP/32, port} -> the caller-side HTTP
    connection manager (codec AUTO: HTTP/1.1, h2c, gRPC) on that port's own route
    config, `upstream|PORT||SVC.NS` under any Host (mesh.py's `upstream_route_config`,
    the one the port's upstream listener uses). The address the app connected to
    decides, not the Host header: GAMMA's `MeshFrontendHostname`. Over RDS, so a
    route change sends that one small config, not the listener;
  - any other address on a port some HTTP Service uses: {port} -> the same
    connection manager on route config `outbound_capture`, which routes by Host
    header like `outbound`;
  - anything else (the default chain): `ALLOW_ANY` passes the connection through
    to where it was going (the ORIGINAL_DST cluster PASSTHROUGH_CLUSTER);
    `REGISTRY_ONLY` refuses it (tcp_proxy to BLACKHOLE_CLUSTER, which has no
    endpoints), counted under `tcp.registry_only_refused.*` and, when the agent
    gave an access log file, logged with the address and the reason.
- Route config `outbound_capture`: the virtual hosts of the caller's `outbound`
  route config, each also answering to its Service's virtual IP (`VIP:PORT`, and
  `VIP` alone on the default port: a request to another address with a virtual IP
  as Host), and a catch-all: `ALLOW_ANY` forwards to the original destination,
  `REGISTRY_ONLY` answers 502 naming the policy.

- Listener `dns` (translate/dns.py).

Which mode applies: the `Sidecar` that applies to the proxy when it sets
`outboundTrafficPolicy`, else the `Mesh`'s, else ALLOW_ANY. What the capture
config reads is `capture_inputs`: a proxy is translated again when it changes.
The parts that do not depend on the proxy itself are built once per
(namespace, scope, mode) and mesh (`CaptureMemo`).

One filter chain per virtual IP and port, matched by `filter_chain_match`, rather
than a `filter_chain_matcher` tree: measured at 1000 Services, the chains are the
listener's bytes either way (the tree only adds its map), and Envoy updated both in
place (docs/performance.md#capture-routing-by-destination-address).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from typing import Protocol as Structural

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.listener.v3.listener_components_pb2 import FilterChain
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_components_pb2 import VirtualHost
from envoy.config.route.v3.route_pb2 import RouteConfiguration
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2 import (  # noqa: E501
    HttpConnectionManager,
)

from gossamer.contract.node import NodeMetadata
from gossamer.contract.protocol import Protocol
from gossamer.index import MeshIndex, SvcKey
from gossamer.model import Service
from gossamer.model.mesh import DEFAULT_DNS_DOMAIN, OutboundMode
from gossamer.translate import names
from gossamer.translate.dns import DNS_LISTENER, dns_listener, dns_table
from gossamer.translate.external import ExternalConfig, is_forward_vhost
from gossamer.translate.listeners import optional_outbound_filters, outbound_hcm, tcp_proxy_filter
from gossamer.translate.protos import HTTP_OPTIONS, build
from gossamer.translate.resilience import tcp_settings
from gossamer.translate.scope import Scope, SidecarIndex
from gossamer.translate.tcproutes import tcp_route_clusters
from gossamer.xds.types import CLUSTER, LISTENER, ROUTE, XdsResource

CAPTURE_LISTENER = "outbound_capture"
CAPTURE_ROUTES = "outbound_capture"
PASSTHROUGH_CLUSTER = "PassthroughCluster"
BLACKHOLE_CLUSTER = "BlackHoleCluster"
# tcp_proxy stat prefixes of the default chain: `tcp.<prefix>.downstream_cx_total`.
PASSTHROUGH_STATS = "passthrough"
REFUSED_STATS = "registry_only_refused"
REFUSED_ROUTE = "registry-only"
REFUSED_BODY = ("gossamer: refused by the outbound traffic policy REGISTRY_ONLY: the "
                "request's host is neither a mesh Service nor an ExternalService\n")
REFUSED_LOG = ("[%START_TIME%] gossamer: outbound connection to %DOWNSTREAM_LOCAL_ADDRESS% "
               "refused: outbound traffic policy REGISTRY_ONLY, and it is neither a mesh Service "
               "nor an ExternalService\n")
_FILE_LOG = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
_ORIGINAL_DST = ("type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3."
                 "OriginalDst")
PortKey = tuple[str, str, int]


class MeshView(Structural):
    """What capture reads of the translated mesh (translate/mesh.py's MeshConfig)."""

    @property
    def index(self) -> MeshIndex: ...

    @property
    def capture_memo(self) -> dict[object, object]: ...

    def outbound_routes(self, namespace: str, scope: Scope = None) -> XdsResource: ...

    def sidecar_index(self) -> SidecarIndex: ...

    def caller_labels(self, proxy: NodeMetadata) -> dict[str, str]: ...

    @property
    def external(self) -> ExternalConfig: ...

    def port_route_config(self, pkey: PortKey, namespace: str) -> XdsResource: ...


@dataclass(frozen=True)
class _Shared:
    """The proxy-independent part, once per (namespace, scope, mode) and mesh."""

    key: tuple[object, ...]  # what it was built from: equal keys, equal config
    tcp_chains: tuple[dict[str, Any], ...]
    http_ports: tuple[int, ...]
    # HTTP Service ports in scope with a virtual IP, and their route configs by name.
    http_vips: tuple[tuple[str, int, str], ...]  # (VIP, port, route config)
    port_routes: Mapping[str, XdsResource]
    routes: XdsResource
    dns: tuple[tuple[str, str], ...]
    # Clusters the TCP chains and the route config send to.
    refs: frozenset[str] = field(default_factory=frozenset)


def outbound_mode(mesh: MeshView, proxy: NodeMetadata) -> OutboundMode:
    sidecar = mesh.sidecar_index().sidecar_for(proxy.namespace, mesh.caller_labels(proxy))
    if sidecar is not None and sidecar.spec.outbound_traffic_policy is not None:
        return sidecar.spec.outbound_traffic_policy.mode
    if mesh.index.mesh is not None:
        return mesh.index.mesh.spec.outbound_traffic_policy.mode
    return OutboundMode.ALLOW_ANY


def _dns_domain(index: MeshIndex) -> str:
    return index.mesh.spec.dns_domain if index.mesh is not None else DEFAULT_DNS_DOMAIN


def _in_scope(index: MeshIndex, scope: Scope) -> list[SvcKey]:
    return sorted(index.services) if scope is None else sorted(
        k for k in scope if k in index.services)


def _default_port(svc: Service) -> int:
    ports = [p.port for p in svc.spec.ports]
    return 80 if 80 in ports else ports[0]


def _tcp_chain(index: MeshIndex, key: SvcKey, port: int,
               vip: str) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    pkey = (key[0], key[1], port)
    troute = index.tcp_routes.get(pkey)
    clusters = (tcp_route_clusters(troute, index.services) if troute is not None
                else [(names.outbound_cluster(*pkey), 1)])
    proxy = tcp_proxy_filter(names.upstream_listener(*pkey), clusters,
                             tcp_settings(index.resilience.get(key)))
    return {"name": f"{key[1]}.{key[0]}:{port}",
            "filterChainMatch": {"prefixRanges": [{"addressPrefix": vip, "prefixLen": 32}],
                                 "destinationPort": port},
            "filters": [proxy]}, clusters


def _vip_chains(http_vips: tuple[tuple[str, int, str], ...],
                hcm: dict[str, Any]) -> list[FilterChain]:
    """A chain per (VIP, port, route config): one built from `hcm`, then copies with
    their address, port and RDS name, as `build` would give them (parsing 1000
    connection managers from dicts cost a capturing proxy seconds at 1000 Services)."""
    if not http_vips:
        return []
    template = build(FilterChain, {"filters": [hcm]})
    packed = template.filters[0].typed_config
    manager = HttpConnectionManager()
    packed.Unpack(manager)
    prefix = packed.type_url.rsplit("/", 1)[0]
    chains = []
    for vip, port, config in http_vips:
        chain = FilterChain()
        chain.CopyFrom(template)
        chain.name = config
        chain.filter_chain_match.prefix_ranges.add(address_prefix=vip).prefix_len.value = 32
        chain.filter_chain_match.destination_port.value = port
        manager.rds.route_config_name = config
        chain.filters[0].typed_config.Pack(manager, type_url_prefix=prefix, deterministic=True)
        chains.append(chain)
    return chains


def _catch_all(mode: OutboundMode) -> VirtualHost:
    if mode is OutboundMode.REGISTRY_ONLY:
        route: dict[str, Any] = {"name": REFUSED_ROUTE, "match": {"prefix": "/"},
                                 "directResponse": {"status": 502, "body": {
                                     "inlineString": REFUSED_BODY}}}
    else:
        route = {"name": PASSTHROUGH_CLUSTER, "match": {"prefix": "/"},
                 "route": {"cluster": PASSTHROUGH_CLUSTER, "timeout": "0s"}}
    return build(VirtualHost, {"name": "not-in-mesh", "domains": ["*"], "routes": [route]})


def _route_config(index: MeshIndex, outbound: XdsResource, mode: OutboundMode,
                  wildcards: tuple[VirtualHost, ...] = ()) -> XdsResource:
    """`outbound` with each Service's virtual IP among its domains and the policy's
    catch-all. Virtual hosts are named `svc.ns:port` (mesh.py's `_virtual_host`)."""
    config = RouteConfiguration.FromString(outbound.payload)
    config.name = CAPTURE_ROUTES
    kept = []
    for vhost in config.virtual_hosts[:-1]:  # the last is outbound's 404 catch-all
        if is_forward_vhost(vhost.name):  # `wildcards` route those hosts here
            continue
        host, _, port = vhost.name.rpartition(":")
        name, _, ns = host.partition(".")
        vip, svc = index.virtual_ips.get((ns, name)), index.services.get((ns, name))
        if vip is not None and svc is not None:
            extra = [f"{vip}:{port}", *([vip] if int(port) == _default_port(svc) else [])]
            vhost.domains.extend(extra)
        kept.append(vhost)
    del config.virtual_hosts[:]
    config.virtual_hosts.extend([*kept, *wildcards, _catch_all(mode)])
    return XdsResource.from_message(ROUTE, CAPTURE_ROUTES, config)


def _build_shared(mesh: MeshView, namespace: str, scope: Scope,
                  mode: OutboundMode) -> _Shared:
    index = mesh.index
    chains: list[dict[str, Any]] = []
    http_ports: set[int] = set()
    refs: set[str] = {PASSTHROUGH_CLUSTER if mode is OutboundMode.ALLOW_ANY
                      else BLACKHOLE_CLUSTER}
    tcp_key = []
    http_vips: list[tuple[str, int, str]] = []
    routes_by_name: dict[str, XdsResource] = {}
    keys = _in_scope(index, scope)
    for key in keys:
        svc, vip = index.services[key], index.virtual_ips.get(key)
        for port in svc.spec.ports:
            if port.protocol is not Protocol.TCP:
                http_ports.add(port.port)
                if vip is not None:
                    # Its namespace's consumer routes, else the producer's (consumer.py).
                    config = mesh.port_route_config((key[0], key[1], port.port), namespace)
                    http_vips.append((vip, port.port, config.name))
                    routes_by_name[config.name] = config
            elif vip is not None:
                chain, clusters = _tcp_chain(index, key, port.port, vip)
                chains.append(chain)
                refs.update(c for c, _ in clusters)
                tcp_key.append((vip, port.port, tuple(clusters), index.resilience.get(key)))
    external = mesh.external  # ExternalServices, routed and answered alike
    http_ports.update(external.http_ports)
    chains.extend(external.tcp_chains)
    refs.update(external.refs)
    outbound = mesh.outbound_routes(namespace, scope)
    routes = _route_config(index, outbound, mode, external.capture_vhosts)
    dns = tuple(sorted({*dns_table(index.virtual_ips, keys, namespace, _dns_domain(index)),
                        *external.dns}))
    key_: tuple[object, ...] = (mode, tuple(tcp_key), tuple(sorted(http_ports)),
                                tuple(http_vips), tuple(r.version for r in routes_by_name.values()),
                                routes.version, dns, external.key)
    return _Shared(key_, tuple(chains), tuple(sorted(http_ports)), tuple(http_vips),
                   routes_by_name, routes, dns, frozenset(refs - {names.NO_ROUTE_CLUSTER}))


def _shared(mesh: MeshView, proxy: NodeMetadata, scope: Scope) -> _Shared:
    mode = outbound_mode(mesh, proxy)
    slot = ("capture", proxy.namespace, scope, mode)
    found = mesh.capture_memo.get(slot)
    if not isinstance(found, _Shared):
        found = _build_shared(mesh, proxy.namespace, scope, mode)
        mesh.capture_memo[slot] = found
    return found


def capture_inputs(mesh: MeshView, proxy: NodeMetadata, scope: Scope) -> object:
    """What the capture config reads, for `proxy_inputs` (translate/proxy.py): the
    mode, the virtual IPs and TCP routes of the Services in scope, their HTTP ports,
    the routes (by content) and the DNS table. None for a proxy without capture."""
    if proxy.capture is None:
        return None
    return _shared(mesh, proxy, scope).key


def _passthrough() -> Cluster:
    return build(Cluster, {
        "name": PASSTHROUGH_CLUSTER, "type": "ORIGINAL_DST", "lbPolicy": "CLUSTER_PROVIDED",
        "connectTimeout": "2s",
        # An h2c request passed through stays HTTP/2 upstream.
        "typedExtensionProtocolOptions": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_OPTIONS, "useDownstreamProtocolConfig": {}}},
    })


def _blackhole() -> Cluster:
    return build(Cluster, {"name": BLACKHOLE_CLUSTER, "type": "STATIC",
                           "connectTimeout": "2s"})


def _default_chain(mode: OutboundMode, access_log: str | None) -> dict[str, Any]:
    if mode is OutboundMode.ALLOW_ANY:
        return {"name": PASSTHROUGH_CLUSTER,
                "filters": [tcp_proxy_filter(PASSTHROUGH_STATS, [(PASSTHROUGH_CLUSTER, 1)])]}
    log = {} if access_log is None else {"accessLog": [{
        "name": "envoy.access_loggers.file", "typedConfig": {
            "@type": _FILE_LOG, "path": access_log,
            "logFormat": {"textFormatSource": {"inlineString": REFUSED_LOG}}}}]}
    return {"name": REFUSED_ROUTE,
            "filters": [tcp_proxy_filter(REFUSED_STATS, [(BLACKHOLE_CLUSTER, 1)], log)]}


@dataclass(frozen=True)
class CaptureListeners:
    listeners: Mapping[str, XdsResource]
    ports: Mapping[str, int]
    clusters: Mapping[str, XdsResource]


def capture_listeners(mesh: MeshView, proxy: NodeMetadata, scope: Scope,
                      access_log: tuple[dict[str, Any], ...] = (),
                      tracing: dict[str, Any] | None = None) -> CaptureListeners:
    """The `outbound_capture` and `dns` listeners, and the passthrough and blackhole
    clusters. `access_log`, `tracing`: those of the proxy's outbound HTTP listener."""
    capture = proxy.capture
    assert capture is not None
    shared = _shared(mesh, proxy, scope)
    mode = outbound_mode(mesh, proxy)
    optional = optional_outbound_filters(mesh.index)
    hcm = outbound_hcm(CAPTURE_LISTENER, CAPTURE_ROUTES, access_log, tracing, optional)
    http = [{"name": f"http:{port}", "filterChainMatch": {"destinationPort": port},
             "filters": [hcm]} for port in shared.http_ports]
    listener = build(Listener, {
        "name": CAPTURE_LISTENER,
        "address": {"socketAddress": {"address": "127.0.0.1",
                                      "portValue": capture.outbound_port}},
        "trafficDirection": "OUTBOUND",
        "listenerFilters": [{"name": "envoy.filters.listener.original_dst",
                             "typedConfig": {"@type": _ORIGINAL_DST}}],
        "filterChains": [*shared.tcp_chains, *http],
        "defaultFilterChain": _default_chain(mode, proxy.access_log),
    })
    listener.filter_chains.extend(_vip_chains(shared.http_vips, hcm))  # order: no matter
    dns = dns_listener(capture.dns_port, shared.dns, capture.dns_resolvers)
    clusters = {c.name: XdsResource.from_message(CLUSTER, c.name, c)
                for c in (_passthrough(), _blackhole())}
    return CaptureListeners(
        {CAPTURE_LISTENER: XdsResource.from_message(LISTENER, CAPTURE_LISTENER, listener),
         DNS_LISTENER: XdsResource.from_message(LISTENER, DNS_LISTENER, dns)},
        {CAPTURE_LISTENER: capture.outbound_port, DNS_LISTENER: capture.dns_port}, clusters)


def capture_routes(mesh: MeshView, proxy: NodeMetadata,
                   scope: Scope) -> tuple[dict[str, XdsResource], frozenset[str]]:
    """The capture listener's route configs by name (`outbound_capture` and those of
    the virtual IPs' chains), and every cluster they and the listener send to (for
    the consistency check; the Service ports' own are the scope's `route_refs`)."""
    shared = _shared(mesh, proxy, scope)
    return {**shared.port_routes, shared.routes.name: shared.routes}, shared.refs
