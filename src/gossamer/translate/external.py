"""ExternalServices (model/externalservice.py): what every sidecar gets to call them.

Once per mesh (`external_config`), shared by every proxy like the Services' parts:

- a cluster per port (`external|PORT||NAME.NS`) reaching `endpoints` (STATIC for
  addresses, STRICT_DNS when one is a name), or without endpoints one per host and
  port (`external|PORT|HOST|NAME.NS`, LOGICAL_DNS on the host: each host its own
  connections, as a browser keeps them). With `tls.mode: ORIGINATE` the cluster
  speaks TLS: the CA bundle (inline, or a file Envoy reads on the sidecar's host),
  SNI, the certificate's DNS names checked, a client certificate for mTLS;
- for HTTP and GRPC ports, a virtual host per cluster, appended to the `outbound`
  route config (translate/mesh.py) so the app's plain `http://HOST/` reaches it,
  explicitly (HTTP_PROXY) or captured; its domains are the hosts (bare on the
  default port, as for Services), `HOST:PORT`, and the virtual IP likewise;
- for capture (translate/capture.py): the HTTP ports the capture listener must
  hand to its HTTP connection manager, a filter chain per TCP/TLS/HTTPS port
  matching the virtual IP and port, and the DNS names answered with the virtual IP.

An ExternalService with `egress.via` (an egress gateway Service) is routed by sidecars
to that Service's cluster over the mesh's mutual TLS (`mesh_refs`: every proxy gets it
with its endpoints), and its TLS-originating clusters and virtual hosts go to the
gateway alone (`gateways`; translate/egressgateway.py builds its listener).

A TCP, TLS or HTTPS port with `egress.via` cannot be told apart by host: sidecars
send it over mutual TLS to the gateway's workloads with an SNI naming the port of
the ExternalService (`via_sni`), on a cluster of their own made from the gateway
Service's (`via_clusters`, translate/proxy.py), and the gateway's listener picks the
filter chain by that SNI (`GatewayPart.tcp`) and proxies the bytes to the outside
(as Istio's egress gateway does with SNI; the name is not the external host's, so
the gateway never mistakes it for a passthrough of the app's own TLS).

Wildcard hosts get an ORIGINAL_DST cluster per port (where the app connected, on
`targetPort`; TLS names the request's host) and virtual hosts in the capture route
config (`capture_vhosts`): no virtual IP, no DNS name. For explicit mode, a dynamic
forward proxy cluster per port and its virtual host in the outbound route config
(translate/forwardproxy.py), which capture leaves out (`is_forward_vhost`).

A host that is also a name of a mesh Service (`svc.ns`, ...), or of an earlier
ExternalService by (namespace, name), is left out here: Envoy refuses a route
config that lists a domain twice, and the mesh's own names win.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.route.v3.route_components_pb2 import VirtualHost
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from gossamer.contract.protocol import Protocol
from gossamer.index import MeshIndex, SvcKey
from gossamer.index.conditions import service_host_names
from gossamer.model.externalservice import ExternalPort, ExternalService, ExternalTls
from gossamer.model.externalservice import ExternalProtocol as P
from gossamer.model.ratelimitpolicy import RateLimitPolicy
from gossamer.model.resiliencepolicy import ResiliencePolicy
from gossamer.translate import names
from gossamer.translate.forwardproxy import forward_cluster, forward_route_config
from gossamer.translate.listeners import tcp_proxy_filter
from gossamer.translate.protos import HTTP_OPTIONS, UPSTREAM_TLS, build, socket_address
from gossamer.translate.ratelimit import route_limits
from gossamer.translate.resilience import cluster_settings, route_settings
from gossamer.translate.routes import DEFAULT_RETRY
from gossamer.translate.tls import TLS_SOCKET, upstream_mtls_socket
from gossamer.xds.types import CLUSTER, XdsResource

CLUSTER_PREFIX = "external|"
# The explicit mode's cluster and virtual host of a wildcard port (translate/forwardproxy.py).
FORWARD_TAG = "dns"
VIA_PREFIX = "external-via|"
CONNECT_TIMEOUT = "5s"


def external_cluster(namespace: str, name: str, port: int, host: str = "") -> str:
    return f"{CLUSTER_PREFIX}{port}|{host}|{name}.{namespace}"


def via_cluster(namespace: str, name: str, port: int) -> str:
    """A sidecar's cluster to the egress gateway for a TCP port of an ExternalService."""
    return f"{VIA_PREFIX}{port}||{name}.{namespace}"


