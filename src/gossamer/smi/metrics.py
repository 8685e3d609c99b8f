"""Golden metrics (the rows `/api/v1/stats` serves, telemetry/golden.py) as the SMI
Traffic Metrics API shapes: `TrafficMetrics` and `TrafficMetricsList`
(metrics.smi-spec.io/v1alpha1) for a Service or Workload, and for its edges.

Pure: the rows, the window and the timestamp come in. Latencies are Kubernetes
quantities in seconds (`10m` is 10 ms), counts plain quantities, as the spec's
examples write them. Gossamer's golden metrics have p50, p95 and p99 latencies: the
spec's `p90_response_latency` is not served, `p95_response_latency` is added. What a
resource served is observed by its own sidecars (`edge: {direction: from, side:
server, resource: {}}`); edges are observed by the callers' sidecars (`side: client`):
`to` the Services a resource called, `from` the callers of a resource.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

API_VERSION = "metrics.smi-spec.io/v1alpha1"
# The resources served, by the plural in a path, and the kind an ObjectReference names.
RESOURCES = {"services": "Service", "workloads": "Workload"}


def quantity(seconds: float) -> str:
    """A duration in seconds as a Kubernetes quantity, to the nanosecond."""
    ns = round(seconds * 1e9)
    for scale, suffix in ((10**9, ""), (10**6, "m"), (10**3, "u")):
        if ns % scale == 0:
            return f"{ns // scale}{suffix}"
    return f"{ns}n"


def go_duration(seconds: float) -> str:
    """A window as Go writes a time.Duration (metav1.Duration): `30s`, `1m0s`, `500ms`."""
    ms = round(seconds * 1000)
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest // 1000}" + (f".{rest % 1000:03d}".rstrip("0") if rest % 1000 else "")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def metrics(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One golden row's numbers as SMI metrics."""
    out = []
    for name, key in (("p99_response_latency", "p99"), ("p95_response_latency", "p95"),
                      ("p50_response_latency", "p50")):
        value = row["latency_ms"][key]
        if value is not None:
            out.append({"name": name, "unit": "seconds", "value": quantity(value / 1000)})
    responses = row["responses"]
    failures = responses.get("5xx", 0)
    out.append({"name": "success_count", "value": str(sum(responses.values()) - failures)})
    out.append({"name": "failure_count", "value": str(failures)})
    return out


def reference(kind: str, namespace: str, name: str) -> dict[str, str]:
    return {"kind": kind, "namespace": namespace, "name": name}


def _item(resource: dict[str, str], edge: dict[str, Any], row: Mapping[str, Any],
          window: float, timestamp: str) -> dict[str, Any]:
    return {"kind": "TrafficMetrics", "apiVersion": API_VERSION,
            "metadata": {"name": resource["name"], "namespace": resource["namespace"],
                         "creationTimestamp": timestamp},
            "timestamp": timestamp, "window": go_duration(window),
            "resource": resource, "edge": edge, "metrics": metrics(row)}


def traffic_metrics(row: Mapping[str, Any], window: float, timestamp: str) -> dict[str, Any]:
    """What one Service or Workload served (a `service` or `workload` golden row)."""
    kind = RESOURCES[f"{row['kind']}s"]
    return _item(reference(kind, row["namespace"], row["name"]),
                 {"direction": "from", "side": "server", "resource": {}}, row, window,
                 timestamp)


def traffic_metrics_list(rows: Iterable[Mapping[str, Any]], kind: str, namespace: str | None,
                         window: float, timestamp: str) -> dict[str, Any]:
    """Every Service or Workload (`kind`, as RESOURCES names it) of a namespace."""
    resource: dict[str, str] = {"kind": kind}
    if namespace is not None:
        resource["namespace"] = namespace
    return {"kind": "TrafficMetricsList", "apiVersion": API_VERSION, "metadata": {},
            "resource": resource,
            "items": [traffic_metrics(r, window, timestamp) for r in rows
                      if RESOURCES[f"{r['kind']}s"] == kind
                      and namespace in (None, r["namespace"])]}


def _peer(row: Mapping[str, Any], kind: str) -> tuple[dict[str, str], dict[str, str]]:
    """(caller, callee) references of an edge row, Services or (callers) Workloads."""
    source = row["source"]
    dest, _, dest_ns = str(row["destination"]).partition(".")
    if kind == "Workload":
        caller = reference("Workload", source["namespace"], source["workload"])
    else:
        caller = reference("Service", source["namespace"], source["service"])
    return caller, reference("Service", dest_ns, dest)


def edges(resource: dict[str, str], rows: Iterable[Mapping[str, Any]], window: float,
          timestamp: str) -> dict[str, Any]:
    """The edges of one Service or Workload (`/edges`): what it called and who called
    it, from `edge` golden rows (per workload when `resource` is a Workload; rows of
    Services a caller addressed but whose routes sent elsewhere are left out: an edge
    is where requests went)."""
    items = []
    for row in rows:
        if row.get("routed"):
            continue
        caller, callee = _peer(row, resource["kind"])
        if caller == resource:
            items.append(_item(resource, {"direction": "to", "side": "client",
                                          "resource": callee}, row, window, timestamp))
        if callee == resource:
            who = reference("Service", row["source"]["namespace"], row["source"]["service"])
            items.append(_item(resource, {"direction": "from", "side": "client",
                                          "resource": who}, row, window, timestamp))
    return {"kind": "TrafficMetricsList", "apiVersion": API_VERSION, "metadata": {},
            "resource": resource, "items": items}
