"""Who a proxy is: the node metadata its agent writes into Envoy's bootstrap.

Envoy sends it on the first request of every ADS stream, and the control plane
translates for it and authorizes the stream by it. One typed object for both
directions, so the writer and the readers cannot disagree on a key: the agent
builds a `NodeMetadata` and writes `to_metadata()`; the xDS server's authorization
and translation read `from_metadata(node_id, mapping)`, which refuses anything
the agent would not have written with one `BadNodeMetadata`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gossamer.contract.checks import DNS_LABEL, DNS_SUBDOMAIN, check_labels
from gossamer.contract.protocol import Protocol
from gossamer.contract.spiffe import SpiffeId


class BadNodeMetadata(ValueError):
    """The node's metadata does not describe a Gossamer sidecar."""


def node_id_of(workload: str, namespace: str) -> str:
    """The node id an agent gives its Envoy, and the one authorization expects."""
    return f"{workload}.{namespace}"


# The keys of the static admin listeners for other hosts (agent/adminlisteners.py),
# which the control plane and `gossamer prometheus-config` read (proxyadmin/target.py).
ADMIN_PORT = "admin_port"
ADMIN_TLS_ADDRESS, ADMIN_TLS_PORT = "admin_tls_address", "admin_tls_port"
PROMETHEUS_ADDRESS, PROMETHEUS_PORT = "prometheus_address", "prometheus_port"
# The node takes its outbound virtual hosts through VHDS (a delta stream's Envoy).
VHDS = "vhds"

DEFAULT_CAPTURE_PORT = 15001
DEFAULT_DNS_PORT = 15053


@dataclass(frozen=True)
class Capture:
    """The agent redirects the workload's traffic to this sidecar (`gossamer proxy
    --capture`): its outbound TCP to `outbound_port` (translate/capture.py), its DNS
    queries to `dns_port` (translate/dns.py), which forwards names outside the mesh
    to `dns_resolvers`, the host's (from its /etc/resolv.conf)."""

    outbound_port: int = DEFAULT_CAPTURE_PORT
    dns_port: int = DEFAULT_DNS_PORT
    # (address, port): the agent sends addresses, each then on port 53.
    dns_resolvers: tuple[tuple[str, int], ...] = ()

    def to_metadata(self) -> dict[str, Any]:
        return {"capture": True, "capture_port": self.outbound_port, "dns_port": self.dns_port,
                "dns_resolvers": [_resolver_text(*r) for r in self.dns_resolvers]}


def parse_resolver(item: object) -> tuple[str, int]:
    """`IP` (port 53), `IPv4:PORT` or `[IPv6]:PORT`."""
    text = str(item)
    host, port = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") if rest else "53"
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    bad = BadNodeMetadata(f"node metadata 'dns_resolvers': {text!r} is not IP, IP:PORT or "
                          "[IPv6]:PORT")
    try:
        address, number = ipaddress.ip_address(host), int(port)
    except ValueError as exc:
        raise bad from exc
    if not 0 < number < 65536:
        raise bad
    return str(address), number


def _resolver_text(address: str, port: int) -> str:
    if port == 53:
        return address
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


@dataclass(frozen=True)
class Upstream:
    """A service the app reaches on a dedicated local port (no Host header needed)."""

    service: str
    namespace: str
    port: int
    local_port: int

    def to_metadata(self) -> dict[str, Any]:
        return {"service": self.service, "namespace": self.namespace, "port": self.port,
                "local_port": self.local_port}