def via_sni(namespace: str, name: str, port: int) -> str:
    """The SNI that tells the egress gateway which ExternalService port a TCP
    connection is for (a DNS name no external host has)."""
    return f"{port}.{name}.{namespace}.egress.gossamer.internal"


def is_forward_vhost(name: str) -> bool:
    """An explicit mode's wildcard virtual host: capture has its own for those hosts."""
    return name.startswith(f"external:{FORWARD_TAG}@")


def vhost_name(namespace: str, name: str, port: int, host: str = "") -> str:
    """Not `svc.ns:port` (capture.py reads those as Services'): `external:...`."""
    return f"external:{host + '@' if host else ''}{name}.{namespace}:{port}"


@dataclass
class GatewayPart:
    """What an egress gateway (namespace, name) serves: the TLS-originating clusters
    and the virtual hosts of the ExternalServices whose `egress.via` names it."""

    clusters: dict[str, XdsResource] = field(default_factory=dict)
    vhosts: list[VirtualHost] = field(default_factory=list)
    # TCP ports: (SNI, name, the external cluster), a filter chain each.
    tcp: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class ExternalConfig:
    """The ExternalServices' share of the mesh config (see the module docstring)."""

    clusters: Mapping[str, XdsResource] = field(default_factory=dict)
    vhosts: tuple[VirtualHost, ...] = ()
    http_ports: frozenset[int] = frozenset()
    tcp_chains: tuple[dict[str, Any], ...] = ()
    dns: tuple[tuple[str, str], ...] = ()
    # Clusters the virtual hosts and TCP chains send to.
    refs: frozenset[str] = frozenset()
    # A content hash of all the above: equal keys, equal config (proxy_inputs).
    key: str = ""
    # Mesh clusters (egress gateways' Services) the virtual hosts send to: every
    # proxy gets them with their endpoints, whatever its egress scope.
    mesh_refs: frozenset[str] = frozenset()
    gateways: Mapping[SvcKey, GatewayPart] = field(default_factory=dict)
    # Wildcard hosts' virtual hosts: in the capture route config only (their calls go
    # to the original destination, which only capture knows).
    capture_vhosts: tuple[VirtualHost, ...] = ()
    # A sidecar's cluster to an egress gateway for a TCP port -> (the gateway Service's
    # mesh cluster it is made from, the SNI naming the port).
    via_clusters: Mapping[str, tuple[str, str]] = field(default_factory=dict)


def _claimed(index: MeshIndex) -> set[str]:
    """Names callers use for mesh Services (translate/names.py, translate/dns.py)."""
    return set(service_host_names(index.services, index.mesh))


def _tls_socket(tls: ExternalTls, sni: str) -> dict[str, Any]:
    ca = tls.ca_bundle
    trusted = {"inlineString": ca.pem} if ca.pem is not None else {"filename": ca.file}
    sans = tls.subject_alt_names or [tls.sni or sni]
    common: dict[str, Any] = {"validationContext": {
        "trustedCa": trusted,
        "matchTypedSubjectAltNames": [{"sanType": "DNS", "matcher": {"exact": s}}
                                      for s in sans]}}
    if tls.client_certificate is not None:
        cert = tls.client_certificate
        common["tlsCertificates"] = [{"certificateChain": {"filename": cert.certificate_file},
                                      "privateKey": {"filename": cert.private_key_file}}]
    return {"name": "envoy.transport_sockets.tls", "typedConfig": {
        "@type": UPSTREAM_TLS, "sni": tls.sni or sni, "commonTlsContext": common}}


def _is_ip(address: str) -> bool:
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        return False
    return True


def _cluster(ext: ExternalService, port: ExternalPort, cname: str, host: str,
             addresses: list[str], policy: ResiliencePolicy | None) -> Cluster:
    """`host`: the name the TLS handshake asks for (SNI) unless `tls.sni` says."""
    static = all(_is_ip(a) for a in addresses)
    kind = "STATIC" if static else ("LOGICAL_DNS" if len(addresses) == 1 else "STRICT_DNS")
    timeouts = ext.spec.timeouts
    data: dict[str, Any] = {
        "name": cname, "type": kind,
        "connectTimeout": (timeouts.connect if timeouts and timeouts.connect
                           else CONNECT_TIMEOUT),
        "lbPolicy": "ROUND_ROBIN",
        "loadAssignment": {"clusterName": cname, "endpoints": [{"lbEndpoints": [
            {"endpoint": {"address": socket_address(a, port.upstream_port)}}
            for a in addresses]}]},
    }
    if not static:
        data["dnsLookupFamily"] = "V4_ONLY"
    if port.protocol is P.GRPC:
        data["typedExtensionProtocolOptions"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_OPTIONS, "explicitHttpConfig": {"http2ProtocolOptions": {}}}}
    if ext.spec.tls is not None:
        data["transportSocket"] = _tls_socket(ext.spec.tls, host)
    # A ResiliencePolicy on the ExternalService: circuit breaking, outlier detection,
    # load balancing, its connect timeout (over `timeouts.connect`).
    data.update(cluster_settings(policy, _PROTOCOL[port.protocol]))
    return build(Cluster, data)


