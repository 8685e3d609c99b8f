"""The ablation of the instruction-count benchmark: the hand-written pair
(envoy-client.yaml, envoy-server.yaml) with Gossamer's defaults added one at a
time, and with all of them less one at a time.

Every change is taken from Gossamer's own translation code (as ablate.py's),
so the variants follow the generated config when it changes. With instruction
counts each change is resolved on its own (a few hundred instructions a
request), so the groups are finer than ablate.py's:

- retry:      the default retry policy of mesh routes and the removal of the
              unreachable marker from answers (translate/routes.py);
- hcm:        absolute URLs, path normalisation, websocket upgrades (both
              sides), the caller identity (XFCC) and local replies (callee);
  normalize:  only path normalisation and slash merging (both sides);
  xfcc:       only the caller identity header (callee);
  localreply: only the local-reply mappers (callee);
  retry_transport: only retries of failed connects and refused or reset streams;
  retry_hosts: that and the previous_hosts predicate (another host per retry);
  strip:      only the removal of the unreachable marker from answers;
  xfcc_hash:  the caller identity's By= and Hash= alone (no URI=);
  xfcc_early: the caller identity by an early header mutation (formatters);
  flushonadmin: stats flushed on admin reads, not on a 5 s timer (idle cost);
- tap:        the tap filter, disabled by the route while no tap session runs (callee);
  tap_on:     the tap filter on, idle (no session; the default before issue 18);
- corsfault:  the CORS and fault filters, disabled (caller);
- stats:      the sidecar stats config (tags, inclusion list);
- accesslog:  the failure log for `gossamer explain` (both sides; gRPC);
- reqid:      keep the caller's x-request-id (callee);
- connect:    HTTP/2 extended CONNECT allowed (callee HCM, caller cluster);
- routes:     the outbound route table as Gossamer lays it out (a virtual host
              per Service with all its names, a catch-all 404 host).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ablate import hcm, retry, stats

from gossamer.agent.bootstrap import XDS_CLUSTER
from gossamer.translate.fault import FAULT_FILTER
from gossamer.translate.listeners import (
    CALLER_IDENTITY,
    CORS_HTTP_FILTER,
    INBOUND_REPLY,
    TAP_FILTER,
    TAP_OFF,
)
from gossamer.translate.routes import DEFAULT_RETRY, UNREACHABLE_HEADER
from gossamer.translate.telemetry import failure_log

Config = dict[str, Any]
_H2 = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _hcm(config: Config) -> Config:
    typed: Config = (config["static_resources"]["listeners"][0]["filter_chains"][0]
                     ["filters"][0]["typed_config"])
    return typed


def _cluster(config: Config) -> Config:
    cluster: Config = config["static_resources"]["clusters"][0]
    return cluster


def _route(config: Config) -> Config:
    route: Config = _hcm(config)["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
    return route


def retry_transport(client: Config, server: Config) -> None:
    """The default retry policy less what reads answers: retries of failed connects
    and refused or reset streams only."""
    policy = {k: v for k, v in DEFAULT_RETRY.items()
              if k in ("retryOn", "numRetries")}
    policy["retryOn"] = ",".join(c for c in DEFAULT_RETRY["retryOn"].split(",")
                                 if c != "retriable-headers")
    _route(client)["retryPolicy"] = policy


def retry_hosts(client: Config, server: Config) -> None:
    """retry_transport and another host for every retry (the previous_hosts predicate)."""
    retry_transport(client, server)
    _route(client)["retryPolicy"].update(
        {k: DEFAULT_RETRY[k] for k in ("retryHostPredicate", "hostSelectionRetryMaxAttempts")})


def strip(client: Config, server: Config) -> None:
    """Only the removal of the unreachable marker from every answer."""
    _hcm(client)["route_config"]["response_headers_to_remove"] = [UNREACHABLE_HEADER]


def normalize(client: Config, server: Config) -> None:
    for config in (client, server):
        _hcm(config).update({"normalizePath": True, "mergeSlashes": True})


def xfcc(client: Config, server: Config) -> None:
    _hcm(server).update(CALLER_IDENTITY)


def localreply(client: Config, server: Config) -> None:
    _hcm(server)["localReplyConfig"] = INBOUND_REPLY


def tap(client: Config, server: Config) -> None:
    """The tap filter as Gossamer has it with no tap session: in the chain, disabled by
    the route (TAP_OFF), so Envoy leaves it out of each request's chain."""
    tap_on(client, server)
    _hcm(server)["route_config"]["virtual_hosts"][0]["routes"][0][
        "typedPerFilterConfig"] = TAP_OFF


def tap_on(client: Config, server: Config) -> None:
    """The tap filter on, idle (no tap config): Gossamer's default before issue 18, and
    a sidecar's while a tap session of it runs."""
    _hcm(server)["http_filters"][:0] = [TAP_FILTER]


