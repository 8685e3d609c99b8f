"""A proxy's listeners, and the clusters that come with them, from the shared mesh.

Building a proxy's listeners is most of its translation, so they are kept across
meshes while what they read (`listener_inputs`, declared here beside the builder
that reads it) is unchanged: a route change re-sends routes, not listeners.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gossamer.contract.node import NodeMetadata, Upstream
from gossamer.contract.protocol import Protocol
from gossamer.index import MeshIndex, PortKey
from gossamer.translate import names
from gossamer.translate.adaptive import inbound_traffic_filters
from gossamer.translate.capture import capture_inputs, capture_listeners
from gossamer.translate.clusters import inbound_cluster
from gossamer.translate.egressgateway import gateway_resources
from gossamer.translate.listeners import (
    http_outbound_listener,
    inbound_listener,
    optional_outbound_filters,
    tcp_outbound_listener,
    tcp_split_listener,
)
from gossamer.translate.mesh import MeshConfig
from gossamer.translate.ondemand import ON_DEMAND_FILTER, on_demand_for
from gossamer.translate.resilience import tcp_settings
from gossamer.translate.tcproutes import tcp_route_clusters
from gossamer.translate.telemetry import proxy_access_log
from gossamer.translate.tracing import ProxyTracing, proxy_tracing
from gossamer.xds.types import CLUSTER, LISTENER, XdsResource


@dataclass(frozen=True)
class ProxyListeners:
    """A proxy's listeners and what comes with them: its own clusters (local app,
    JWKS, tracing) and each listener's port. They read only `listener_inputs`."""

    inputs: tuple[object, ...]
    listeners: Mapping[str, XdsResource]
    extra: Mapping[str, XdsResource]
    ports: Mapping[str, int]
    # The local app's cluster when the inbound listener is HTTP: its routes (RDS,
    # `inbound_route_config`) send there.
    inbound_http: str | None = None


def listener_inputs(mesh: MeshConfig, proxy: NodeMetadata) -> tuple[object, ...]:
    """What `proxy_listeners` reads: the part of `proxy_inputs` without its scope's
    clusters and its route configs (listeners name route configs, RDS sends them).
    A TCP upstream's listener names its clusters itself (a TCPRoute's split), so
    for TCP the clusters it sends to count too."""
    own = sorted(mesh.index.proxy_services(proxy.namespace, proxy.workload, proxy.service))
    upstreams = tuple(
        (pkey, protocol, mesh.index.tcp_routes.get(pkey),
         mesh.port_refs.get(pkey) if protocol is Protocol.TCP else None)
        for up in proxy.upstreams
        for pkey in [(up.namespace, up.service, up.port)]
        for protocol in [mesh.protocols.get(pkey)])
    return (proxy, upstreams, mesh.policy_inputs,
            tuple(mesh.index.services.get(k) for k in own),
            mesh.workload(proxy.namespace, proxy.workload),
            capture_inputs(mesh, proxy, mesh.scope_of(proxy)),
            mesh.external.key if proxy.gateway else None,  # an egress gateway's routes
            tuple(f["name"] for f in optional_outbound_filters(mesh.index)),
            on_demand_for(mesh, proxy, mesh.scope_of(proxy)))


