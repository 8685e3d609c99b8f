"""The sidecar's stats config: mesh labels on every stat, and only the stats the mesh uses.

Stat names stay Envoy's own (`/stats` shows them whole, and tests and the
control plane read them so); tags only shape the Prometheus output
(`/stats/prometheus`), where e.g. `cluster.outbound|80||echo.default.upstream_rq_200`
becomes `envoy_cluster_upstream_rq{envoy_cluster_name="outbound|80||echo.default",
destination_service="echo",destination_namespace="default",destination_port="80",
envoy_response_code="200",source_service=...}`.

Envoy's default cluster and HCM prefix extractors cut a name at its first dot,
which splits `SVC.NS` in our cluster and upstream listener names, and Envoy
refuses a custom tag named like a default one while the defaults are on; so the
defaults are off and the ones the mesh needs are listed here with regexes that
know our names (translate/names.py).

Envoy allocates every stat each filter, cluster and listener may count, per
cluster and per listener; the inclusion list keeps the ones the mesh reads
(docs/observability.md lists them), so memory does not grow with unused
counters as services are added.
"""

from __future__ import annotations

from typing import Any

# `SVC.NS` after `outbound|PORT|SUBSET|` or `upstream|PORT|SUBSET|`.
_MESH_NAME = r"(?:outbound|upstream)\|\d+\|[^|]*\|[^.|]+\.[^.|]+"
_JWKS_NAME = r"jwks\|[^|:]+:\d+"
# An ExternalService's cluster: `external|PORT|HOST|NAME.NS`, HOST with dots.
_EXTERNAL_NAME = r"external\|\d+\|[^|]*\|[^.|]+\.[^.|]+"
# Envoy's own listener address pattern (IPv4 with dots, or IPv6).
_ADDRESS = r"(?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*)"
# A virtual host of the outbound route config (`SVC.NS:PORT`) or of an upstream listener.
_VHOST = rf"(?:[^.|:/]+\.[^.|:]+:\d+|{_MESH_NAME})"
# `vhost.`, and the route config's name by which VHDS names virtual hosts
# (`outbound/SVC.NS:PORT`, translate/vhds.py): removed with the name, not in the tag.
_VHOST_STAT = r"vhost\.(?:outbound/)?"
_EDGE = r"(?:cluster\.outbound|cluster\.external|http\.upstream|tcp\.upstream|vhost\.upstream)\|"
# Where the called Service's name starts: after `PORT|SUBSET|` or, in `SVC.NS:PORT`, at once.
_DEST = rf"^(?:{_EDGE}\d+\|[^|]*\||{_VHOST_STAT})"

TAGS: tuple[tuple[str, str], ...] = (
    ("envoy.cluster_name",
     rf"^cluster\.(({_MESH_NAME}|{_EXTERNAL_NAME}|{_JWKS_NAME}|[^.]+)\.)"),
    ("envoy.http_conn_manager_prefix", rf"^http\.(({_MESH_NAME}|[^.]+)\.)"),
    ("envoy.tcp_prefix", rf"^tcp\.(({_MESH_NAME}|[^.]+)\.)"),
    ("envoy.listener_address", rf"^listener\.(({_ADDRESS})\.)"),
    ("envoy.response_code", r"_rq(_(\d{3}))$"),
    # As Envoy's default: upstream_rq_5xx -> upstream_rq_xx{envoy_response_code_class="5"}.
    ("envoy.response_code_class", r"_rq_(\d)xx$"),
    ("envoy.virtual_host", rf"^vhost\.((?:outbound/)?({_VHOST})\.)"),
    ("envoy.route", rf"^{_VHOST_STAT}{_VHOST}\.route\.(([^.]+)\.)"),
    # Inside the names above, which are removed whole; these only read them.
    ("destination_port", rf"^(?:{_EDGE}|{_VHOST_STAT}[^.|:]+\.[^.|:]+:)((\d+))[|.]"),
    ("destination_service", rf"{_DEST}(([^.|:]+))\."),
    ("destination_namespace", rf"{_DEST}[^.|:]+\.(([^.|:]+))[.:]"),
)

