"""Explain, pure parts: access-log entries to records, the bounded record of failures,
the reasoning from flags and policies to plain words, and the CLI's rendering."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2

from gossamer.cli.explain import format_explanation
from gossamer.contract.names import INBOUND_LOG, LISTENER_TAG, OUTBOUND_LOG
from gossamer.explain.logservice import AccessLogService
from gossamer.explain.reasons import describe_route, destination, explain
from gossamer.explain.recent import Query, RecentFailures
from gossamer.explain.records import (
    LoggedRequest,
    Reporter,
    from_entry,
)
from gossamer.index import MeshIndex, build_index
from gossamer.model import parse_document

API = "mesh.gossamer.dev/v1alpha1"
CLIENT = Reporter("client-0.default", "default", "client", "client-0")
ECHO = Reporter("echo-0.default", "default", "echo", "echo-0")


def _doc(kind: str, name: str, spec: dict[str, Any], api: str = API) -> dict[str, Any]:
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name}, "spec": spec}


def _index(*extra: dict[str, Any]) -> MeshIndex:
    docs = [_doc("Service", "echo", {"ports": [{"port": 80}]}),
            _doc("Service", "client", {"ports": [{"port": 80}]}),
            _doc("Workload", "echo-0", {"service": "echo", "address": "127.0.0.1",
                                        "port": 9000}), *extra]
    return build_index([parse_document(d) for d in docs], revision=3)


def _target(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return _doc(kind, name, {"targetRef": {"kind": "Service", "name": "echo"}, **spec})


def entry(reporter: Reporter = CLIENT, direction: str = "outbound", status: int = 503,
          flags: tuple[str, ...] = (), details: str = "via_upstream",
          cluster: str = "outbound|80||echo.default", route: str = "default",
          request_id: str = "r1", path: str = "/x", **more: Any) -> LoggedRequest:
    fields: dict[str, Any] = dict(
        received_at=100.0, start_time=99.0, direction=direction, reporter=reporter,
        request_id=request_id, method="GET", authority="echo", path=path, status=status,
        details=details, flags=flags, route_name=route, upstream_cluster=cluster,
        upstream_host="127.0.0.1:9000", upstream_failure="", attempts=1, duration_ms=12.0,
        peer_principal="", termination="")
    fields.update(more)
    return LoggedRequest(**fields)


def test_an_envoy_entry_becomes_a_record() -> None:
    e = accesslog_pb2.HTTPAccessLogEntry()
    e.common_properties.response_flags.upstream_overflow = True
    e.common_properties.route_name = "default/echo/api/match0"
    e.common_properties.upstream_cluster = "outbound|80||echo.default"
    e.common_properties.duration.FromMilliseconds(7)
    e.common_properties.start_time.FromMilliseconds(1_700_000_000_123)
    e.common_properties.upstream_remote_address.socket_address.address = "10.0.0.2"
    e.common_properties.upstream_remote_address.socket_address.port_value = 15006
    e.common_properties.upstream_request_attempt_count = 2
    san = e.common_properties.tls_properties.peer_certificate_properties.subject_alt_name.add()
    san.uri = "spiffe://mesh.local/ns/default/sa/client"
    e.request.request_method = base_pb2.RequestMethod.Value("GET")
    e.request.path, e.request.original_path = "/rewritten", "/original"
    e.request.request_id, e.request.authority = "abc", "echo"
    e.response.response_code.value = 503
    e.response.response_code_details = "upstream_reset_before_response_started{overflow}"
    r = from_entry(e, INBOUND_LOG, ECHO, 5.0)
    assert (r.direction, r.method, r.path, r.status) == ("inbound", "GET", "/original", 503)
    assert r.flags == ("upstream_overflow",)
    assert r.codes == ["UO"]
    assert r.start_time == pytest.approx(1_700_000_000.123)
    assert (r.duration_ms, r.attempts, r.upstream_host) == (7.0, 2, "10.0.0.2:15006")
    assert r.peer_principal == "spiffe://mesh.local/ns/default/sa/client"
    assert from_entry(e, OUTBOUND_LOG, CLIENT, 5.0).direction == "outbound"
    assert r.to_json()["flags"] == ["UO"]


def test_the_record_is_bounded_and_finds_the_newest_first() -> None:
    recent = RecentFailures(capacity=3)
    recent.add(entry(request_id=f"r{i}", status=500 + i) for i in range(5))
    assert len(recent) == 3
    assert [e.request_id for e in recent.find(Query())] == ["r4", "r3", "r2"]
    assert [e.request_id for e in recent.find(Query(status=503))] == ["r3"]
    assert recent.find(Query(service="nothing")) == []
    assert [e.request_id for e in recent.find(Query(service="echo"), limit=1)] == ["r4"]
    recent.add([entry(reporter=ECHO, direction="inbound", request_id="r4")])
    assert [h.direction for h in recent.hops("r4")] == ["outbound", "inbound"]
    assert recent.hops("") == []
    recent.add([entry(request_id="d", status=200, flags=("delay_injected",))])
    newest = recent.newest_failure(Query())
    assert newest is not None
    assert newest.request_id == "r4"  # a delayed success is not the newest failure
    only = recent.newest_failure(Query(request_id="d"))
    assert only is not None
    assert only.request_id == "d"
    assert recent.newest_failure(Query(service="nothing")) is None


def test_access_log_stream_keeps_only_connected_nodes() -> None:
    recent = RecentFailures()
    service = AccessLogService(recent, lambda node: ECHO if node == ECHO.node_id else None)

    def message(node: str | None) -> als_pb2.StreamAccessLogsMessage:
        m = als_pb2.StreamAccessLogsMessage()
        if node is not None:
            m.identifier.node.id = node
            m.identifier.log_name = INBOUND_LOG
        m.http_logs.log_entry.add().response.response_code.value = 500
        return m

    async def stream(*nodes: str | None) -> AsyncIterator[als_pb2.StreamAccessLogsMessage]:
        for n in nodes:
            yield message(n)

    asyncio.run(service.consume(stream(ECHO.node_id, None)))  # later messages carry no id
    asyncio.run(service.consume(stream("intruder.default", None)))
    assert len(recent) == 2
    assert all(e.reporter == ECHO and e.direction == "inbound" for e in recent.find(Query()))
    assert service.dropped._value.get() == 2


def test_route_names_read_as_resources() -> None:
    assert describe_route("default/echo/rule1/match0") == "HTTPRoute default/echo, rule 1, match 0"
    assert describe_route("grpc:ns/g/api/match2") == "GRPCRoute ns/g, rule 'api', match 2"
    assert describe_route("") == "no route matched"
    assert describe_route("local-app") == "the inbound route to the local app"


def test_a_refused_call_finds_its_backend_through_the_route() -> None:
    route = _doc("HTTPRoute", "echo", {
        "parentRefs": [{"name": "echo", "port": 80}],
        "rules": [{"backendRefs": [{"name": "client", "port": 80}]}]},
        api="gateway.networking.k8s.io/v1")
    index = _index(route)
    refused = entry(cluster="", route="default/echo/rule0/match0")
    assert destination(refused, index) == ("default", "client")
    assert destination(entry(cluster="", route="default"), index) == ("default", "echo")


def test_a_call_through_an_upstream_port_is_known_by_its_listener() -> None:
    """Its host is 127.0.0.1:LOCALPORT and an abort leaves no cluster: the listener
    custom tag the upstream listener's failure logger sends names the Service."""
    e = accesslog_pb2.HTTPAccessLogEntry()
    e.common_properties.custom_tags[LISTENER_TAG] = "upstream|80||echo.default"
    e.common_properties.response_flags.fault_injected = True
    e.request.authority, e.request.request_id = "127.0.0.1:41234", "f1"
    e.response.response_code.value = 503
    aborted = from_entry(e, OUTBOUND_LOG, CLIENT, 5.0)
    assert aborted.listener_service == ("default", "echo")
    assert from_entry(accesslog_pb2.HTTPAccessLogEntry(), OUTBOUND_LOG, CLIENT,
                      5.0).listener_service is None
    recent = RecentFailures()
    recent.add([aborted])
    assert recent.find(Query(service="echo")) == [aborted]
    index = _index(_target("FaultPolicy", "chaos", {"abort": {"httpStatus": 503,
                                                              "percent": 100}}))
    exp = explain([aborted], index)
    assert exp.policy == "FaultPolicy default/chaos"
    assert "changed or gone" not in exp.cause
    assert exp.summary.startswith("client-0 -> echo.default:")