_PROTOCOL = {P.HTTP: Protocol.HTTP, P.GRPC: Protocol.GRPC, P.TCP: Protocol.TCP,
             P.TLS: Protocol.TCP, P.HTTPS: Protocol.TCP}


def _route(ext: ExternalService, cluster: str, policy: ResiliencePolicy | None,
           *, first_hop: bool = True, limit: RateLimitPolicy | None = None) -> dict[str, Any]:
    """A route action to `cluster`: `timeouts.request`, then the policy's timeouts and
    retries (retries only on the first hop: a gateway does not retry again), and the
    RateLimitPolicy's limits where the calls leave the mesh (the gateway, or else the
    caller's sidecar)."""
    action: dict[str, Any] = {"cluster": cluster}
    timeouts = ext.spec.timeouts
    if timeouts is not None and timeouts.request is not None:
        action["timeout"] = timeouts.request
    if policy is not None and first_hop:
        action["retryPolicy"] = dict(DEFAULT_RETRY)
        route_settings(action, policy, DEFAULT_RETRY)
    elif policy is not None and policy.spec.timeouts and policy.spec.timeouts.request:
        action["timeout"] = policy.spec.timeouts.request
    return {"route": action, **route_limits(limit)}


def _wildcard_cluster(ext: ExternalService, port: ExternalPort, cname: str,
                      policy: ResiliencePolicy | None) -> dict[str, Any]:
    """Where the app connected (capture's original destination) on `targetPort`; with
    TLS, the SNI and the name checked are the request's host (auto SNI/SAN)."""
    timeouts = ext.spec.timeouts
    http: dict[str, Any] = {"@type": HTTP_OPTIONS}
    if port.protocol is P.GRPC:
        http["explicitHttpConfig"] = {"http2ProtocolOptions": {}}
    else:
        http["explicitHttpConfig"] = {"httpProtocolOptions": {}}
    data: dict[str, Any] = {
        "name": cname, "type": "ORIGINAL_DST", "lbPolicy": "CLUSTER_PROVIDED",
        "connectTimeout": (timeouts.connect if timeouts and timeouts.connect
                           else CONNECT_TIMEOUT),
        "originalDstLbConfig": {"upstreamPortOverride": port.upstream_port},
    }
    if ext.spec.tls is not None:
        socket = _tls_socket(ext.spec.tls, "")
        del socket["typedConfig"]["sni"]
        del socket["typedConfig"]["commonTlsContext"]["validationContext"][
            "matchTypedSubjectAltNames"]
        data["transportSocket"] = socket
        http["upstreamHttpProtocolOptions"] = {"autoSni": True, "autoSanValidation": True}
    data["typedExtensionProtocolOptions"] = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": http}
    data.update(cluster_settings(policy, _PROTOCOL[port.protocol]))
    return data


def _default_port(ext: ExternalService) -> int | None:
    http = [p.port for p in ext.spec.ports if p.protocol.by_host]
    return None if not http else (80 if 80 in http else http[0])


def _vhost(ext: ExternalService, port: ExternalPort, hosts: list[str], vip: str | None,
           action: dict[str, Any], name: str) -> VirtualHost:
    default = port.port == _default_port(ext)
    domains = [*(hosts if default else []), *(f"{h}:{port.port}" for h in hosts)]
    if vip is not None:
        domains += [*([vip] if default else []), f"{vip}:{port.port}"]
    return build(VirtualHost, {"name": name, "domains": domains, "routes": [
        {"name": name, "match": {"prefix": "/"}, **action}]})


def _gateway_port(index: MeshIndex, namespace: str, via: str) -> int | None:
    """The port of Service `via` sidecars call the egress gateway on: its first HTTP one."""
    svc = index.services.get((namespace, via))
    return next((p.port for p in svc.spec.ports if p.protocol.is_http), None) if svc else None


