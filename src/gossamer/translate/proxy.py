"""Who a proxy is, as its agent describes it in the Envoy node metadata."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gossamer.identity import SpiffeId
from gossamer.model.meta import DNS_LABEL, check_labels
from gossamer.model.service import Protocol


class BadNodeMetadata(ValueError):
    """The node's metadata does not describe a Gossamer sidecar."""


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


def _account(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not DNS_LABEL.match(value) or len(value) > 63:
        raise BadNodeMetadata("node metadata 'service_account' is not a DNS label")
    return value


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


def _resolver(item: object) -> tuple[str, int]:
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


def _resolvers(value: object) -> tuple[tuple[str, int], ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > 8:
        raise BadNodeMetadata("node metadata 'dns_resolvers' must be a list of at most 8 "
                              "IP addresses")
    return tuple(_resolver(item) for item in value)


@dataclass(frozen=True)
class Upstream:
    """A service the app reaches on a dedicated local port (no Host header needed)."""

    service: str
    namespace: str
    port: int
    local_port: int


@dataclass(frozen=True)
class ProxyIdentity:
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
    upstreams: tuple[Upstream, ...] = ()
    # The account of the proxy's SPIFFE identity; None (metadata without
    # `service_account`, older agents): the service name.
    service_account: str | None = None
    # The workload's labels as the agent knows them (locality, version...), sorted
    # pairs so the identity stays hashable.
    labels: tuple[tuple[str, str], ...] = ()
    # The file the agent has Envoy write access logs to; None: no access logs.
    access_log: str | None = None
    # Issue 21: set when the agent captures the workload's traffic (metadata `capture`).
    capture: Capture | None = None

    @property
    def account(self) -> str:
        return self.service_account or self.service

    def spiffe_id(self, trust_domain: str) -> SpiffeId:
        return SpiffeId(trust_domain, self.namespace, self.account)

    @classmethod
    def from_node(cls, node_id: str, metadata: Mapping[str, object]) -> ProxyIdentity:
        def text(key: str, default: str | None = None) -> str:
            value = metadata.get(key, default)
            if not isinstance(value, str) or not value:
                raise BadNodeMetadata(f"node metadata {key!r} is missing or not a string")
            return value

        def number(key: str, default: int = 0) -> int:
            value = metadata.get(key, default)
            try:
                # JSON numbers in a protobuf Struct arrive as floats.
                port = int(value) if isinstance(value, int | float) else int(str(value))
            except (TypeError, ValueError) as exc:
                raise BadNodeMetadata(f"node metadata {key!r} is not a number") from exc
            if not 0 <= port <= 65535:
                raise BadNodeMetadata(f"node metadata {key!r} is not a port")
            return port

        namespace = text("namespace", "default")
        protocol = None
        if metadata.get("app_protocol") is not None:
            try:
                protocol = Protocol(text("app_protocol"))
            except ValueError as exc:
                raise BadNodeMetadata("node metadata 'app_protocol' is not a protocol") from exc
        raw_upstreams = metadata.get("upstreams", [])
        if not isinstance(raw_upstreams, list):
            raise BadNodeMetadata("node metadata 'upstreams' must be a list")
        upstreams = []
        for u in raw_upstreams:
            if not isinstance(u, Mapping):
                raise BadNodeMetadata("node metadata 'upstreams' entries must be objects")
            upstreams.append(Upstream(
                service=str(u.get("service", "")),
                namespace=str(u.get("namespace") or namespace),
                port=int(u.get("port", 0)),
                local_port=int(u.get("local_port", 0)),
            ))
        return cls(
            node_id=node_id,
            service=text("service"),
            namespace=namespace,
            workload=text("workload", node_id),
            inbound_port=number("inbound_port"),
            inbound_address=text("inbound_address", "127.0.0.1"),
            app_port=number("app_port"),
            app_protocol=protocol,
            outbound_port=number("outbound_port"),
            upstreams=tuple(upstreams),
            service_account=_account(metadata.get("service_account")),
            labels=_labels(metadata.get("labels")),
            access_log=_access_log(metadata.get("access_log")),
            capture=_capture(metadata, number),
        )


def _capture(metadata: Mapping[str, object], number: Callable[[str, int], int]
             ) -> Capture | None:
    flag = metadata.get("capture")
    if flag is None or flag is False:
        return None
    if flag is not True:
        raise BadNodeMetadata("node metadata 'capture' must be true or false")
    return Capture(number("capture_port", DEFAULT_CAPTURE_PORT) or DEFAULT_CAPTURE_PORT,
                   number("dns_port", DEFAULT_DNS_PORT) or DEFAULT_DNS_PORT,
                   _resolvers(metadata.get("dns_resolvers")))