@pytest.mark.parametrize(("hops", "docs", "policy", "words"), [
    ([entry(flags=("upstream_retry_limit_exceeded",), attempts=3),
      entry(ECHO, "inbound", 503, request_id="r1"), entry(ECHO, "inbound", 503)],
     [_target("ResiliencePolicy", "r", {"retries": {"attempts": 2, "retryOn": ["5xx"]}})],
     "ResiliencePolicy default/r", "every attempt failed: 3 attempt(s)"),
    ([entry(flags=("upstream_connection_failure",), status=503,
            upstream_failure="TLS_error:CERTIFICATE_VERIFY_FAILED")], [], None,
     "(TLS_error:CERTIFICATE_VERIFY_FAILED)"),
    ([entry(), entry(ECHO, "inbound", 503, flags=("upstream_connection_failure",),
                     details="upstream_reset_before_response_started{connection_failure}",
                     cluster="inbound|9000")], [], None,
     "the app of echo-0 did not accept the connection"),
    ([entry(ECHO, "inbound", 503, details="reached_concurrency_limit")],
     [_target("ResiliencePolicy", "ac", {"adaptiveConcurrency": {}})],
     "ResiliencePolicy default/ac", "adaptive concurrency shed this call"),
    ([entry(ECHO, "inbound", 403, details="rbac_access_denied_matched_policy[none]",
            peer_principal="spiffe://m/ns/default/sa/client")],
     [_target("AuthorizationPolicy", "only-fe", {"rules": [{"from": [{"source": {
         "namespaces": ["frontend"]}}]}]})],
     "AuthorizationPolicy default/only-fe",
     "no rule of the ALLOW AuthorizationPolicies of echo.default (default/only-fe) admits "
     "spiffe://m/ns/default/sa/client"),
    ([entry(flags=("no_healthy_upstream",))],
     [_target("ResiliencePolicy", "od", {"outlierDetection": {"consecutive5xx": 3}})],
     "ResiliencePolicy default/od", "ejected by outlier detection"),
    ([entry(status=200, flags=("delay_injected",))],
     [_target("FaultPolicy", "slow", {"delay": {"fixedDelay": "300ms", "percent": 20}})],
     "FaultPolicy default/slow",
     "not a failure: it answered 200, but FaultPolicy default/slow delays 20% of calls "
     "to echo.default by 300ms"),
    ([entry(status=404, flags=("no_route_found",), authority="nosuch", cluster="", route="")],
     [], None, "no Service answers to host 'nosuch'"),
    ([entry(status=404, details="direct_response", authority="nosuch", cluster="",
            route="no-such-service")], [], None, "no Service answers to host 'nosuch'"),
    ([entry(status=404, details="direct_response", cluster="", route="no-such-service")],
     [_doc("Sidecar", "only-client", {"egress": {"hosts": ["./client"]}})],
     "Sidecar default/only-client", "echo.default is outside the caller's egress scope: "
     "Sidecar default/only-client lets it call ./client only"),
])
def test_causes_in_plain_words(hops: list[LoggedRequest], docs: list[dict[str, Any]],
                               policy: str | None, words: str) -> None:
    exp = explain(hops, _index(*docs))
    assert exp.policy == policy
    assert words in exp.cause, exp.cause
    assert exp.hops
    assert exp.summary


