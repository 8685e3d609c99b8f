"""Why did this request fail? From the access-log entries of one request (both ends
of its hop) and the mesh as the index has it, in plain words.

The order of the checks is the order Envoy makes its decisions in: a caller's
sidecar first matches a route (NR), runs the fault filter (FI), picks the cluster
and a healthy host (UH), passes the circuit breaker (UO), connects (UF), waits
(UT) and retries (URX); the callee's sidecar then checks JWT, authorization,
rate limits and its concurrency limit before its app sees the request. The first
of those that explains the status is the cause. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gossamer.contract.node import NodeMetadata
from gossamer.explain.finding import Finding as _Finding
from gossamer.explain.finding import ref as _ref
from gossamer.explain.finding import svc_text as _svc_text
from gossamer.explain.inferred import not_inferred
from gossamer.explain.records import FLAGS, LoggedRequest
from gossamer.index import MeshIndex, SvcKey
from gossamer.model import HTTPRoute
from gossamer.model.authorizationpolicy import Action
from gossamer.model.policy import MESH_ROOT_NAMESPACE, gateway_target
from gossamer.model.resiliencepolicy import ResiliencePolicy
from gossamer.translate.capture import REFUSED_ROUTE
from gossamer.translate.names import NO_HOST_ROUTE, NO_SERVICE_ROUTE
from gossamer.translate.policies import covers
from gossamer.translate.scope import SidecarIndex

_RBAC = re.compile(r"rbac_access_denied_matched_policy\[(?P<policy>.*)\]")
_RBAC_NAME = re.compile(r"(?P<ns>[^/]+)/(?P<name>.+)\[rule-(?P<rule>\d+)\]")
_ROUTE = re.compile(
    r"(?P<grpc>grpc:)?(?P<ns>[^/]+)/(?P<name>[^/]+)/(?P<rule>[^/]+)/match(?P<m>\d+)")
_ENVOY_DEFAULT_BREAKER = 1024


@dataclass(frozen=True)
class Explanation:
    request_id: str
    summary: str  # who called what, and how it ended
    failed_at: str  # which proxy (or app) produced the failing answer
    cause: str  # why, in plain words
    policy: str | None  # the resource that made the decision, "Kind namespace/name"
    route: str
    cluster: str
    flags: list[str]  # "UO: a circuit breaker was full (upstream overflow)"
    hints: list[str] = field(default_factory=list)
    hops: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "summary": self.summary,
                "failed_at": self.failed_at, "cause": self.cause, "policy": self.policy,
                "route": self.route, "cluster": self.cluster, "flags": self.flags,
                "hints": self.hints, "hops": self.hops}


def cluster_service(cluster: str) -> SvcKey | None:
    """(namespace, name) of an `outbound|PORT||NAME.NS` cluster."""
    if not cluster.startswith("outbound|"):
        return None
    name, _, ns = cluster.rsplit("|", 1)[-1].partition(".")
    return (ns, name) if ns else None


def addressed_service(entry: LoggedRequest, index: MeshIndex) -> SvcKey | None:
    """The Service the caller addressed (its :authority, or its upstream listener's
    Service), which routes attach to."""
    if entry.listener_service is not None:
        return entry.listener_service
    host = entry.authority.rsplit(":", 1)[0] if ":" in entry.authority else entry.authority
    parts = host.split(".")
    if len(parts) >= 2 and (parts[1], parts[0]) in index.services:
        return parts[1], parts[0]
    key = (entry.reporter.namespace, parts[0])
    return key if key in index.services else cluster_service(entry.upstream_cluster)


def destination(entry: LoggedRequest, index: MeshIndex) -> SvcKey | None:
    """The backend Service of the call: its cluster's when one was chosen; else (refused
    before a connection: overflow, no healthy host) the one backend of the rule the
    route name points to, or the addressed Service for its default route."""
    chosen = cluster_service(entry.upstream_cluster)
    if chosen is not None:
        return chosen
    addressed = addressed_service(entry, index)
    m = _ROUTE.fullmatch(entry.route_name)
    if m is None or m["grpc"] or addressed is None:
        return addressed
    for route in index.routes_by_parent.get(addressed, ()):
        if (route.metadata.namespace, route.metadata.name) != (m["ns"], m["name"]):
            continue
        for i, rule in enumerate(route.spec.rules):
            if m["rule"] in (rule.name, f"rule{i}"):
                refs = {(r.namespace or route.metadata.namespace, r.name)
                        for r in rule.backend_refs}
                return next(iter(refs)) if len(refs) == 1 else None
    return addressed


def describe_route(name: str) -> str:
    if not name:
        return "no route matched"
    if name == "default":
        return "the Service's default route (no HTTPRoute attached)"
    if name == "local-app":
        return "the inbound route to the local app"
    m = _ROUTE.fullmatch(name)
    if m is None:
        return name
    kind = "GRPCRoute" if m["grpc"] else "HTTPRoute"
    rule = m["rule"]
    rule_text = f"rule {rule[4:]}" if re.fullmatch(r"rule\d+", rule) else f"rule {rule!r}"
    return f"{kind} {m['ns']}/{m['name']}, {rule_text}, match {m['m']}"


def _resilience(index: MeshIndex, svc: SvcKey | None) -> ResiliencePolicy | None:
    return index.resilience.get(svc) if svc else None


def _route_policy(out: LoggedRequest, index: MeshIndex, field: str) -> ResiliencePolicy | None:
    """The policy whose `field` (timeouts, retries) the call's route had: the called
    Service's when it sets it, wherever its routes send; else the backend's
    (translate/routes.py)."""
    called = _resilience(index, addressed_service(out, index))
    if called is not None and (getattr(called.spec, field) is not None or any(
            getattr(s, field) is not None for s in called.spec.routes)):
        return called
    return _resilience(index, destination(out, index))


def _fault(out: LoggedRequest, index: MeshIndex) -> _Finding:
    svc = addressed_service(out, index)
    policy = index.faults.get(svc) if svc else None
    where = f"the caller's sidecar ({out.reporter.workload})"
    if policy is None or policy.spec.abort is None:
        return _Finding(where, f"a fault abort was injected into this call to {_svc_text(svc)} "
                               "(the FaultPolicy has changed or gone since)")
    abort = policy.spec.abort
    status = (f"HTTP {abort.http_status}" if abort.http_status is not None
              else f"gRPC {abort.grpc_status}")
    only = ""
    if policy.spec.match is not None:
        only = " of requests carrying " + ", ".join(
            h.name for h in policy.spec.match.headers)
    return _Finding(where, f"{_ref('FaultPolicy', policy)} aborts {abort.percent:g}%{only} "
                           f"of calls to {_svc_text(svc)} with {status}; this call was one "
                           "of them: the service never saw it",
                    _ref("FaultPolicy", policy),
                    ("delete the FaultPolicy, or send requests without its headers",))


def _delayed(out: LoggedRequest, index: MeshIndex) -> _Finding:
    svc = addressed_service(out, index)
    policy = index.faults.get(svc) if svc else None
    delay = policy.spec.delay if policy else None
    what = (f"{_ref('FaultPolicy', policy)} delays {delay.percent:g}% of calls to "
            f"{_svc_text(svc)} by {delay.fixed_delay}" if policy and delay else
            "a FaultPolicy delayed it")
    return _Finding(f"the caller's sidecar ({out.reporter.workload})",
                    f"not a failure: it answered {out.status}, but {what}; this call was "
                    "one of them", _ref("FaultPolicy", policy) if policy else None)


def _overflow(out: LoggedRequest, index: MeshIndex) -> _Finding:
    svc = destination(out, index)
    policy = _resilience(index, svc)
    where = f"the caller's sidecar ({out.reporter.workload})"
    breaker = policy.spec.circuit_breaker if policy else None
    if policy is None or breaker is None:
        return _Finding(where, f"the circuit breaker of {_svc_text(svc)} was full: Envoy's "
                               f"default limits ({_ENVOY_DEFAULT_BREAKER} connections, pending "
                               "and active requests) were all in use, so the call was "
                               "refused without being sent",
                        None, ("set higher limits with a ResiliencePolicy circuitBreaker",))
    limits = ", ".join(f"{k} {v}" for k, v in (
        ("maxConnections", breaker.max_connections),
        ("maxPendingRequests", breaker.max_pending_requests),
        ("maxRequests", breaker.max_requests)) if v is not None)
    return _Finding(where, f"the circuit breaker of {_svc_text(svc)} was full "
                           f"({_ref('ResiliencePolicy', policy)}: {limits}), so the call was "
                           "refused at once (503, x-envoy-overloaded) without being sent",
                    _ref("ResiliencePolicy", policy),
                    ("raise the circuitBreaker limits, or add capacity to "
                     f"{_svc_text(svc)}",))


def _no_healthy(out: LoggedRequest, index: MeshIndex) -> _Finding:
    svc = destination(out, index)
    ready = len(index.endpoints.get(svc, ())) if svc else 0
    registered = sum(1 for w in index.workloads if svc and w.metadata.namespace == svc[0]
                     and svc in index.workload_services.get(
                         (w.metadata.namespace, w.metadata.name), ()))
    where = f"the caller's sidecar ({out.reporter.workload})"
    if ready == 0:
        return _Finding(where, f"{_svc_text(svc)} had no ready endpoint ({registered} "
                               "workload(s) registered, none passing its health probe), "
                               "so there was nowhere to send the call",
                        None, ("check the workloads: `gossamer get workloads`",))
    policy = _resilience(index, svc)
    why = []
    if policy and policy.spec.outlier_detection:
        why.append(f"ejected by outlier detection ({_ref('ResiliencePolicy', policy)})")
    if policy and policy.spec.health_check:
        why.append("failing the active health check")
    because = " or ".join(why) or "ejected or failing health checks"
    return _Finding(where, f"all {ready} endpoint(s) of {_svc_text(svc)} were unavailable to "
                           f"this caller ({because}), so there was nowhere to send the call",
                    _ref("ResiliencePolicy", policy) if policy else None,
                    ("`gossamer stat svc/...` and the callee's access logs show what made "
                     "its instances fail",))


def _timeout(out: LoggedRequest, index: MeshIndex) -> _Finding:
    svc = destination(out, index)
    policy = _route_policy(out, index, "timeouts")
    where = f"the caller's sidecar ({out.reporter.workload})"
    took = f"{out.duration_ms:.0f} ms"
    if policy is None:
        return _Finding(where, f"the call to {_svc_text(svc)} timed out after {took}")
    timeouts = policy.spec.timeouts
    m = _ROUTE.fullmatch(out.route_name)
    if m is not None and m["ns"] == policy.metadata.namespace:
        rule = None if re.fullmatch(r"rule\d+", m["rule"]) else m["rule"]
        section = policy.spec.section_for(m["name"], rule)
        if section is not None and section.timeouts is not None:
            timeouts = section.timeouts
    limit = ""
    if timeouts is not None:
        parts = [f"{k} {v}" for k, v in (("request", timeouts.request),
                                          ("perTry", timeouts.per_try)) if v]
        limit = " (" + ", ".join(parts) + ")" if parts else ""
    return _Finding(where, f"{_svc_text(svc)} did not answer in time: "
                           f"{_ref('ResiliencePolicy', policy)} timeouts{limit} cut the call "
                           f"after {took} and answered 504",
                    _ref("ResiliencePolicy", policy),
                    ("the callee's latency: `gossamer stat svc/...`; raise the timeout only "
                     "if the callee is expected to be this slow",))


def _retries(out: LoggedRequest, inbound: Sequence[LoggedRequest],
             index: MeshIndex) -> _Finding:
    svc = destination(out, index)
    policy = _route_policy(out, index, "retries")
    statuses = ", ".join(str(e.status) for e in inbound) or str(out.status)
    tries = out.attempts or len(inbound) or 1
    base = (f"every attempt failed: {tries} attempt(s) to {_svc_text(svc)} "
            f"(answers seen by the callee: {statuses}), and no retries were left")
    ref = _ref("ResiliencePolicy", policy) if policy else None
    if policy and policy.spec.retries:
        base += f" ({ref}: attempts {policy.spec.retries.attempts})"
    return _Finding(f"the caller's sidecar ({out.reporter.workload})", base, ref,
                    ("the failing answers came from the callee: see its hops below",))


def _followed(index: MeshIndex, svc: SvcKey, caller_ns: str) -> list[HTTPRoute]:
    """The Service's HTTPRoutes a caller in `caller_ns` follows: its namespace's
    consumer routes when it has some, else the producer routes (translate/consumer.py
    decides per port; the Service's ports are not told apart here)."""
    attached = index.routes_by_parent.get(svc, ())
    mine = [r for r in attached if r.metadata.namespace == caller_ns != svc[0]]
    return mine or [r for r in attached if r.metadata.namespace == svc[0]]


def _no_route(out: LoggedRequest, index: MeshIndex) -> _Finding:
    svc = addressed_service(out, index)
    where = f"the caller's sidecar ({out.reporter.workload})"
    if svc is None:
        return _Finding(where, f"no Service answers to host {out.authority!r}: the mesh "
                               "knows no such service in the caller's namespace",
                        None, ("use the Service's name (or NAME.NAMESPACE) as the host",))
    routes = _followed(index, svc, out.reporter.namespace)
    names = ", ".join(f"{r.metadata.namespace}/{r.metadata.name}" for r in routes)
    return _Finding(where, f"no rule of the routes attached to {_svc_text(svc)} "
                           f"({names or 'none'}) matches {out.method} {out.path}, so the "
                           "sidecar answered 404",
                    f"HTTPRoute {routes[0].metadata.namespace}/{routes[0].metadata.name}"
                    if len(routes) == 1 else None,
                    ("add a rule for this path, or a catch-all PathPrefix / rule",))


def _no_service(out: LoggedRequest, index: MeshIndex,
                proxies: Mapping[str, NodeMetadata]) -> _Finding:
    """The catch-all 404: the host names no Service, or one outside the caller's scope
    (the Sidecar is found as translation finds it: registered labels, then the agent's)."""
    svc = addressed_service(out, index)
    where = f"the caller's sidecar ({out.reporter.workload})"
    ns = out.reporter.namespace
    labels = dict(next((w.metadata.labels for w in index.workloads if (
        w.metadata.namespace, w.metadata.name) == (ns, out.reporter.workload)), {}))
    if out.reporter.node_id in proxies:
        labels.update(proxies[out.reporter.node_id].labels)
    sidecar = SidecarIndex(index).sidecar_for(ns, labels)
    if svc is not None and sidecar is None:
        inferred = not_inferred(svc, index, out, proxies.get(out.reporter.node_id))
        if inferred is not None:
            return inferred
    if svc is None or sidecar is None or sidecar.spec.egress is None:
        return _Finding(where, f"no Service answers to host {out.authority!r}: the mesh "
                               "knows no such service in the caller's namespace, so the "
                               "sidecar answered 404", None,
                        ("use the Service's name (or NAME.NAMESPACE) as the host",))
    ref = _ref("Sidecar", sidecar)
    hosts = ", ".join(sidecar.spec.egress.hosts)
    return _Finding(where, f"{_svc_text(svc)} is outside the caller's egress scope: {ref} "
                           f"lets it call {hosts} only, so its sidecar has no route to "
                           "that Service and answered 404", ref,
                    (f"add \"{svc[0]}/{svc[1]}\" to the egress hosts of {ref}",))


def _registry_only(out: LoggedRequest, index: MeshIndex,
                   proxies: Mapping[str, NodeMetadata]) -> _Finding:
    """The capture listener's 502: the host is neither a Service nor an
    ExternalService, and the caller's outbound policy is REGISTRY_ONLY. Which resource
    set it is found as translation finds it (translate/capture.py's outbound_mode)."""
    ns = out.reporter.namespace
    labels = dict(next((w.metadata.labels for w in index.workloads if (
        w.metadata.namespace, w.metadata.name) == (ns, out.reporter.workload)), {}))
    if out.reporter.node_id in proxies:
        labels.update(proxies[out.reporter.node_id].labels)
    sidecar = SidecarIndex(index).sidecar_for(ns, labels)
    if sidecar is not None and sidecar.spec.outbound_traffic_policy is not None:
        ref = _ref("Sidecar", sidecar)
    else:
        ref = f"Mesh {MESH_ROOT_NAMESPACE}/default"
    host = out.authority
    return _Finding(f"the caller's sidecar ({out.reporter.workload})",
                    f"host {host!r} is neither a mesh Service nor an ExternalService, and "
                    f"the outbound traffic policy is REGISTRY_ONLY ({ref}), so the sidecar "
                    "refused the request with 502", ref,
                    (f"apply an ExternalService whose hosts include {host.partition(':')[0]!r}"
                     " to allow it, or set outboundTrafficPolicy.mode ALLOW_ANY",))


def _connect(out: LoggedRequest, index: MeshIndex) -> _Finding:
    svc = destination(out, index)
    reason = f" ({out.upstream_failure})" if out.upstream_failure else ""
    hint = ("a TLS failure here means the two sidecars disagree on mTLS: check "
            "PeerAuthentication and `gossamer check`" if out.upstream_failure else
            "the callee's sidecar is not listening: is its agent running?")
    return _Finding(f"the caller's sidecar ({out.reporter.workload})",
                    f"connecting to {_svc_text(svc)} at {out.upstream_host or 'its endpoint'} "
                    f"failed{reason}", None, (hint,))


def _denied(inb: LoggedRequest, index: MeshIndex) -> _Finding:
    where = f"the callee's sidecar ({inb.reporter.workload})"
    caller = inb.peer_principal or "a caller with no mesh identity (plaintext)"
    m = _RBAC.search(inb.details)
    matched = m["policy"] if m else ""
    named = _RBAC_NAME.fullmatch(matched)
    if named is not None:
        ref = f"AuthorizationPolicy {named['ns']}/{named['name']}"
        return _Finding(where, f"{ref} (rule {named['rule']}) denies {caller}: the DENY rule "
                               "matched", ref)
    svc = (inb.reporter.namespace, inb.reporter.service)
    services = index.proxy_services(svc[0], inb.reporter.workload, svc[1])
    allow = [p for p in index.authorization_policies
             if p.spec.action is Action.ALLOW and covers(p, svc[0], services)]
    refs = ", ".join(f"{p.metadata.namespace}/{p.metadata.name}" for p in allow)
    return _Finding(where, f"no rule of the ALLOW AuthorizationPolicies of {_svc_text(svc)} "
                           f"({refs or 'none'}) admits {caller} for {inb.method} {inb.path}",
                    f"AuthorizationPolicy {allow[0].metadata.namespace}/"
                    f"{allow[0].metadata.name}" if len(allow) == 1 else None,
                    ("`gossamer authz check` tells which rule would admit this caller",))


def _rate_limited(inb: LoggedRequest, index: MeshIndex) -> _Finding:
    svc = (inb.reporter.namespace, inb.reporter.service)
    policy = index.rate_limits.get(svc)
    where = f"the callee's sidecar ({inb.reporter.workload})"
    if policy is None:
        return _Finding(where, f"{_svc_text(svc)} rate-limited the call")
    limits = []
    if policy.spec.local is not None:
        limits.append(f"local {policy.spec.local.requests} per {policy.spec.local.per} "
                      "on each sidecar")
    if policy.spec.global_ is not None:
        limits.extend(f"global {r.requests} per {r.per}" for r in policy.spec.global_.rules)
    return _Finding(where, f"{_ref('RateLimitPolicy', policy)} limits {_svc_text(svc)} "
                           f"({'; '.join(limits)}) and this call was over the limit (429)",
                    _ref("RateLimitPolicy", policy),
                    ("the x-ratelimit-* response headers say when the window resets",))


def _concurrency(inb: LoggedRequest, index: MeshIndex) -> _Finding:
    svc = (inb.reporter.namespace, inb.reporter.service)
    policy = _resilience(index, svc)
    return _Finding(f"the callee's sidecar ({inb.reporter.workload})",
                    f"adaptive concurrency shed this call: {_svc_text(svc)}'s latency rose "
                    "above its measured baseline, so the sidecar refused calls over the "
                    "concurrency limit (503)",
                    _ref("ResiliencePolicy", policy) if policy else None,
                    ("the callee is overloaded: add instances, or find what slows it",))


def _unreachable_app(inb: LoggedRequest) -> _Finding:
    return _Finding(f"the callee's sidecar ({inb.reporter.workload})",
                    f"the app of {inb.reporter.workload} did not accept the connection "
                    f"({inb.details}): the sidecar is up, the app is down or not listening "
                    "on its port", None, ("check the app's process and its port",))


def _app_answer(entry: LoggedRequest) -> _Finding:
    who = entry.reporter.workload if entry.direction == "inbound" else (
        entry.upstream_host or "the callee")
    return _Finding(f"the app ({who})", f"the app answered {entry.status} itself; the mesh "
                                        "passed the answer on and did not fail this request",
                    None, ("the app's own logs say why",))


def _inbound_finding(inb: LoggedRequest, index: MeshIndex) -> _Finding | None:
    if "rbac_access_denied" in inb.details:
        return _denied(inb, index)
    if "rate_limited" in inb.flags or inb.details == "request_rate_limited":
        return _rate_limited(inb, index)
    if "concurrency_limit" in inb.details:
        return _concurrency(inb, index)
    if "jwt" in inb.details:
        return _Finding(f"the callee's sidecar ({inb.reporter.workload})",
                        f"the request's JWT was refused ({inb.details}): see the "
                        "RequestAuthentication of the service", None)
    if "upstream_connection_failure" in inb.flags:
        return _unreachable_app(inb)
    return None


def _gateway_finding(edge: LoggedRequest, index: MeshIndex) -> _Finding | None:
    """What an ingress gateway decided itself, before any Service saw the request: its
    hostname match, then JWT (the caller-side checks, NR onwards, follow as for a
    sidecar's outbound entry)."""
    ns, name = edge.reporter.namespace, edge.reporter.gateway
    where, ref = f"the gateway ({edge.reporter.workload})", f"Gateway {ns}/{name}"
    if edge.route_name == NO_HOST_ROUTE:
        return _Finding(where, f"{ref} has no route for host {edge.authority or '(none)'}: "
                               "no route attached to its listeners names that hostname (404)",
                        ref, ("the Gateway's status lists each listener's attached routes; "
                              "a route's `hostnames` must match the request's host",))
    if "jwt" in edge.details:
        policies = [p for p in index.request_authentications
                    if p.metadata.namespace == ns and gateway_target(p) == name]
        names = ", ".join(f"{p.metadata.namespace}/{p.metadata.name}" for p in policies)
        return _Finding(where, f"the request's JWT was refused at the edge ({edge.details}): "
                               f"RequestAuthentication {names or '(none)'} of {ref} requires "
                               "a valid token", _ref("RequestAuthentication", policies[0])
                        if len(policies) == 1 else None,
                        ("send `Authorization: Bearer TOKEN` with a token of the policy's "
                         "issuer",))
    return None


# The caller's sidecar's own decisions, in the order it makes them.
_CALLER_CHECKS: dict[str, Callable[[LoggedRequest, MeshIndex], _Finding]] = {
    "no_route_found": _no_route, "fault_injected": _fault,
    "no_healthy_upstream": _no_healthy, "upstream_overflow": _overflow,
    "upstream_request_timeout": _timeout}


def _finding(out: LoggedRequest | None, inbound: Sequence[LoggedRequest],
             index: MeshIndex, proxies: Mapping[str, NodeMetadata]) -> _Finding:
    edge = _gateway_finding(out, index) if out is not None and out.reporter.gateway else None
    if edge is not None:
        return edge
    if out is not None and out.route_name == NO_SERVICE_ROUTE:
        return _no_service(out, index, proxies)
    if out is not None and out.route_name == REFUSED_ROUTE:
        return _registry_only(out, index, proxies)
    if out is not None:
        for flag, check in _CALLER_CHECKS.items():
            if flag in out.flags:
                return check(out, index)
    for inb in reversed(inbound):  # the last attempt is the one the caller saw
        found = _inbound_finding(inb, index)
        if found is not None:
            return found
    if out is not None:
        if "delay_injected" in out.flags and 0 < out.status < 400:
            return _delayed(out, index)
        if "upstream_retry_limit_exceeded" in out.flags:
            return _retries(out, inbound, index)
        if "upstream_connection_failure" in out.flags:
            return _connect(out, index)
        if out.flags and out.details != "via_upstream":
            meaning = "; ".join(FLAGS[f][1] for f in out.flags)
            return _Finding(f"the caller's sidecar ({out.reporter.workload})",
                            f"{meaning} ({out.details})")
    last = inbound[-1] if inbound else out
    assert last is not None
    if last.flags and last.details != "via_upstream":
        meaning = "; ".join(FLAGS[f][1] for f in last.flags)
        return _Finding(f"the callee's sidecar ({last.reporter.workload})",
                        f"{meaning} ({last.details})")
    return _app_answer(last)


def explain(hops: Sequence[LoggedRequest], index: MeshIndex,
            proxies: Mapping[str, NodeMetadata] | None = None) -> Explanation:
    """`hops`: every logged entry of one request (RecentFailures.hops), not empty;
    `proxies`: the connected proxies by node id, for what their agents declared."""
    if not hops:
        raise ValueError("nothing to explain")
    # An ingress gateway logs on its downstream (inbound) side, but it is the caller
    # of the Services it routes to: its entry stands where a sidecar's outbound one does.
    outbound = [h for h in hops if h.direction == "outbound" or h.reporter.gateway]
    inbound = [h for h in hops if h.direction == "inbound" and not h.reporter.gateway]
    out = outbound[0] if outbound else None
    first = out or inbound[0]
    finding = _finding(out, inbound, index, proxies or {})
    callee = (_svc_text(addressed_service(out, index)) if out is not None
              else f"{first.reporter.service}.{first.reporter.namespace}")
    if out is not None and addressed_service(out, index) is None and out.authority:
        callee = f"host {out.authority}"  # no mesh Service (an outside host, or a typo)
    caller = out.reporter.workload if out is not None else (
        first.peer_principal or "a caller outside the mesh")
    if out is not None and out.reporter.gateway:
        caller = (f"a client of Gateway {out.reporter.namespace}/{out.reporter.gateway} "
                  f"(via {out.reporter.workload})")
    status = first.status or "no response"
    summary = (f"{caller} -> {callee}: {first.method} {first.path} answered {status} "
               f"after {first.duration_ms:.0f} ms")
    flags = sorted({f"{FLAGS[f][0]}: {FLAGS[f][1]}" for h in hops for f in h.flags})
    return Explanation(
        request_id=first.request_id, summary=summary, failed_at=finding.failed_at,
        cause=finding.cause, policy=finding.policy,
        route=describe_route(out.route_name if out is not None else first.route_name),
        cluster=(out.upstream_cluster if out is not None else first.upstream_cluster)
        or "none: the call was refused before a connection was chosen",
        flags=flags, hints=list(finding.hints), hops=[h.to_json() for h in hops])
