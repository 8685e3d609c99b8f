"""Listeners: inbound (peers -> local app), outbound (app -> mesh, HTTP proxy
style), and one per declared upstream (app -> one service, no Host needed)."""

from __future__ import annotations

from typing import Any

from envoy.config.listener.v3.listener_pb2 import Listener

from gossamer.model.service import Protocol
from gossamer.translate.protos import ADS, HCM, ROUTER, TCP_PROXY, build, socket_address
from gossamer.translate.routes import UNREACHABLE_HEADER

# When the local app cannot be reached (connection failed: UF; nothing to
# connect to: UH) the request never reached it, so callers may retry it on
# another instance whatever its method; this header tells them so.
UNREACHABLE_REPLY: dict[str, Any] = {"mappers": [{
    "filter": {"responseFlagFilter": {"flags": ["UF", "UH"]}},
    "headersToAdd": [{"header": {"key": UNREACHABLE_HEADER, "value": "1"},
                      "appendAction": "OVERWRITE_IF_EXISTS_OR_ADD"}],
}]}


def _hcm(stat_prefix: str, route: dict[str, Any],
         extra: dict[str, Any] | None = None) -> dict[str, Any]:
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
            "httpFilters": [{"name": "envoy.filters.http.router",
                             "typedConfig": {"@type": ROUTER}}],
            **route,
            **(extra or {}),
        },
    }


def _tcp(stat_prefix: str, cluster: str) -> dict[str, Any]:
    return {"name": "envoy.filters.network.tcp_proxy",
            "typedConfig": {"@type": TCP_PROXY, "statPrefix": stat_prefix, "cluster": cluster}}


def _listener(name: str, address: str, port: int, direction: str,
              network_filter: dict[str, Any]) -> Listener:
    return build(Listener, {
        "name": name,
        "address": socket_address(address, port),
        "trafficDirection": direction,
        "filterChains": [{"filters": [network_filter]}],
    })


def inbound_listener(name: str, address: str, port: int, protocol: Protocol,
                     cluster: str) -> Listener:
    """INBOUND so the agent can drain it alone (`/drain_listeners?inboundonly`)."""
    if protocol is Protocol.TCP:
        return _listener(name, address, port, "INBOUND", _tcp("inbound", cluster))
    route = {"routeConfig": {"name": "inbound", "virtualHosts": [{
        "name": "inbound", "domains": ["*"],
        "routes": [{"name": "local-app", "match": {"prefix": "/"},
                    "route": {"cluster": cluster, "timeout": "0s"}}],
    }]}}
    return _listener(name, address, port, "INBOUND",
                     _hcm("inbound", route, {"localReplyConfig": UNREACHABLE_REPLY}))


def http_outbound_listener(name: str, port: int, route_config: str) -> Listener:
    route = {"rds": {"configSource": ADS, "routeConfigName": route_config}}
    return _listener(name, "127.0.0.1", port, "OUTBOUND", _hcm(name, route))


def tcp_outbound_listener(name: str, port: int, cluster: str) -> Listener:
    return _listener(name, "127.0.0.1", port, "OUTBOUND", _tcp(name, cluster))
