"""Envoy tap traces -> tap events, and the tap config sent to the sidecars."""

from __future__ import annotations

import json
from typing import Any

from gossamer.cli.tap import format_event
from gossamer.tap.events import caller, split_stream, tap_config, to_event


def trace(**over: Any) -> dict[str, Any]:
    request = {"headers": [
        {"key": ":method", "value": "GET"}, {"key": ":path", "value": "/items?q=1"},
        {"key": ":authority", "value": "catalog"},
        {"key": "authorization", "value": "Bearer s3cret"},
        {"key": "x-forwarded-client-cert",
         "value": 'By=spiffe://gossamer.local/ns/default/sa/catalog;Hash=ab;'
                  'URI=spiffe://gossamer.local/ns/default/sa/frontend'},
        {"key": "x-request-id", "value": "r-1"}],
        "headers_received_time": "2026-11-22T06:00:00.100Z",
        "body": {"truncated": True, "as_string": ""}}
    response = {"headers": [{"key": ":status", "value": "503"}],
                "headers_received_time": "2026-11-22T06:00:00.142500Z",
                "body": {"as_string": '{"ok": false}'}}
    doc = {"http_buffered_trace": {"request": request, "response": response}}
    doc["http_buffered_trace"].update(over)
    return doc


def test_a_trace_becomes_an_event_with_caller_latency_and_redacted_credentials() -> None:
    event = to_event(trace(), "catalog-v1-0.default")
    assert event.source == "gossamer.local/ns/default/sa/frontend"
    assert (event.method, event.path, event.authority, event.status) == (
        "GET", "/items?q=1", "catalog", 503)
    assert event.latency_ms == 42.5
    assert event.request_headers == {"authorization": "<redacted>", "x-request-id": "r-1"}
    assert event.request_body is None  # not buffered: no body shown
    assert event.response_body == '{"ok": false}'
    assert format_event(event.to_json()).endswith(
        "gossamer.local/ns/default/sa/frontend -> catalog-v1-0.default  "
        "GET /items?q=1  503  42.5ms")


def test_without_mtls_the_source_is_the_peer_address() -> None:
    doc = trace(downstream_connection={"remote_address": {"socket_address": {
        "address": "127.0.0.1", "port_value": 5555}}})
    headers = doc["http_buffered_trace"]["request"]["headers"]
    doc["http_buffered_trace"]["request"]["headers"] = [
        h for h in headers if h["key"] != "x-forwarded-client-cert"]
    assert to_event(doc, "x").source == "127.0.0.1:5555 (no mTLS)"


def test_caller_takes_the_nearest_hop() -> None:
    xfcc = "URI=spiffe://d/ns/a/sa/first,By=x;URI=spiffe://d/ns/b/sa/second"
    assert caller(xfcc) == "d/ns/b/sa/second"
    assert caller("Hash=abc") == ""


def test_stream_splits_back_to_back_documents_and_keeps_the_rest() -> None:
    a, b = json.dumps(trace()), json.dumps(trace())
    docs, rest = split_stream(a + "\n" + b + "\n" + b[:20])
    assert len(docs) == 2
    assert rest == b[:20]
    docs, rest = split_stream(rest + b[20:])
    assert (len(docs), rest) == (1, "")


def test_tap_config_matches_path_prefix_and_method_and_buffers_bodies_on_request() -> None:
    config = tap_config("/api", "post", bodies=False)
    tap = config["tap_config"]
    rules = tap["match"]["and_match"]["rules"]
    assert rules[0]["http_request_headers_match"]["headers"][0] == {
        "name": ":path", "string_match": {"prefix": "/api"}}
    assert rules[1]["http_request_headers_match"]["headers"][0]["string_match"] == {
        "exact": "POST"}
    assert tap["output_config"]["max_buffered_rx_bytes"] == 0
    assert tap_config(None, None, bodies=True)["tap_config"]["match"] == {"any_match": True}
    assert tap_config(None, None, bodies=True)["tap_config"]["output_config"][
        "max_buffered_tx_bytes"] == 4096
