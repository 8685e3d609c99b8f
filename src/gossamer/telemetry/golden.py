"""Golden metrics (request rate, success rate, latency percentiles) from Envoy stats.

Pure computation, no I/O: the scraper hands in parsed `/stats?format=json
&histogram_buckets=cumulative` documents, and this module turns two samples of
one proxy into the traffic between them, then sums traffic per service,
workload and edge.

Where each number comes from (Envoy's own stat names):
- inbound (a workload serving): `http.inbound.downstream_rq_total`, the
  `downstream_rq_<N>xx` codes and the `downstream_rq_time` histogram;
- an edge (a caller to a Service): the caller's `cluster.outbound|PORT||SVC.NS`
  (to an ExternalService: `cluster.external|PORT|HOST|NAME.NS`, an edge to `NAME.NS`)
  `upstream_rq_total`, `upstream_rq_<N>xx` and `upstream_rq_time`; these count
  attempts, so a retried request counts once per try. Clusters are those of the
  Services requests went to: once an HTTPRoute sends a Service's traffic to
  other (backend) Services, its callers' requests count under the backends;
- the Service a caller addressed, when its routes send elsewhere: the same
  counters under `vhost.<virtual host>.route.called.` (translate/routes.py puts
  that stat prefix on such a Service's routes), so `edges SVC` shows who called
  SVC, beside where its routes sent them (`by_edge`'s `backends`).
Success rate is the non-5xx share of completed requests (those with a status
class). Percentiles interpolate linearly inside Envoy's histogram buckets, so
they are estimates bounded by the bucket edges (0.5, 1, 5, 10, 25, 50, 100, 250,
500 ms, ...). Sidecars merge histograms when their admin endpoint is read (the
agent's bootstrap: no flush timer), so a scrape's latency is as of the scrape before
it: latency lags counters by one scrape interval.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
INBOUND = "http.inbound."
# A Service's cluster `outbound|PORT|SUBSET|SVC.NS`, or an ExternalService's
# `external|PORT|HOST|NAME.NS` (translate/external.py): its edges end at `NAME.NS`.
_OUTBOUND = re.compile(r"^cluster\.(?:outbound|external)\|(\d+)\|[^|]*\|([^.|]+)\.([^.|]+)"
                       r"\.(upstream_rq_\w+)$")
# The outbound route config's virtual host `SVC.NS:PORT` (`outbound/SVC.NS:PORT` by
# VHDS, translate/vhds.py), or an upstream listener's `upstream|PORT||SVC.NS`
# (translate/names.py).
_CALLED = re.compile(r"^vhost\.(?:upstream\|\d+\|[^|]*\||outbound/)?([^.|:/]+)\.([^.|:]+)"
                     r"(?::\d+)?"
                     r"\.route\.called\.(upstream_rq_\w+)$")
Buckets = tuple[tuple[float, int], ...]


class BadStats(ValueError):
    """A stats document that is not Envoy's JSON stats format."""


@dataclass(frozen=True)
class Sample:
    """One scrape of one proxy: cumulative counters and histogram buckets."""

    at: float
    counters: Mapping[str, int]
    histograms: Mapping[str, Buckets]


def parse_stats(doc: Mapping[str, Any], at: float) -> Sample:
    """From Envoy's `/stats?format=json&histogram_buckets=cumulative` document."""
    counters: dict[str, int] = {}
    histograms: dict[str, Buckets] = {}
    try:
        for entry in doc["stats"]:
            if "name" in entry:
                value = entry.get("value")
                if isinstance(value, int | float):
                    counters[entry["name"]] = int(value)
                continue
            hists = entry.get("histograms")
            if not isinstance(hists, list):
                continue
            for hist in hists:
                histograms[hist["name"]] = tuple(
                    (float(b["upper_bound"]), int(b["cumulative"])) for b in hist["buckets"])
    except (KeyError, TypeError) as exc:
        raise BadStats(f"not an Envoy JSON stats document: {exc!r}") from exc
    return Sample(at, counters, histograms)


def _grow(new: int, old: int) -> int:
    """A counter that went down means Envoy restarted: everything now is new."""
    return new - old if new >= old else new


