"""Wildcard ExternalServices for sidecars in explicit mode (HTTP_PROXY): Envoy's
dynamic forward proxy.

Capture knows where the app connected (an ORIGINAL_DST cluster, translate/external.py);
an app that sends its request to the outbound listener does not say where, only which
host. So the outbound route config gets a virtual host per wildcard port whose route
sends to a dynamic forward proxy cluster: Envoy resolves the request's host with its
DNS cache and connects to it on `targetPort` (set as the filter state
`envoy.upstream.dynamic_port`, which the forward proxy filter reads, so the Host
header stays the app's); with TLS, the SNI and the name checked are the host's.

The two filters are on every outbound connection manager while the mesh has a
wildcard ExternalService (translate/listeners.py optional_outbound_filters), disabled:
only these routes enable them (their per-route configs), so other routes never run them.
"""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.extensions.clusters.dynamic_forward_proxy.v3 import cluster_pb2  # noqa: F401
from envoy.extensions.filters.http.dynamic_forward_proxy.v3 import (  # noqa: F401
    dynamic_forward_proxy_pb2,
)
from envoy.extensions.filters.http.set_filter_state.v3 import set_filter_state_pb2  # noqa: F401

from gossamer.translate.protos import build

SET_STATE = "gossamer.external.set_port"
FORWARD = "gossamer.external.forward_proxy"
_SET_STATE_TYPE = "type.googleapis.com/envoy.extensions.filters.http.set_filter_state.v3.Config"
_FORWARD_TYPE = ("type.googleapis.com/envoy.extensions.filters.http.dynamic_forward_proxy.v3."
                 "FilterConfig")
_PER_ROUTE_TYPE = ("type.googleapis.com/envoy.extensions.filters.http.dynamic_forward_proxy.v3."
                   "PerRouteConfig")
_CLUSTER_TYPE = ("type.googleapis.com/envoy.extensions.clusters.dynamic_forward_proxy.v3."
                 "ClusterConfig")
# One DNS cache per Envoy: the filter's and every cluster's config must be the same.
DNS_CACHE: dict[str, Any] = {"name": "gossamer_external_hosts", "dnsLookupFamily": "V4_ONLY"}
FORWARD_FILTERS: tuple[dict[str, Any], ...] = (
    {"name": SET_STATE, "disabled": True, "typedConfig": {"@type": _SET_STATE_TYPE}},
    {"name": FORWARD, "disabled": True, "typedConfig": {
        "@type": _FORWARD_TYPE, "dnsCacheConfig": DNS_CACHE,
        "allowDynamicHostFromFilterState": True}},
)


def forward_route_config(port: int) -> dict[str, Any]:
    """The route's `typedPerFilterConfig` entries that turn the filters on and send to
    `port` of the request's host."""
    return {SET_STATE: {"@type": _SET_STATE_TYPE, "onRequestHeaders": [{
                "objectKey": "envoy.upstream.dynamic_port",
                "formatString": {"textFormatSource": {"inlineString": str(port)}}}]},
            FORWARD: {"@type": _PER_ROUTE_TYPE}}


def forward_cluster(name: str, base: dict[str, Any]) -> Cluster:
    """`base`: the wildcard's ORIGINAL_DST cluster settings (timeouts, TLS, HTTP
    options, a ResiliencePolicy's); resolved by the DNS cache instead."""
    data = {k: v for k, v in base.items() if k not in ("type", "originalDstLbConfig")}
    data.update({"name": name, "lbPolicy": "CLUSTER_PROVIDED", "clusterType": {
        "name": "envoy.clusters.dynamic_forward_proxy",
        "typedConfig": {"@type": _CLUSTER_TYPE, "dnsCacheConfig": DNS_CACHE}}})
    return build(Cluster, data)