_CLUSTER_STATS = (
    r"upstream_rq_total", r"upstream_rq_\d{3}", r"upstream_rq_\dxx", r"upstream_rq_time",
    r"upstream_cx_[a-z_]+", r"upstream_rq_retry[a-z_]*", r"upstream_rq_timeout",
    r"upstream_rq_per_try_timeout", r"upstream_rq_pending_overflow",
    r"outlier_detection\..+", r"health_check\..+", r"circuit_breakers\..+",
    r"membership_[a-z_]+", r"update_[a-z_]+", r"ssl\..+", r"ratelimit\..+",
)
_HTTP_STATS = (
    r"downstream_rq_total", r"downstream_rq_\dxx", r"downstream_rq_time",
    r"downstream_cx_[a-z_]+", r"(?:[a-z_]+\.)?rbac\..+", r"jwt_authn\..+", r"fault\..+",
    r"local_rate_limit\..+", r"ratelimit\..+", r"adaptive_concurrency\..+",
)
_ROUTE_STATS = (r"upstream_rq_total", r"upstream_rq_\d{3}", r"upstream_rq_\dxx",
                 r"upstream_rq_time", r"upstream_rq_retry[a-z_]*", r"upstream_rq_timeout")
_LISTENER_STATS = (r"downstream_cx_[a-z_]+", r"downstream_pre_cx_[a-z_]+", r"ssl\..+")


def _any(alternatives: tuple[str, ...]) -> str:
    return "(?:" + "|".join(alternatives) + ")"


# Full-name regexes (RE2); a stat is kept if one matches.
KEEP: tuple[str, ...] = (
    rf"^cluster\.(?:{_MESH_NAME}|{_EXTERNAL_NAME}|{_JWKS_NAME}|[^.]+)\.{_any(_CLUSTER_STATS)}$",
    # Not http.admin.*: the admin endpoint's own HCM; but the listeners that pass some
    # of it on to other hosts (agent/adminlisteners.py), whose 4xx are refusals.
    # gateway_PORT: a gateway's listeners (translate/gateway/listeners.py).
    rf"^http\.(?:{_MESH_NAME}|inbound|inbound_plaintext|outbound|gossamer_admin|"
    rf"gossamer_prometheus|gateway_\d+)\.{_any(_HTTP_STATS)}$",
    rf"^tcp\.(?:{_MESH_NAME}|[^.]+)\.(?:downstream_cx_[a-z_]+|upstream_flush_[a-z_]+|"
    r"idle_timeout|max_downstream_connection_duration)$",
    rf"^listener\.{_ADDRESS}\.{_any(_LISTENER_STATS)}$",
    # dns: the resolver's (dns.cares.timeouts: a name Envoy waits on, as the xDS
    # cluster's may be).
    r"^(?:cluster_manager|listener_manager|control_plane|server|sds|dns)\..+$",
    r"^[a-z_]+\.http_local_rate_limit\..+$",
    # A Service's routes that send elsewhere count what callers sent it (routes.py).
    rf"^{_VHOST_STAT}{_VHOST}\.route\.called\.{_any(_ROUTE_STATS)}$",
)


def stats_config(service: str, namespace: str, workload: str) -> dict[str, Any]:
    """StatsConfig (JSON form) for a sidecar of `workload` (a `service` in `namespace`)."""
    fixed = [{"tagName": "source_namespace", "fixedValue": namespace},
             {"tagName": "source_service", "fixedValue": service},
             {"tagName": "source_workload", "fixedValue": workload}]
    return {
        "useAllDefaultTags": False,
        "statsTags": [*fixed, *({"tagName": n, "regex": r} for n, r in TAGS)],
        "statsMatcher": {"inclusionList": {"patterns": [
            {"safeRegex": {"regex": r}} for r in KEEP]}},
    }