def _gateway_action(index: MeshIndex, ext: ExternalService, namespace: str,
                    via: str) -> dict[str, Any]:
    """Sidecars send a gateway-bound call to Service `via`'s first HTTP port, over the
    mesh's mutual TLS; without such a Service, a 503 naming it."""
    port = _gateway_port(index, namespace, via)
    if port is None:
        return {"directResponse": {"status": 503, "body": {"inlineString": (
            f"gossamer: egress gateway Service {namespace}/{via} not found (or it has no "
            "HTTP port)\n")}}}
    policy = index.external_resilience.get((namespace, ext.metadata.name))
    return _route(ext, names.outbound_cluster(namespace, via, port), policy)


@dataclass
class _Builder:
    index: MeshIndex
    taken: set[str]
    clusters: dict[str, XdsResource] = field(default_factory=dict)
    vhosts: list[VirtualHost] = field(default_factory=list)
    http_ports: set[int] = field(default_factory=set)
    chains: list[dict[str, Any]] = field(default_factory=list)
    dns: set[tuple[str, str]] = field(default_factory=set)
    mesh_refs: set[str] = field(default_factory=set)
    gateways: dict[SvcKey, GatewayPart] = field(default_factory=dict)
    capture_vhosts: list[VirtualHost] = field(default_factory=list)
    via_clusters: dict[str, tuple[str, str]] = field(default_factory=dict)

    def add(self, key: SvcKey, ext: ExternalService) -> None:
        ns, name = key
        hosts = [h for h in ext.spec.hosts if h not in self.taken]
        if not hosts:
            return
        self.taken.update(hosts)
        if ext.spec.wildcard:
            self._add_wildcard(key, ext, hosts)
            return
        vip = self.index.external_vips.get(key)
        if vip is not None:
            self.dns.update((h, vip) for h in hosts)
        via = ext.spec.egress.via if ext.spec.egress is not None else None
        policy = self.index.external_resilience.get(key)
        limit = self.index.external_rate_limits.get(key)
        gateway = self.gateways.setdefault((ns, via), GatewayPart()) if via else None
        for port in ext.spec.ports:
            # With endpoints one cluster for every host; without, one per host.
            groups = ([("", hosts, list(ext.spec.endpoints))] if ext.spec.endpoints
                      else [(h, [h], [h]) for h in hosts])
            for tag, group, addresses in groups:
                cname = external_cluster(ns, name, port.port, tag)
                cluster = XdsResource.from_message(
                    CLUSTER, cname, _cluster(ext, port, cname, group[0], addresses, policy))
                vname = vhost_name(ns, name, port.port, tag)
                if port.protocol.by_host:
                    self.http_ports.add(port.port)
                if gateway is not None and via is not None and not port.protocol.by_host:
                    gateway.clusters[cname] = cluster
                    if tag == groups[0][0]:  # the port's one chain (see below)
                        gateway.tcp.append((via_sni(ns, name, port.port),
                                            vhost_name(ns, name, port.port), cname))
                    continue
                if gateway is not None and via is not None:
                    gateway.clusters[cname] = cluster
                    gateway.vhosts.append(_vhost(ext, port, group, vip,
                                                 _route(ext, cname, policy, first_hop=False,
                                                        limit=limit),
                                                 vname))
                    action = _gateway_action(self.index, ext, ns, via)
                    if "route" in action:
                        self.mesh_refs.add(action["route"]["cluster"])
                    self.vhosts.append(_vhost(ext, port, group, vip, action, vname))
                    continue
                self.clusters[cname] = cluster
                if port.protocol.by_host:
                    self.vhosts.append(_vhost(ext, port, group, vip,
                                              _route(ext, cname, policy, limit=limit), vname))
            if not port.protocol.by_host and vip is not None:
                # One cluster per port for a name-less (TCP/TLS) connection: the first
                # group's (a connection to the virtual IP does not say which host).
                cname = external_cluster(ns, name, port.port, groups[0][0])
                if via is not None:
                    gport = _gateway_port(self.index, ns, via)
                    if gport is None:  # no gateway Service: no chain, the call fails
                        continue
                    mesh_cluster = names.outbound_cluster(ns, via, gport)
                    cname = via_cluster(ns, name, port.port)
                    self.via_clusters[cname] = (mesh_cluster, via_sni(ns, name, port.port))
                    self.mesh_refs.add(mesh_cluster)
                self.chains.append({
                    "name": vhost_name(ns, name, port.port),
                    "filterChainMatch": {"prefixRanges": [{"addressPrefix": vip,
                                                           "prefixLen": 32}],
                                         "destinationPort": port.port},
                    "filters": [tcp_proxy_filter(cname, [(cname, 1)])]})

    def _add_wildcard(self, key: SvcKey, ext: ExternalService, hosts: list[str]) -> None:
        """No virtual IP and no DNS name (the app's own DNS finds the host); the
        capture listener routes by host to an original-destination cluster."""
        ns, name = key
        policy = self.index.external_resilience.get(key)
        limit = self.index.external_rate_limits.get(key)
        for port in ext.spec.ports:  # HTTP and GRPC only (the model)
            cname = external_cluster(ns, name, port.port, "*")
            data = _wildcard_cluster(ext, port, cname, policy)
            self.clusters[cname] = XdsResource.from_message(CLUSTER, cname,
                                                            build(Cluster, data))
            self.http_ports.add(port.port)
            self.capture_vhosts.append(_vhost(ext, port, hosts, None,
                                              _route(ext, cname, policy, limit=limit),
                                              vhost_name(ns, name, port.port, "*")))
            # Explicit mode: no original destination; the host's DNS name on targetPort.
            fname = external_cluster(ns, name, port.port, FORWARD_TAG)
            self.clusters[fname] = XdsResource.from_message(CLUSTER, fname,
                                                            forward_cluster(fname, data))
            action = _route(ext, fname, policy, limit=limit)
            action["typedPerFilterConfig"] = {**action.get("typedPerFilterConfig", {}),
                                              **forward_route_config(port.upstream_port)}
            self.vhosts.append(_vhost(ext, port, hosts, None, action,
                                      vhost_name(ns, name, port.port, FORWARD_TAG)))

    def done(self) -> ExternalConfig:
        digest = hashlib.sha256()
        parts = [*self.clusters.values(),
                 *(c for g in self.gateways.values() for c in g.clusters.values())]
        for res in sorted(parts, key=lambda r: r.name):
            digest.update(res.version.encode())
        for vhost in [*self.vhosts, *self.capture_vhosts,
                      *(v for g in self.gateways.values() for v in g.vhosts)]:
            digest.update(vhost.SerializeToString(deterministic=True))
        digest.update(repr((sorted(self.http_ports), self.chains, sorted(self.dns),
                            sorted(self.mesh_refs), sorted(self.gateways),
                            sorted(self.via_clusters.items()),
                            [g.tcp for _, g in sorted(self.gateways.items())])).encode())
        return ExternalConfig(self.clusters, tuple(self.vhosts), frozenset(self.http_ports),
                              tuple(self.chains), tuple(sorted(self.dns)),
                              frozenset({*self.clusters, *self.mesh_refs,
                                         *self.via_clusters}),
                              digest.hexdigest()[:16], frozenset(self.mesh_refs),
                              self.gateways, tuple(self.capture_vhosts), self.via_clusters)