def _echo_route(name: str, namespace: str) -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"parentRefs": [{"name": "echo", "namespace": "default"}], "rules": [
                {"matches": [{"path": {"type": "Exact", "value": "/only"}}],
                 "backendRefs": [{"name": "echo", "namespace": "default", "port": 80}]}]}}


@pytest.mark.parametrize(("caller", "listed"), [
    (CLIENT, "(default/producer)"),
    (Reporter("client-0.other", "other", "client", "client-0"), "(other/consumer)"),
    (Reporter("client-0.third", "third", "client", "client-0"), "(default/producer)"),
])
def test_no_route_names_the_routes_the_caller_follows(caller: Reporter, listed: str) -> None:
    # A consumer route in `other` is followed by `other`'s callers only (GAMMA).
    index = _index(_echo_route("producer", "default"), _echo_route("consumer", "other"))
    hop = entry(caller, status=404, flags=("no_route_found",), cluster="", route="",
                authority="echo.default")
    cause = explain([hop], index).cause
    assert f"no rule of the routes attached to echo.default {listed} matches" in cause, cause


@pytest.mark.parametrize(("docs", "policy"), [
    ([_doc("Mesh", "default", {"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}})],
     "Mesh gossamer-system/default"),
    ([_doc("Sidecar", "closed", {"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}})],
     "Sidecar default/closed"),
])
def test_a_host_refused_by_registry_only_is_explained(docs: list[dict[str, Any]],
                                                      policy: str) -> None:
    refused = entry(status=502, details="direct_response", cluster="", route="registry-only",
                    authority="api.other.example")
    exp = explain([refused], _index(*docs))
    assert exp.policy == policy
    assert "'api.other.example' is neither a mesh Service nor an ExternalService" in exp.cause
    assert "REGISTRY_ONLY" in exp.cause
    assert any("ExternalService" in h for h in exp.hints)
    assert exp.summary.startswith("client-0 -> host api.other.example: GET /x answered 502")


def test_nothing_to_explain_is_an_error() -> None:
    with pytest.raises(ValueError, match="nothing to explain"):
        explain([], _index())


def test_the_cli_prints_every_part() -> None:
    exp = explain([entry(status=500), entry(ECHO, "inbound", 500)], _index()).to_json()
    text = format_explanation(exp)
    assert text.splitlines()[0] == "Request r1"
    assert "Failed at: the app (echo-0)" in text
    assert "Why:       the app answered 500 itself" in text
    assert "Route:     the Service's default route (no HTTPRoute attached)" in text
    rows = text.split("Hops (as each sidecar logged them):\n")[1].splitlines()
    assert rows[0].split()[:3] == ["DIRECTION", "PROXY", "STATUS"]
    assert [r.split()[:3] for r in rows[1:]] == [["outbound", "client-0", "500"],
                                                  ["inbound", "echo-0", "500"]]