def delta(old: Sample, new: Sample) -> Sample:
    """What happened between two samples of one proxy."""
    counters = {k: _grow(v, old.counters.get(k, 0)) for k, v in new.counters.items()}
    histograms: dict[str, Buckets] = {}
    for name, buckets in new.histograms.items():
        before = dict(old.histograms.get(name, ()))
        grown = tuple((b, c - before.get(b, 0)) for b, c in buckets)
        if any(c < 0 for _, c in grown):
            grown = buckets
        histograms[name] = grown
    return Sample(new.at - old.at, counters, histograms)


def quantile(buckets: Buckets, q: float) -> float | None:
    """The q-quantile (0..1) of cumulative buckets, interpolated inside its bucket."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0
    for bound, count in buckets:
        if count >= rank and count > below:
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return buckets[-1][0]


def _add_buckets(a: Buckets, b: Buckets) -> Buckets:
    if not a:
        return b
    if not b:
        return a
    other = dict(b)
    return tuple((bound, count + other.get(bound, 0)) for bound, count in a)


@dataclass(frozen=True)
class Traffic:
    """Requests seen over a window; sums across proxies with `+`."""

    requests: int = 0
    classes: Mapping[str, int] = field(default_factory=dict)
    rps: float = 0.0
    latency: Buckets = ()

    def __add__(self, other: Traffic) -> Traffic:
        classes = {c: self.classes.get(c, 0) + other.classes.get(c, 0) for c in CLASSES}
        return Traffic(self.requests + other.requests, classes, self.rps + other.rps,
                       _add_buckets(self.latency, other.latency))

    @property
    def completed(self) -> int:
        return sum(self.classes.values())

    @property
    def success_rate(self) -> float | None:
        """Non-5xx share of completed requests; None without any."""
        done = self.completed
        return None if done == 0 else (done - self.classes.get("5xx", 0)) / done

    def to_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "rps": round(self.rps, 3),
                "success_rate": self.success_rate,
                "responses": {c: self.classes.get(c, 0) for c in CLASSES},
                "latency_ms": {"p50": quantile(self.latency, 0.5),
                               "p95": quantile(self.latency, 0.95),
                               "p99": quantile(self.latency, 0.99)}}


def _traffic(d: Sample, prefix: str, total: str, time: str) -> Traffic:
    classes = {c: d.counters.get(f"{prefix}{total[:-5]}{c}", 0) for c in CLASSES}
    rps = d.counters.get(prefix + total, 0) / d.at if d.at > 0 else 0.0
    return Traffic(d.counters.get(prefix + total, 0), classes, rps,
                   d.histograms.get(prefix + time, ()))


def inbound(d: Sample) -> Traffic:
    """What a workload served (its sidecar's inbound HTTP connection manager)."""
    return _traffic(d, INBOUND, "downstream_rq_total", "downstream_rq_time")


def _by_destination(d: Sample, pattern: re.Pattern[str], svc: int) -> dict[str, Traffic]:
    """Traffic of the stats `pattern` matches, by `SVC.NS` (groups `svc` and `svc + 1`;
    the last group is the stat's own name), summed over ports."""
    prefixes: set[tuple[str, str]] = set()
    for name in d.counters:
        m = pattern.match(name)
        if m is not None:
            prefixes.add((name[: -len(m.group(m.lastindex or 0))],
                          f"{m.group(svc)}.{m.group(svc + 1)}"))
    out: dict[str, Traffic] = {}
    for prefix, dest in sorted(prefixes):
        t = _traffic(d, prefix, "upstream_rq_total", "upstream_rq_time")
        out[dest] = out[dest] + t if dest in out else t
    return out


def outbound(d: Sample) -> dict[str, Traffic]:
    """What a workload sent, by the destination cluster's `SVC.NS` (summed over ports)."""
    return _by_destination(d, _OUTBOUND, 2)


def called(d: Sample) -> dict[str, Traffic]:
    """What a workload sent to Services whose routes send elsewhere, by the `SVC.NS` it
    addressed (summed over ports and over the outbound and upstream listeners)."""
    return _by_destination(d, _CALLED, 1)


@dataclass(frozen=True)
class Source:
    """Who a proxy is, from its node metadata."""

    node_id: str
    namespace: str
    service: str  # a gateway's: its identity account (the Gateway's name by default)
    workload: str
    gateway: str = ""  # the Gateway a `gossamer gateway` runs, which callers see edges from

    @property
    def service_key(self) -> str:
        return f"{self.service}.{self.namespace}"


@dataclass(frozen=True)
class Observed:
    """One proxy's traffic over the window."""

    source: Source
    window: Sample


def by_workload(seen: Iterable[Observed]) -> list[dict[str, Any]]:
    return [{"kind": "workload", "name": o.source.workload, "namespace": o.source.namespace,
             "service": o.source.service, **inbound(o.window).to_json()}
            for o in sorted(seen, key=lambda o: (o.source.namespace, o.source.workload))]


def _sum(groups: dict[Any, Traffic], key: Any, t: Traffic) -> None:
    groups[key] = groups[key] + t if key in groups else t


def by_service(seen: Iterable[Observed]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], Traffic] = {}
    workloads: dict[tuple[str, str], int] = {}
    for o in seen:
        key = (o.source.namespace, o.source.service)
        _sum(groups, key, inbound(o.window))
        workloads[key] = workloads.get(key, 0) + 1
    return [{"kind": "service", "name": name, "namespace": ns, "workloads": workloads[(ns, name)],
             **groups[(ns, name)].to_json()} for ns, name in sorted(groups)]