def proxy_listeners(mesh: MeshConfig, proxy: NodeMetadata,
                     inputs: tuple[object, ...]) -> ProxyListeners:
    extra: dict[str, XdsResource] = {}
    listeners: dict[str, XdsResource] = {}
    ports: dict[str, int] = {}
    tracing = _proxy_tracing(mesh, proxy)
    hcm_tracing = None if tracing is None else tracing.hcm
    if tracing is not None:
        extra[tracing.cluster.name] = _res(CLUSTER, tracing.cluster.name, tracing.cluster)
    own_services = mesh.index.proxy_services(proxy.namespace, proxy.workload, proxy.service)
    inbound_http = None
    if proxy.inbound_port and (proxy.app_port or proxy.gateway):
        listener, needed = (gateway_resources(mesh, proxy, hcm_tracing) if proxy.gateway
                            else _inbound_resources(mesh, proxy, hcm_tracing))
        extra.update((c.name, c) for c in needed)
        if not proxy.gateway and _own_protocol(mesh.index, proxy) is not Protocol.TCP:
            inbound_http = needed[0].name  # the local app's (an egress gateway's are inline)
        listeners[listener.name] = listener
        ports[listener.name] = proxy.inbound_port
    if proxy.outbound_port:
        lis = http_outbound_listener(names.OUTBOUND_LISTENER, proxy.outbound_port,
                                     names.OUTBOUND_ROUTES, proxy_access_log(
                                         mesh.index, proxy, own_services, "outbound"),
                                     hcm_tracing, optional_outbound_filters(mesh.index),
                                     (ON_DEMAND_FILTER,) if on_demand_for(
                                         mesh, proxy, mesh.scope_of(proxy)) else ())
        listeners[lis.name] = _res(LISTENER, lis.name, lis)
        ports[lis.name] = proxy.outbound_port
    for up in proxy.upstreams:
        listener = _upstream_listener(mesh, up, proxy_access_log(
            mesh.index, proxy, own_services, "outbound", up), hcm_tracing)
        listeners[listener.name] = listener
        ports[listener.name] = up.local_port
    if proxy.capture is not None:
        capture = capture_listeners(mesh, proxy, mesh.scope_of(proxy), proxy_access_log(
            mesh.index, proxy, own_services, "outbound"), hcm_tracing)
        listeners.update(capture.listeners)
        ports.update(capture.ports)
        extra.update(capture.clusters)
    return ProxyListeners(inputs, listeners, extra, ports, inbound_http)


def _inbound_resources(mesh: MeshConfig, proxy: NodeMetadata,
                       tracing: dict[str, Any] | None = None
                       ) -> tuple[XdsResource, list[XdsResource]]:
    """The inbound listener, and the clusters it needs: the local app, JWKS servers."""
    protocol = _own_protocol(mesh.index, proxy)
    local = inbound_cluster(proxy.app_port, protocol)
    services = mesh.index.proxy_services(proxy.namespace, proxy.workload, proxy.service)
    security, jwks = mesh.inbound_security(
        (proxy.namespace, services, proxy.app_port, proxy.inbound_port, protocol))
    traffic = () if protocol is Protocol.TCP else inbound_traffic_filters(mesh.index, services)
    log = proxy_access_log(mesh.index, proxy, services, "inbound")
    lis = inbound_listener(names.INBOUND_LISTENER, proxy.inbound_address,
                           proxy.inbound_port, protocol, local.name, security, traffic,
                           log, tracing)
    return _res(LISTENER, lis.name, lis), [_res(CLUSTER, local.name, local), *jwks]


def _upstream_listener(mesh: MeshConfig, up: Upstream, log: tuple[dict[str, Any], ...] = (),
                       tracing: dict[str, Any] | None = None) -> XdsResource:
    """`log`, `tracing`: the access loggers and tracing of the HTTP listener (a TCP one
    has neither). An HTTP listener takes its routes from RDS (translate/proxy.py)."""
    pkey: PortKey = (up.namespace, up.service, up.port)
    lname = names.upstream_listener(up.namespace, up.service, up.port)
    if mesh.protocols.get(pkey) is Protocol.TCP:
        cluster = names.outbound_cluster(up.namespace, up.service, up.port)
        settings = tcp_settings(mesh.index.resilience.get((up.namespace, up.service)))
        listener = tcp_outbound_listener(lname, up.local_port, cluster, settings)
        if (troute := mesh.index.tcp_routes.get(pkey)) is not None:
            split = tcp_route_clusters(troute, mesh.index.services)
            listener = tcp_split_listener(lname, up.local_port, split, settings)
        return _res(LISTENER, lname, listener)
    listener = http_outbound_listener(lname, up.local_port, lname, log, tracing,
                                      optional_outbound_filters(mesh.index))
    return _res(LISTENER, lname, listener)


def _own_protocol(index: MeshIndex, proxy: NodeMetadata) -> Protocol:
    """What the agent declared, else the Service's (first) port protocol."""
    if proxy.app_protocol is not None:
        return proxy.app_protocol
    svc = index.service(proxy.namespace, proxy.service)
    return svc.spec.ports[0].protocol if svc else Protocol.HTTP


def _proxy_tracing(mesh: MeshConfig, proxy: NodeMetadata) -> ProxyTracing | None:
    services = mesh.index.proxy_services(proxy.namespace, proxy.workload, proxy.service)
    return proxy_tracing(mesh.index, proxy.namespace, services, proxy.service, proxy.workload)


def _res(type_url: str, name: str, message: Any) -> XdsResource:
    return XdsResource.from_message(type_url, name, message)