@dataclass(frozen=True)
class NodeMetadata:
    node_id: str
    service: str
    namespace: str
    workload: str
    # The listener other sidecars reach; 0 = this proxy takes no inbound traffic.
    inbound_port: int
    inbound_address: str
    app_port: int
    # None: use the protocol of the workload's own Service port.
    app_protocol: Protocol | None
    outbound_port: int
    # Envoy's admin listener on loopback (the agent's; the control plane reads
    # stats from it); 0: not given (metadata of a test or an older agent).
    admin_port: int = 0
    upstreams: tuple[Upstream, ...] = ()
    # The account of the proxy's SPIFFE identity; None (metadata without
    # `service_account`, older agents): the service name.
    service_account: str | None = None
    # The workload's labels as the agent knows them (locality, version...), sorted
    # pairs so the object stays hashable.
    labels: tuple[tuple[str, str], ...] = ()
    # The file the agent has Envoy write access logs to; None: no access logs.
    access_log: str | None = None
    # Set when the agent captures the workload's traffic (metadata `capture`).
    capture: Capture | None = None
    # The static listeners on inbound_address for other hosts (0: none): the control
    # plane's mTLS admin (needs a TLS bootstrap) and Prometheus's /stats/prometheus.
    admin_tls_port: int = 0
    prometheus_port: int = 0
    # This node is the gateway NAME, with no app (metadata `gateway`). With no
    # inbound port it is the Envoy of the ingress Gateway NAME in `namespace`
    # (`gossamer gateway`; translate/gateway/ builds its config); with one, an
    # egress gateway routing the ExternalServices whose `egress.via` is NAME.
    gateway: str | None = None
    # The node takes its `outbound` virtual hosts through VHDS (metadata `vhds`,
    # set by agents on delta streams: SotW cannot carry VHDS; translate/vhds.py).
    vhds: bool = False

    @property
    def ingress_gateway(self) -> bool:
        """The Envoy of an ingress Gateway (no inbound port), whose whole config comes
        from the Gateway resource, rather than a sidecar (or an egress gateway)."""
        return self.gateway is not None and not self.inbound_port

    @property
    def account(self) -> str:
        return self.service_account or self.service

    @property
    def names_itself(self) -> bool:
        """Is the node id WORKLOAD.NAMESPACE of this metadata, as the agent writes it?"""
        return self.node_id == node_id_of(self.workload, self.namespace)

    def spiffe_id(self, trust_domain: str) -> SpiffeId:
        return SpiffeId(trust_domain, self.namespace, self.account)

    def to_metadata(self) -> dict[str, Any]:
        """The bootstrap's `node.metadata`; optional keys only when set."""
        return {
            "service": self.service,
            "namespace": self.namespace,
            "workload": self.workload,
            "inbound_port": self.inbound_port,
            "inbound_address": self.inbound_address,
            "app_port": self.app_port,
            **({"app_protocol": self.app_protocol.value} if self.app_protocol else {}),
            "outbound_port": self.outbound_port,
            ADMIN_PORT: self.admin_port,
            "upstreams": [u.to_metadata() for u in self.upstreams],
            **({"service_account": self.service_account} if self.service_account else {}),
            **({"labels": dict(self.labels)} if self.labels else {}),
            **({"access_log": self.access_log} if self.access_log else {}),
            **(self.capture.to_metadata() if self.capture is not None else {}),
            **({ADMIN_TLS_ADDRESS: self.inbound_address, ADMIN_TLS_PORT: self.admin_tls_port}
               if self.admin_tls_port else {}),
            **({PROMETHEUS_ADDRESS: self.inbound_address, PROMETHEUS_PORT: self.prometheus_port}
               if self.prometheus_port else {}),
            **({"gateway": self.gateway} if self.gateway else {}),
            **({VHDS: True} if self.vhds else {}),
        }

    @classmethod
    def from_metadata(cls, node_id: str, metadata: Mapping[str, object]) -> NodeMetadata:
        read = _Reader(metadata)
        namespace = read.text("namespace", "default")
        return cls(
            node_id=node_id,
            service=read.text("service"),
            namespace=namespace,
            workload=read.text("workload", node_id),
            inbound_port=read.port("inbound_port"),
            inbound_address=read.text("inbound_address", "127.0.0.1"),
            app_port=read.port("app_port"),
            app_protocol=read.protocol("app_protocol"),
            outbound_port=read.port("outbound_port"),
            admin_port=read.port(ADMIN_PORT),
            upstreams=read.upstreams("upstreams", namespace),
            service_account=_account(metadata.get("service_account")),
            labels=_labels(metadata.get("labels")),
            access_log=_access_log(metadata.get("access_log")),
            capture=read.capture(),
            admin_tls_port=read.port(ADMIN_TLS_PORT),
            prometheus_port=read.port(PROMETHEUS_PORT),
            gateway=_gateway(metadata.get("gateway")),
            vhds=read.flag(VHDS),
        )