@lru_cache(maxsize=256)
def via_cluster_resource(name: str, sni: str, mesh_cluster: XdsResource) -> XdsResource:
    """A sidecar's cluster to the egress gateway for one TCP port: the gateway
    Service's cluster (its endpoints by EDS, the gateway's identities checked) with
    the port's SNI, and no HTTP options (it carries bytes)."""
    cluster = Cluster.FromString(mesh_cluster.payload)
    cluster.name = name
    cluster.ClearField("typed_extension_protocol_options")
    context = tls_pb2.UpstreamTlsContext()
    if cluster.HasField("transport_socket"):
        cluster.transport_socket.typed_config.Unpack(context)
    else:  # mTLS off mesh-wide: the gateway still tells the port by SNI
        upstream_mtls_socket((), h2=False).typed_config.Unpack(context)
    context.sni = sni
    del context.common_tls_context.alpn_protocols[:]
    cluster.transport_socket.name = TLS_SOCKET
    cluster.transport_socket.typed_config.Pack(context, deterministic=True)
    return XdsResource.from_message(CLUSTER, name, cluster)


def external_config(index: MeshIndex) -> ExternalConfig:
    """Every ExternalService's share, in (namespace, name) order (the first keeps a
    host two of them name)."""
    if not index.external_services:
        return EMPTY
    builder = _Builder(index, _claimed(index))
    for key in sorted(index.external_services):
        builder.add(key, index.external_services[key])
    return builder.done()


EMPTY = ExternalConfig()
