"""The ablation of the ingress gateway: the hand-written caller Envoy
(envoy-client.yaml, where `ingress` puts the gateway) with one of the gateway's
defaults added at a time (`gw+X`), all of them (`gwall`), and all less one
(`gwall-X`). The callee is the hand-written one throughout, so the caller column
is the comparison.

The gateway's HTTP connection manager is taken from the gateway's own
translation (translate/gateway/listeners.py) for a Gateway with one HTTP listener
and no annotation (the defaults), so the variants follow it when it changes:

- buffer:     the request body limit (the buffer filter, `max-request-body-kb`);
- corsfault:  the CORS and fault filters (disabled until a policy enables them);
- xff:        the client address from the connection (`useRemoteAddress`) and the
              trusted hops of `X-Forwarded-For`;
- limits:     the request header size limit and refusing headers with underscores;
- hostport:   the port stripped from Host before routing;
- normalize:  path normalisation, slash merging, refusing escaped slashes;
- upgrade:    WebSocket upgrades (their own filter chain);
- localreply: the 401 body of a failed JWT check;
- accesslog:  the failure log for `gossamer explain` (gRPC, to the control plane);
- retry:      the mesh's default retry policy and the unreachable marker's removal
              from answers (translate/routes.py, as on a caller sidecar);
- connbuf:    the listener's 32 KiB per-connection buffer;
- cluster:    the mesh cluster's options (no panic threshold, extended CONNECT);
- stats:      the agent's stats config (tags, inclusion list) for the gateway.

`edge` is the pair's caller with what Envoy's documentation advises for an edge
proxy and the gateway has (xff, limits, normalize, connbuf): a hand-written
gateway with the same edge defaults, the fairer side-by-side for `ingress`.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from ablate import retry
from irvariants import accesslog as _accesslog_both

from gossamer.agent.stats import stats_config
from gossamer.model.gateway import ANNOTATIONS
from gossamer.translate.gateway.listeners import EdgeHttp
from gossamer.translate.gateway.listeners import _hcm as gateway_connection_manager
from gossamer.translate.telemetry import failure_log

Config = dict[str, Any]
_H2 = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def edge_hcm() -> Config:
    """The typed config of a default gateway's HTTP connection manager."""
    view = SimpleNamespace(gateway=SimpleNamespace(setting=lambda key: ANNOTATIONS[key][0]))
    hcm: Config = gateway_connection_manager(
        view, 0, EdgeHttp(access_log=(failure_log("inbound"),)))["typedConfig"]  # type: ignore[arg-type]
    return hcm


def _client_hcm(client: Config) -> Config:
    typed: Config = (client["static_resources"]["listeners"][0]["filter_chains"][0]
                     ["filters"][0]["typed_config"])
    return typed


def _keys(*keys: str) -> Callable[[Config, Config], None]:
    """The gateway's values of `keys` (a KeyError when the translation has dropped one,
    rather than a variant that silently measures the pair)."""
    def change(client: Config, server: Config) -> None:
        edge = edge_hcm()
        _client_hcm(client).update({k: edge[k] for k in keys})
    return change


def _filters(*names: str) -> Callable[[Config, Config], None]:
    """The gateway's HTTP filters named (before the router, in the gateway's order)."""
    def change(client: Config, server: Config) -> None:
        chain = _client_hcm(client)["http_filters"]
        added = [f for f in edge_hcm()["httpFilters"] if f["name"] in names]
        if len(added) != len(names):
            raise KeyError(f"the gateway's chain lacks one of {names}")
        chain[len(chain) - 1:len(chain) - 1] = added
    return change


def accesslog(client: Config, server: Config) -> None:
    """The failure log on the gateway only (the callee stays hand-written)."""
    scratch: Config = {"static_resources": {"listeners": [{"filter_chains": [{"filters": [
        {"typed_config": {}}]}]}], "clusters": []}}
    _accesslog_both(client, scratch)
    _client_hcm(client)["accessLog"] = edge_hcm()["accessLog"]


def connbuf(client: Config, server: Config) -> None:
    client["static_resources"]["listeners"][0]["perConnectionBufferLimitBytes"] = 32768


def cluster(client: Config, server: Config) -> None:
    backend = client["static_resources"]["clusters"][0]
    backend["commonLbConfig"] = {"healthyPanicThreshold": {"value": 0}}
    options = backend["typed_extension_protocol_options"][_H2]
    options["explicit_http_config"]["http2_protocol_options"] = {"allowConnect": True}


def stats(client: Config, server: Config) -> None:
    client["statsConfig"] = stats_config("ingress", "default", "ingress-0")


GATEWAY: dict[str, Callable[[Config, Config], None]] = {
    "buffer": _filters("envoy.filters.http.buffer"),
    "corsfault": _filters("envoy.filters.http.cors", "envoy.filters.http.fault"),
    "xff": _keys("useRemoteAddress", "xffNumTrustedHops"),
    "limits": _keys("maxRequestHeadersKb", "commonHttpProtocolOptions"),
    "hostport": _keys("stripAnyHostPort"),
    "normalize": _keys("normalizePath", "mergeSlashes", "pathWithEscapedSlashesAction"),
    "upgrade": _keys("upgradeConfigs"),
    "localreply": _keys("localReplyConfig"),
    "accesslog": accesslog,
    "retry": retry,
    "connbuf": connbuf,
    "cluster": cluster,
    "stats": stats,
}


# Envoy's own advice for an edge proxy ("Configuring Envoy as an edge proxy", Envoy's
# best practices), as the gateway has it: `edge`, the hand-written gateway a user
# following Envoy's documentation writes, the pair's caller with these.
EDGE = ("xff", "limits", "normalize", "connbuf")


def gateway_changes(variant: str) -> list[Callable[[Config, Config], None]] | None:
    """`edge`, `gw+X`, `gwall`, `gwall-X`; None for a variant that is not the gateway's."""
    if variant == "edge":
        return [GATEWAY[n] for n in EDGE]
    if variant == "gwall":
        return list(GATEWAY.values())
    if variant.startswith("gwall-") and variant[6:] in GATEWAY:
        return [f for n, f in GATEWAY.items() if n != variant[6:]]
    if variant.startswith("gw+") and variant[3:] in GATEWAY:
        return [GATEWAY[variant[3:]]]
    return None


GW_ADDED = [f"gw+{n}" for n in GATEWAY]
GW_REMOVED = [f"gwall-{n}" for n in GATEWAY]