class _Reader:
    """Typed reads of one metadata mapping, each failure a BadNodeMetadata."""

    def __init__(self, metadata: Mapping[str, object]) -> None:
        self.metadata = metadata

    def text(self, key: str, default: str | None = None) -> str:
        value = self.metadata.get(key, default)
        if not isinstance(value, str) or not value:
            raise BadNodeMetadata(f"node metadata {key!r} is missing or not a string")
        return value

    def port(self, key: str, default: int = 0) -> int:
        value = self.metadata.get(key, default)
        try:
            # JSON numbers in a protobuf Struct arrive as floats.
            port = int(value) if isinstance(value, int | float) else int(str(value))
        except (TypeError, ValueError) as exc:
            raise BadNodeMetadata(f"node metadata {key!r} is not a number") from exc
        if not 0 <= port <= 65535:
            raise BadNodeMetadata(f"node metadata {key!r} is not a port")
        return port

    def protocol(self, key: str) -> Protocol | None:
        if self.metadata.get(key) is None:
            return None
        try:
            return Protocol(self.text(key))
        except ValueError as exc:
            raise BadNodeMetadata(f"node metadata {key!r} is not a protocol") from exc

    def flag(self, key: str) -> bool:
        value = self.metadata.get(key, False)
        if not isinstance(value, bool):
            raise BadNodeMetadata(f"node metadata {key!r} must be true or false")
        return value

    def capture(self) -> Capture | None:
        flag = self.metadata.get("capture")
        if flag is None or flag is False:
            return None
        if flag is not True:
            raise BadNodeMetadata("node metadata 'capture' must be true or false")
        resolvers = self.metadata.get("dns_resolvers")
        if resolvers is not None and (not isinstance(resolvers, list) or len(resolvers) > 8):
            raise BadNodeMetadata("node metadata 'dns_resolvers' must be a list of at most 8 "
                                  "IP addresses")
        return Capture(self.port("capture_port", DEFAULT_CAPTURE_PORT) or DEFAULT_CAPTURE_PORT,
                       self.port("dns_port", DEFAULT_DNS_PORT) or DEFAULT_DNS_PORT,
                       tuple(parse_resolver(r) for r in resolvers or ()))

    def upstreams(self, key: str, namespace: str) -> tuple[Upstream, ...]:
        raw = self.metadata.get(key, [])
        if not isinstance(raw, list):
            raise BadNodeMetadata(f"node metadata {key!r} must be a list")
        out = []
        for u in raw:
            if not isinstance(u, Mapping):
                raise BadNodeMetadata(f"node metadata {key!r} entries must be objects")
            out.append(Upstream(
                service=str(u.get("service", "")),
                namespace=str(u.get("namespace") or namespace),
                port=int(u.get("port", 0)),
                local_port=int(u.get("local_port", 0)),
            ))
        return tuple(out)


def _labels(value: object) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise BadNodeMetadata("node metadata 'labels' must map strings to strings")
    try:
        check_labels(dict(value))
    except ValueError as exc:
        raise BadNodeMetadata(f"node metadata 'labels': {exc}") from exc
    return tuple(sorted(value.items()))


def _access_log(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/") or "\n" in value \
            or len(value) > 4096:
        raise BadNodeMetadata("node metadata 'access_log' is not an absolute file path")
    return value


def _gateway(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not DNS_SUBDOMAIN.match(value) or len(value) > 253:
        raise BadNodeMetadata("node metadata 'gateway' is not a Gateway name")
    return value


def _account(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not DNS_LABEL.match(value) or len(value) > 63:
        raise BadNodeMetadata("node metadata 'service_account' is not a DNS label")
    return value