def _active(t: Traffic) -> bool:
    return t.requests > 0 or t.completed > 0  # not a cluster it could call, but did not


def by_edge(seen: Iterable[Observed], *, per_workload: bool = True, routed: bool = True,
            backends: Mapping[str, Sequence[str]] | None = None) -> list[dict[str, Any]]:
    """Caller -> destination Service, per calling workload or summed per calling service;
    only edges that carried requests in the window.

    An edge goes where requests went (the destination cluster's Service, `routed`
    false) or, with `routed`, to a Service the caller addressed whose routes send
    elsewhere (`routed` true): its `backends` are what the caller sent each Service
    of `backends[SVC.NS]` (the ones its routes name now) in the window. A caller that
    also reaches a backend directly, or through another Service, counts those
    requests there too."""
    groups: dict[tuple[str, str, str, str, bool], Traffic] = {}
    split: dict[tuple[str, str, str, str, str], Traffic] = {}
    gateways: dict[tuple[str, str], str] = {}
    for o in seen:
        src = (o.source.namespace, o.source.service, o.source.workload if per_workload else "")
        if o.source.gateway:
            gateways[src[:2]] = o.source.gateway
        sent = outbound(o.window)
        for dest, t in sent.items():
            if _active(t):
                _sum(groups, (*src, dest, False), t)
        for dest, t in (called(o.window) if routed else {}).items():
            if _active(t):
                _sum(groups, (*src, dest, True), t)
                for backend in (backends or {}).get(dest, ()):
                    _sum(split, (*src, dest, backend), sent.get(backend, Traffic()))
    out = []
    for (ns, service, workload, dest, via), t in sorted(groups.items()):
        entry: dict[str, Any] = {"kind": "edge", "source": {"namespace": ns, "service": service},
                                 "destination": dest, "routed": via, **t.to_json()}
        if (ns, service) in gateways:
            entry["source"]["gateway"] = gateways[(ns, service)]
        if per_workload:
            entry["source"]["workload"] = workload
        if via:
            entry["backends"] = [{"destination": b, **bt.to_json()}
                                 for (*key, b), bt in sorted(split.items())
                                 if tuple(key) == (ns, service, workload, dest)]
        out.append(entry)
    return out


def graph(seen: Sequence[Observed]) -> dict[str, Any]:
    """Services as nodes (with what they served), service-to-service edges where
    requests went (not the Services callers addressed that routed them on). An ingress
    gateway is a node of kind `gateway`: it serves no Service, it only calls them."""
    nodes = {f"{s['name']}.{s['namespace']}": s for s in by_service(seen)
             if not any(o.source.gateway and (o.source.namespace, o.source.service) ==
                        (s["namespace"], s["name"]) for o in seen)}
    edges = by_edge(seen, per_workload=False, routed=False)
    for e in edges:
        for key in (e["destination"], f"{e['source']['service']}.{e['source']['namespace']}"):
            if key not in nodes:
                svc, _, ns = key.partition(".")
                gw = e["source"].get("gateway") if key != e["destination"] else None
                nodes[key] = {"kind": "gateway" if gw else "service", "name": svc,
                              "namespace": ns, "workloads": 0, **Traffic().to_json(),
                              **({"gateway": gw} if gw else {})}
    return {"nodes": [dict(v, id=k) for k, v in sorted(nodes.items())],
            "edges": [dict(e, id=f"{e['source']['service']}.{e['source']['namespace']}->"
                                 f"{e['destination']}") for e in edges]}
