"""Envoy tap traces -> tap events. Pure: JSON in, events out.

A sidecar's inbound tap filter (translate/listeners.py TAP_FILTER) records each
matching request as an `HttpBufferedTrace`: request and response headers, the
times the headers were received, the downstream connection, and bodies only when
the tap config buffers them. The caller is the verified SPIFFE ID the inbound
connection manager put into `x-forwarded-client-cert` (`URI=...`).

A gateway's tap filter (translate/gateway/listeners.py) sees requests from outside
the mesh: the caller is the client's address, and the route chosen is in a request
header the gateway's routes add while a tap session runs (none: no route forwarded
it, e.g. a refused token or an unknown host).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from gossamer.translate.gateway.routes import ROUTE_HEADER

# Header values never shown: credentials and session cookies.
REDACTED = ("authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key")
# Headers that describe the transport, not the request.
HIDDEN = ("x-forwarded-client-cert", "x-envoy-expected-rq-timeout-ms", "x-envoy-attempt-count",
          ROUTE_HEADER)
_MAX_BODY = 4096


class BadTrace(ValueError):
    """A tap trace that is not an HTTP buffered trace."""


@dataclass(frozen=True)
class TapEvent:
    time: str
    source: str
    destination: str
    method: str
    path: str
    authority: str
    status: int
    latency_ms: float | None
    request_headers: dict[str, str] = field(default_factory=dict)
    request_body: str | None = None
    response_body: str | None = None
    # At a gateway: the Envoy route that forwarded it ("-": none, e.g. a refused token).
    route: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        return {k: v for k, v in out.items() if v is not None}


def _headers(message: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for h in message.get("headers", []):
        key = str(h.get("key", "")).lower()
        value = h.get("value")
        if value is None and "raw_value" in h:
            value = base64.b64decode(h["raw_value"]).decode(errors="replace")
        out[key] = str(value or "")
    return out


def _body(message: Mapping[str, Any]) -> str | None:
    body = message.get("body")
    if not isinstance(body, Mapping):
        return None
    if "as_string" in body:
        text = str(body["as_string"])
    elif "as_bytes" in body:
        text = base64.b64decode(body["as_bytes"]).decode(errors="replace")
    else:
        return None
    if not text:
        return None  # not buffered (bodies off), or really empty
    return text[:_MAX_BODY] + ("..." if len(text) > _MAX_BODY or body.get("truncated")
                               else "")


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def caller(xfcc: str) -> str:
    """The URI of the last (nearest) element of an x-forwarded-client-cert header."""
    for part in reversed(xfcc.split(",")[-1].split(";")):
        key, _, value = part.partition("=")
        if key.strip().lower() == "uri":
            return value.strip().strip('"').removeprefix("spiffe://")
    return ""


def to_event(trace: Mapping[str, Any], destination: str, edge: bool = False) -> TapEvent:
    """`destination`: the tapped workload, e.g. `catalog-v1-0.default`. `edge`: a
    gateway's trace, whose caller is the client's address."""
    buffered = trace.get("http_buffered_trace")
    if not isinstance(buffered, Mapping):
        raise BadTrace("not an http_buffered_trace")
    request = buffered.get("request") or {}
    response = buffered.get("response") or {}
    req_headers, resp_headers = _headers(request), _headers(response)
    sent, answered = _time(request.get("headers_received_time")), _time(
        response.get("headers_received_time"))
    latency = None
    if sent is not None and answered is not None:
        latency = round((answered - sent).total_seconds() * 1000, 3)
    source = "" if edge else caller(req_headers.get("x-forwarded-client-cert", ""))
    if not source:
        conn = buffered.get("downstream_connection") or {}
        addr = (conn.get("remote_address") or {}).get("socket_address") or {}
        source = f"{addr.get('address', '?')}:{addr.get('port_value', '?')}" + (
            "" if edge else " (no mTLS)")
    shown = {k: ("<redacted>" if k in REDACTED else v) for k, v in req_headers.items()
             if not k.startswith(":") and k not in HIDDEN}
    return TapEvent(
        time=(sent or datetime.now().astimezone()).isoformat(timespec="milliseconds"),
        source=source, destination=destination,
        method=req_headers.get(":method", ""), path=req_headers.get(":path", ""),
        authority=req_headers.get(":authority", ""),
        status=int(resp_headers.get(":status", "0") or 0), latency_ms=latency,
        request_headers=dict(sorted(shown.items())),
        request_body=_body(request), response_body=_body(response),
        route=req_headers.get(ROUTE_HEADER, "-") if edge else None)


def split_stream(buffer: str) -> tuple[list[dict[str, Any]], str]:
    """Whole JSON documents at the start of `buffer` (Envoy streams them back to back),
    and the incomplete rest."""
    decoder = json.JSONDecoder()
    out: list[dict[str, Any]] = []
    pos = 0
    while True:
        while pos < len(buffer) and buffer[pos].isspace():
            pos += 1
        if pos >= len(buffer):
            return out, ""
        try:
            doc, end = decoder.raw_decode(buffer, pos)
        except json.JSONDecodeError:
            return out, buffer[pos:]
        if isinstance(doc, dict):
            out.append(doc)
        pos = end


def tap_config(path: str | None, method: str | None, bodies: bool) -> dict[str, Any]:
    """The admin /tap request body: match on :path prefix and :method, stream to the
    admin response. Bodies are buffered (up to 4 KiB) only when asked for."""
    rules: list[dict[str, Any]] = []
    if path:
        rules.append({"http_request_headers_match": {"headers": [
            {"name": ":path", "string_match": {"prefix": path}}]}})
    if method:
        rules.append({"http_request_headers_match": {"headers": [
            {"name": ":method", "string_match": {"exact": method.upper()}}]}})
    match: dict[str, Any] = {"any_match": True}
    if len(rules) == 1:
        match = rules[0]
    elif rules:
        match = {"and_match": {"rules": rules}}
    limit = _MAX_BODY if bodies else 0
    return {"config_id": "gossamer", "tap_config": {
        "match": match,
        "output_config": {"sinks": [{"streaming_admin": {}, "format": "JSON_BODY_AS_STRING"}],
                          "max_buffered_rx_bytes": limit, "max_buffered_tx_bytes": limit}}}


def events_from(docs: Sequence[Mapping[str, Any]], destination: str,
                edge: bool = False) -> Iterator[TapEvent]:
    for doc in docs:
        try:
            yield to_event(doc, destination, edge)
        except (BadTrace, ValueError, TypeError):
            continue