def corsfault(client: Config, server: Config) -> None:
    _hcm(client)["http_filters"][:0] = [CORS_HTTP_FILTER, FAULT_FILTER]


def accesslog(client: Config, server: Config) -> None:
    """Gossamer's failure log; its gRPC cluster leads nowhere (it logs only failures,
    and a run has none: every answer is checked to be a 200)."""
    for config, direction in ((client, "outbound"), (server, "inbound")):
        _hcm(config)["accessLog"] = [failure_log(direction)]
        config["static_resources"]["clusters"].append({
            "name": XDS_CLUSTER, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": XDS_CLUSTER, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": 9}}}}]}]},
            "typed_extension_protocol_options": {_H2: {
                "@type": f"type.googleapis.com/{_H2}",
                "explicit_http_config": {"http2_protocol_options": {}}}}})


def reqid(client: Config, server: Config) -> None:
    _hcm(server)["preserveExternalRequestId"] = True


def connect(client: Config, server: Config) -> None:
    _hcm(server)["http2ProtocolOptions"] = {"allowConnect": True}
    options = _cluster(client)["typed_extension_protocol_options"][_H2]
    options["explicit_http_config"]["http2_protocol_options"] = {"allowConnect": True}


def routes(client: Config, server: Config) -> None:
    config = _hcm(client)["route_config"]
    names = ["backend", "backend.default", "backend.default.svc",
             "backend.default.svc.cluster.local"]
    config["virtual_hosts"][0].update({"name": "backend.default:80",
                                       "domains": [*names, *(f"{n}:80" for n in names)]})
    config["virtual_hosts"].append({"name": "no-such-service", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "direct_response": {"status": 404}}]})
    config["validate_clusters"] = False


CHANGES: dict[str, Callable[[Config, Config], None]] = {
    "retry": retry, "hcm": hcm, "tap": tap, "corsfault": corsfault, "stats": stats,
    "accesslog": accesslog, "reqid": reqid, "connect": connect, "routes": routes,
}
# Parts of a change above, measured alone (not in `all`: their group is).
PARTS: dict[str, Callable[[Config, Config], None]] = {
    "normalize": normalize, "xfcc": xfcc, "localreply": localreply,
    "retry_transport": retry_transport, "retry_hosts": retry_hosts, "strip": strip,
}


def changes_of(variant: str) -> list[Callable[[Config, Config], None]]:
    """`base`; `+X` (the pair with X); `all` (every change); `all-X` (all but X)."""
    if variant == "base":
        return []
    if variant == "all":
        return list(CHANGES.values())
    if variant.startswith("all-") and variant[4:] in CHANGES:
        return [f for n, f in CHANGES.items() if n != variant[4:]]
    if variant.startswith("+") and variant[1:] in {**CHANGES, **PARTS}:
        return [{**CHANGES, **PARTS}[variant[1:]]]
    raise ValueError(f"unknown variant {variant!r}: base, all, +X or all-X with X one of "
                     f"{', '.join([*CHANGES, *PARTS])}")




def xfcc_hash(client: Config, server: Config) -> None:
    """The caller identity without the URI: Envoy's By= and Hash= elements alone."""
    _hcm(server)["forwardClientCertDetails"] = "SANITIZE_SET"


def xfcc_early(client: Config, server: Config) -> None:
    """The caller identity written by an early header mutation (formatters), instead of
    SANITIZE_SET: By= (a constant) and URI=%DOWNSTREAM_PEER_URI_SAN%, no Hash=."""
    _hcm(server)["forwardClientCertDetails"] = "FORWARD_ONLY"
    _hcm(server)["earlyHeaderMutationExtensions"] = [{
        "name": "envoy.http.early_header_mutation.header_mutation",
        "typedConfig": {
            "@type": "type.googleapis.com/envoy.extensions.http.early_header_mutation."
                     "header_mutation.v3.HeaderMutation",
            "mutations": [{"append": {"header": {
                "key": "x-forwarded-client-cert",
                "value": "By=spiffe://bench.local/ns/default/sa/server;"
                         "URI=%DOWNSTREAM_PEER_URI_SAN%"},
                "appendAction": "OVERWRITE_IF_EXISTS_OR_ADD"}}]}}]


def flushonadmin(client: Config, server: Config) -> None:
    """Stats flushed (histograms merged) when the admin endpoint is read, not every 5 s:
    what the agent's bootstrap sets since issue 18 (an idle-cost change, not per request)."""
    for config in (client, server):
        config["stats_flush_on_admin"] = True


PARTS.update({"xfcc_hash": xfcc_hash, "xfcc_early": xfcc_early,
              "flushonadmin": flushonadmin, "tap_on": tap_on})


ADDED = [f"+{n}" for n in [*CHANGES, *PARTS]]
REMOVED = [f"all-{n}" for n in CHANGES]
