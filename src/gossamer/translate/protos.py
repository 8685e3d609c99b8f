"""Build Envoy protos from readable dicts; importing the extension modules
registers their types so `@type` in typed_config resolves."""

from __future__ import annotations

from typing import Any, TypeVar

from envoy.config.cluster.v3 import cluster_pb2  # noqa: F401
from envoy.config.endpoint.v3 import endpoint_pb2  # noqa: F401
from envoy.config.listener.v3 import listener_pb2  # noqa: F401
from envoy.config.route.v3 import route_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2  # noqa: F401
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from google.protobuf import json_format
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3." \
      "HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
HTTP_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
ADS: dict[str, Any] = {"ads": {}, "resourceApiVersion": "V3"}


def build(message_type: type[M], data: dict[str, Any]) -> M:
    msg = message_type()
    json_format.ParseDict(data, msg)
    return msg


def to_dict(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=False)
    return out


def seconds(ms: int) -> str:
    return f"{ms / 1000:.3f}s"


def socket_address(address: str, port: int) -> dict[str, Any]:
    return {"socketAddress": {"address": address, "portValue": port}}
