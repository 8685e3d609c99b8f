"""Listeners: inbound (peers -> local app), outbound (app -> mesh, HTTP proxy
style), and one per declared upstream (app -> one service, no Host needed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_pb2 import RouteConfiguration
from envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2 import (  # noqa: E501
    HttpConnectionManager,
)
from envoy.extensions.filters.network.tcp_proxy.v3.tcp_proxy_pb2 import TcpProxy

from gossamer.contract.protocol import Protocol
from gossamer.index import MeshIndex
from gossamer.model.peerauthentication import MtlsMode
from gossamer.translate import names
from gossamer.translate.fault import FAULT_FILTER
from gossamer.translate.forwardproxy import FORWARD_FILTERS
from gossamer.translate.jwt import JWT_FAILURE, JWT_FILTER, JWT_MISSING_CODE
from gossamer.translate.protos import (
    ADS,
    CORS,
    FILTER_CONFIG,
    HCM,
    ROUTER,
    TCP_PROXY,
    build,
    socket_address,
)
from gossamer.translate.ratelimit import ROUTE_LIMIT_FILTERS
from gossamer.translate.routes import CORS_FILTER, UNREACHABLE_HEADER
from gossamer.translate.tls import TLS_INSPECTOR_FILTER, downstream_mtls

# PERMISSIVE: a caller that waits for the server to speak first (SMTP, MySQL...)
# sends tls_inspector nothing to look at; after this long it is taken as plaintext.
# A mesh TLS client sends its ClientHello at once, so it is never mistaken.
PLAINTEXT_DETECTION_TIMEOUT = "1s"
DENIED_BODY = "gossamer: denied by mesh authorization policy: %RESPONSE_CODE_DETAILS%\n"
UNAUTHENTICATED_BODY = "gossamer: request authentication failed: %RESPONSE_CODE_DETAILS%\n"


def _status(op: str, code: int) -> dict[str, Any]:
    # runtimeKey is required; nothing sets it, so the default holds.
    return {"statusCodeFilter": {"comparison": {"op": op, "value": {
        "defaultValue": code, "runtimeKey": f"gossamer.local_reply.status_{code}"}}}}


# When the local app cannot be reached (connection failed: UF; nothing to
# connect to: UH) the request never reached it, so callers may retry it on
# another instance whatever its method; this header tells them so.
UNREACHABLE_MAPPER: dict[str, Any] = {
    "filter": {"responseFlagFilter": {"flags": ["UF", "UH"]}},
    "headersToAdd": [{"header": {"key": UNREACHABLE_HEADER, "value": "1"},
                      "appendAction": "OVERWRITE_IF_EXISTS_OR_ADD"}],
}
# jwt_authn rejected a token (it answers a wrong audience with 403): always 401.
JWT_MAPPER: dict[str, Any] = {
    "filter": {"andFilter": {"filters": [
        _status("GE", 400),
        {"metadataFilter": {"matcher": {
            "filter": JWT_FILTER, "path": [{"key": JWT_FAILURE}, {"key": "code"}],
            "value": {"doubleMatch": {"range": {"start": JWT_MISSING_CODE + 1, "end": 1e9}}},
        }, "matchIfKeyNotFound": False}},
    ]}},
    "statusCode": 401,
    "bodyFormatOverride": {"textFormatSource": {"inlineString": UNAUTHENTICATED_BODY}},
}
# Every other local 403 on the inbound side is an RBAC denial; say whose.
RBAC_MAPPER: dict[str, Any] = {
    "filter": _status("EQ", 403),
    "bodyFormatOverride": {"textFormatSource": {"inlineString": DENIED_BODY}},
}
# Callers answer CORS preflights of routes with an HTTPRoute CORS filter (per-route
# CorsPolicy, which enables it for that route); disabled, hence out of the filter
# chain, for every other route (see FAULT_FILTER).
CORS_HTTP_FILTER: dict[str, Any] = {"name": CORS_FILTER, "typedConfig": {"@type": CORS},
                                    "disabled": True}
UNREACHABLE_REPLY: dict[str, Any] = {"mappers": [UNREACHABLE_MAPPER]}
INBOUND_REPLY: dict[str, Any] = {"mappers": [UNREACHABLE_MAPPER, JWT_MAPPER, RBAC_MAPPER]}


@dataclass(frozen=True)
class InboundSecurity:
    """What policies add to the inbound listener; the default is plaintext, no checks.

    `mtls` None: plaintext only (mTLS off mesh-wide). STRICT: a TLS chain only,
    so plaintext connections match no chain and are closed. PERMISSIVE: a
    plaintext chain too, with the same filters.
    """

    mtls: MtlsMode | None = None
    # HTTP filters before the router (jwt_authn, RBAC DENY, RBAC ALLOW).
    http_filters: tuple[dict[str, Any], ...] = ()
    # Network filters before tcp_proxy (RBAC DENY, RBAC ALLOW).
    network_filters: tuple[dict[str, Any], ...] = ()


def _hcm(stat_prefix: str, route: dict[str, Any], extra: dict[str, Any] | None = None,
         filters: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typedConfig": {
            "@type": HCM,
            "statPrefix": stat_prefix,
            "codecType": "AUTO",
            # The app speaks to the outbound listener as to an HTTP proxy
            # (absolute-form request targets, e.g. `GET http://catalog/x`).
            "httpProtocolOptions": {"allowAbsoluteUrl": True},
            "normalizePath": True,
            "mergeSlashes": True,
            # WebSocket (HTTP/1.1 Upgrade) passes through caller and callee sidecars.
            "upgradeConfigs": [{"upgradeType": "websocket"}],
            "httpFilters": [*filters, {"name": "envoy.filters.http.router",
                                       "typedConfig": {"@type": ROUTER}}],
            **route,
            **(extra or {}),
        },
    }


def _tcp(stat_prefix: str, cluster: str,
         extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": "envoy.filters.network.tcp_proxy",
            "typedConfig": {"@type": TCP_PROXY, "statPrefix": stat_prefix, "cluster": cluster,
                            **(extra or {})}}


def _listener(name: str, address: str, port: int, direction: str,
              network_filter: dict[str, Any]) -> Listener:
    return build(Listener, {
        "name": name,
        "address": socket_address(address, port),
        "trafficDirection": direction,
        "filterChains": [{"filters": [network_filter]}],
    })


# Live tap (`gossamer tap`): idle until the control plane POSTs a tap config to the
# sidecar's admin /tap; first in the chain, so it also sees requests that later
# filters deny or throttle. Even idle it costs each request ~3k instructions
# (docs/performance.md), so the inbound route disables it (`TAP_OFF`) unless a tap
# session of this sidecar runs: Envoy then leaves it out of the request's filter
# chain. (Disabled here and enabled per route is not possible: enabling needs a
# per-route config, which the tap filter does not have.)
TAP_CONFIG_ID = "gossamer"
TAP_FILTER_NAME = "envoy.filters.http.tap"
TAP_OFF: dict[str, Any] = {TAP_FILTER_NAME: {"@type": FILTER_CONFIG, "disabled": True}}
TAP_FILTER: dict[str, Any] = {
    "name": TAP_FILTER_NAME,
    "typedConfig": {"@type": "type.googleapis.com/envoy.extensions.filters.http.tap.v3.Tap",
                    "commonConfig": {"adminConfig": {"configId": TAP_CONFIG_ID}},
                    "recordHeadersReceivedTime": True,
                    "recordDownstreamConnection": True},
}
# The app (and tap) see the verified caller: the HCM replaces any client-sent
# x-forwarded-client-cert with the peer certificate's URI SAN (its SPIFFE ID).
CALLER_IDENTITY: dict[str, Any] = {
    "forwardClientCertDetails": "SANITIZE_SET",
    "setCurrentClientCertDetails": {"uri": True},
}


def _tracing(tracing: dict[str, Any] | None) -> dict[str, Any]:
    return {} if tracing is None else {"tracing": tracing}


def _inbound_filters(protocol: Protocol, cluster: str, security: InboundSecurity,
                     traffic_filters: tuple[dict[str, Any], ...] = (),
                     stat_prefix: str = names.INBOUND_STATS,
                     access_log: tuple[dict[str, Any], ...] = (),
                     tracing: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    if protocol is Protocol.TCP:
        return [*security.network_filters, _tcp(stat_prefix, cluster)]
    # By RDS (`inbound_route_config`): a tap session changes the route, not the listener.
    route = {"rds": {"configSource": ADS, "routeConfigName": names.INBOUND_ROUTES}}
    log = {"accessLog": list(access_log)} if access_log else {}
    # The caller's sidecar set x-request-id: keep it, so both ends of a hop log one id.
    return [_hcm(stat_prefix, route, {"localReplyConfig": INBOUND_REPLY, **CALLER_IDENTITY,
                                      "preserveExternalRequestId": True,
                                      # WebSocket from a caller's sidecar arrives as an
                                      # HTTP/2 extended CONNECT (clusters.py).
                                      "http2ProtocolOptions": {"allowConnect": True},
                                      **log, **_tracing(tracing)},
                 (TAP_FILTER, *security.http_filters, *traffic_filters))]


def inbound_route_config(cluster: str, tapped: bool = False) -> RouteConfiguration:
    """The inbound HCM's routes (RDS `names.INBOUND_ROUTES`): everything to the local
    app. `tapped`: a tap session of this sidecar runs, so the tap filter stays on."""
    route: dict[str, Any] = {"name": "local-app", "match": {"prefix": "/"},
                             "route": {"cluster": cluster, "timeout": "0s"}}
    if not tapped:
        route["typedPerFilterConfig"] = TAP_OFF
    return build(RouteConfiguration, {"name": names.INBOUND_ROUTES, "virtualHosts": [{
        "name": "inbound", "domains": ["*"], "routes": [route]}]})


def _inbound_chains(filters: list[dict[str, Any]], mtls: MtlsMode | None,
                    plaintext_filters: list[dict[str, Any]] | None = None
                    ) -> list[dict[str, Any]]:
    """`plaintext_filters`: PERMISSIVE's plaintext chain, the same filters counting
    under names.INBOUND_PLAINTEXT_STATS, so the stats tell mTLS traffic from plaintext."""
    if mtls is None:
        return [{"filters": filters}]
    chains = [{"name": names.INBOUND_MTLS_CHAIN,
               "filterChainMatch": {"transportProtocol": "tls"},
               "transportSocket": downstream_mtls(), "filters": filters}]
    if mtls is MtlsMode.PERMISSIVE:
        chains.append({"name": names.INBOUND_PLAINTEXT_CHAIN,
                       "filterChainMatch": {"transportProtocol": "raw_buffer"},
                       "filters": plaintext_filters or filters})
    return chains


def inbound_listener(name: str, address: str, port: int, protocol: Protocol,
                     cluster: str, security: InboundSecurity | None = None,
                     traffic_filters: tuple[dict[str, Any], ...] = (),
                     access_log: tuple[dict[str, Any], ...] = (),
                     tracing: dict[str, Any] | None = None) -> Listener:
    """INBOUND so the agent can drain it alone (`/drain_listeners?inboundonly`).
    `traffic_filters`: HTTP filters after the security ones (adaptive concurrency);
    `access_log`: the HCM's access loggers (translate/telemetry.py);
    `tracing`: the HCM tracing block (translate/tracing.py); its spans are SERVER."""
    security = security or InboundSecurity()
    # Built for a placeholder port and app cluster, so the sidecars of one Service
    # share one `build` (ParseDict is most of a proxy's first translation), then
    # given this sidecar's (`_localized`).
    config: dict[str, Any] = {
        "name": name,
        "address": socket_address(_ANY_ADDRESS, 0),
        "trafficDirection": "INBOUND",
        "filterChains": _inbound_chains(
            _inbound_filters(protocol, _ANY_CLUSTER, security, traffic_filters,
                             access_log=access_log, tracing=tracing), security.mtls,
            _inbound_filters(protocol, _ANY_CLUSTER, security, traffic_filters,
                             names.INBOUND_PLAINTEXT_STATS, access_log, tracing)),
    }
    if security.mtls is not None:
        config["listenerFilters"] = [TLS_INSPECTOR_FILTER]
    if security.mtls is MtlsMode.PERMISSIVE:
        config["listenerFiltersTimeout"] = PLAINTEXT_DETECTION_TIMEOUT
        config["continueOnListenerFiltersTimeout"] = True
    return _localized(build(Listener, config), address, port, cluster)


_ANY_ADDRESS, _ANY_CLUSTER = "0.0.0.0", "gossamer_local_app"


def _localized(listener: Listener, address: str, port: int, cluster: str) -> Listener:
    """The inbound listener template with this sidecar's address, port and app
    cluster: the same message `build` would give for them (Anys repacked
    deterministically, as `canonicalize` does)."""
    listener.address.socket_address.address = address
    listener.address.socket_address.port_value = port
    for chain in listener.filter_chains:
        for f in chain.filters:
            packed = f.typed_config
            prefix = packed.type_url.rsplit("/", 1)[0]
            if packed.Is(TcpProxy.DESCRIPTOR):  # (an HCM's routes come by RDS)
                tcp = TcpProxy()
                packed.Unpack(tcp)
                if tcp.cluster == _ANY_CLUSTER:
                    tcp.cluster = cluster
                packed.Pack(tcp, type_url_prefix=prefix, deterministic=True)
    return listener


def http_outbound_listener(name: str, port: int, route_config: str,
                           access_log: tuple[dict[str, Any], ...] = (),
                           tracing: dict[str, Any] | None = None,
                           optional: tuple[dict[str, Any], ...] = (),
                           first: tuple[dict[str, Any], ...] = ()) -> Listener:
    """The fault and CORS filters are always there, disabled unless a route
    configures them, so fault policies and CORS change routes only. With `tracing` the
    listener's spans are CLIENT spans (traffic direction OUTBOUND). `first`: filters
    before those (on-demand discovery, translate/ondemand.py)."""
    # Built under a placeholder name and port, so one `build` serves every upstream
    # listener of the mesh, then renamed (`_renamed`).
    template = _listener(_ANY_NAME, "127.0.0.1", 0, "OUTBOUND",
                         outbound_hcm(_ANY_NAME, _ANY_NAME, access_log, tracing, optional,
                                      first))
    return _renamed(template, name, port, route_config)


def outbound_hcm(stat_prefix: str, route_config: str,
                 access_log: tuple[dict[str, Any], ...] = (),
                 tracing: dict[str, Any] | None = None,
                 optional: tuple[dict[str, Any], ...] = (),
                 first: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    """The caller side's HTTP connection manager (outbound, per-upstream and capture
    listeners): routes from RDS, the fault and CORS filters always there, disabled
    (routes enable them), and the `optional` ones (`optional_outbound_filters`)."""
    route = {"rds": {"configSource": ADS, "routeConfigName": route_config}}
    log = {"accessLog": list(access_log)} if access_log else {}
    return _hcm(stat_prefix, route, {**log, **_tracing(tracing)},
                filters=(*first, CORS_HTTP_FILTER, FAULT_FILTER, *optional))


def optional_outbound_filters(index: MeshIndex) -> tuple[dict[str, Any], ...]:
    """The disabled filters only some routes turn on, present while the mesh has such
    routes: rate limits on an ExternalService (translate/ratelimit.py) and wildcard
    ExternalServices (forwardproxy.py). Even disabled, each costs every request
    ~0.25k instructions on the caller (bench/dataplane/INSTRUCTIONS.md), so a mesh
    without them does not carry them; the first such policy changes the outbound
    listeners once (a drain), later ones only routes."""
    limits = ROUTE_LIMIT_FILTERS if index.external_rate_limits else ()
    forward = FORWARD_FILTERS if any(e.spec.wildcard for e in
                                     index.external_services.values()) else ()
    return (*limits, *forward)


_ANY_NAME = "gossamer_template"


def _renamed(listener: Listener, name: str, port: int, route_config: str) -> Listener:
    """An outbound HTTP listener template with its name (also its HCM's stat prefix),
    port and RDS route config: the message `build` would give for them."""
    listener.name = name
    listener.address.socket_address.port_value = port
    packed = listener.filter_chains[0].filters[0].typed_config
    hcm = HttpConnectionManager()
    packed.Unpack(hcm)
    hcm.stat_prefix = name
    hcm.rds.route_config_name = route_config
    packed.Pack(hcm, type_url_prefix=packed.type_url.rsplit("/", 1)[0], deterministic=True)
    return listener


def tcp_split_listener(name: str, port: int, clusters: list[tuple[str, int]],
                       settings: dict[str, Any] | None = None) -> Listener:
    """Each new connection goes to one of `clusters` (name, weight), chosen by weight."""
    return _listener(name, "127.0.0.1", port, "OUTBOUND",
                     tcp_proxy_filter(name, clusters, settings))


def tcp_proxy_filter(stat_prefix: str, clusters: list[tuple[str, int]],
                     settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """tcp_proxy to one cluster, or to one of `clusters` (name, weight) by weight."""
    if len(clusters) == 1:
        return _tcp(stat_prefix, clusters[0][0], settings)
    return {"name": "envoy.filters.network.tcp_proxy",
            "typedConfig": {"@type": TCP_PROXY, "statPrefix": stat_prefix,
                            "weightedClusters": {
                                "clusters": [{"name": c, "weight": w} for c, w in clusters]},
                            **(settings or {})}}


def tcp_outbound_listener(name: str, port: int, cluster: str,
                          settings: dict[str, Any] | None = None) -> Listener:
    """`settings`: extra TcpProxy fields (a ResiliencePolicy's idle timeout, hash policy)."""
    return _listener(name, "127.0.0.1", port, "OUTBOUND", _tcp(name, cluster, settings))
