"""Build Envoy protos from readable dicts; importing the extension modules
registers their types so `@type` in typed_config resolves.

Resource versions are hashes of the serialized bytes, so equal config must
give equal bytes. Serializing deterministically does not reach into `Any`
fields (typed_config), which hold bytes packed when the dict was parsed, with
maps (RBAC policies, JWT providers) in hash-table order; `build` repacks
every `Any` deterministically.
"""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from typing import Any, TypeVar

from envoy.config.cluster.v3 import cluster_pb2  # noqa: F401
from envoy.config.endpoint.v3 import endpoint_pb2  # noqa: F401
from envoy.config.listener.v3 import listener_pb2  # noqa: F401
from envoy.config.route.v3 import route_pb2  # noqa: F401
from envoy.extensions.filters.http.cors.v3 import cors_pb2  # noqa: F401
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_authn_pb2  # noqa: F401
from envoy.extensions.filters.http.on_demand.v3 import on_demand_pb2  # noqa: F401
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.http.tap.v3 import tap_pb2  # noqa: F401
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2  # noqa: F401
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2  # noqa: F401
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2  # noqa: F401
from envoy.extensions.retry.priority.previous_priorities.v3 import (  # noqa: F401
    previous_priorities_config_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from google.protobuf import any_pb2, json_format, symbol_database
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3." \
      "HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
HTTP_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HTTP_RBAC = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
NETWORK_RBAC = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
JWT_AUTHN = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
TLS_INSPECTOR = "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3." \
                "TlsInspector"
UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
DOWNSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3." \
                 "DownstreamTlsContext"
CORS = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"
# A route's (or virtual host's) per-filter switch: `disabled` leaves the filter out.
FILTER_CONFIG = "type.googleapis.com/envoy.config.route.v3.FilterConfig"
CORS_POLICY = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy"
ADS: dict[str, Any] = {"ads": {}, "resourceApiVersion": "V3"}


def _repack(packed: any_pb2.Any) -> None:
    prefix = packed.type_url.rsplit("/", 1)[0]
    inner = symbol_database.Default().GetSymbol(packed.TypeName())()
    packed.Unpack(inner)
    canonicalize(inner)
    packed.Pack(inner, type_url_prefix=prefix, deterministic=True)


def canonicalize(msg: Message) -> None:
    """Repack every nested `Any` with deterministic serialization, in place."""
    for fd, value in msg.ListFields():
        mtype = fd.message_type
        if mtype is None:
            continue
        if mtype.full_name == "google.protobuf.Any":
            for packed in value if fd.is_repeated else [value]:
                _repack(packed)
        elif mtype.GetOptions().map_entry:
            if mtype.fields_by_name["value"].message_type is not None:
                for item in value.values():
                    canonicalize(item)
        else:
            for item in value if fd.is_repeated else [value]:
                canonicalize(item)


class _DataPickler(pickle.Pickler):
    """Pickles plain data only (the types pickle handles itself, whose bytes are
    their value), so that no object with a lossy pickle can make two inputs one key."""

    def reducer_override(self, obj: Any) -> Any:
        raise TypeError(f"not plain data: {type(obj).__name__}")


class _BuildMemo:
    """Serialized results of `build`, by message type and a pickle of the input.

    `build` is a pure function of its arguments, and json_format.ParseDict is
    by far the slowest step of translation (a few ms per listener). What is
    translated again mostly comes out as before: after a policy change every
    proxy is translated again (`proxy_inputs` is coarse there) and most get the
    same listeners; a Service whose inputs changed may get the same clusters; a
    proxy that reconnects (or the first of its shape) builds listeners others
    already have. Remembering the bytes turns each of those into a parse of
    bytes (tens of µs). A copy is returned each time: callers may
    mutate their message. An LRU bounded in bytes (key plus message); inputs
    too big to be worth keeping (a whole mesh's route table) are built every
    time. A cache only, never a source of truth.

    The key is a pickle, not canonical JSON: as JSON with sorted keys it was a
    third of a reconnecting proxy's translation; a pickle is 5x faster. It is
    exact (equal bytes, equal input). Pickled in "fast" mode, without the memo,
    so the bytes do not depend on which parts of the input are the same
    object, only on their values; the input is JSON-like data, never
    self-referential. Unlike sorted JSON it follows dict order: the same dict
    built in another order only misses, and each builder builds in one order.
    """

    def __init__(self, max_bytes: int = 32 << 20, max_entry: int = 256 << 10) -> None:
        self.max_bytes = max_bytes
        self.max_entry = max_entry
        self._bytes = 0
        self._entries: OrderedDict[tuple[str, bytes], bytes] = OrderedDict()

    def key(self, message_type: type[Message], data: dict[str, Any]) -> tuple[str, bytes] | None:
        out = io.BytesIO()
        pickler = _DataPickler(out, pickle.HIGHEST_PROTOCOL)
        pickler.fast = True
        try:
            pickler.dump(data)
        except (TypeError, RecursionError):
            return None  # not plain data: build it every time
        text = out.getvalue()
        if len(text) > self.max_entry:
            return None
        return message_type.DESCRIPTOR.full_name, text

    def get(self, key: tuple[str, bytes]) -> bytes | None:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def put(self, key: tuple[str, bytes], payload: bytes) -> None:
        if key in self._entries:
            return
        self._entries[key] = payload
        self._bytes += len(key[1]) + len(payload)
        while self._bytes > self.max_bytes:
            (_, text), old = self._entries.popitem(last=False)
            self._bytes -= len(text) + len(old)


_memo = _BuildMemo()


def build(message_type: type[M], data: dict[str, Any]) -> M:
    key = _memo.key(message_type, data)
    if key is not None and (payload := _memo.get(key)) is not None:
        return message_type.FromString(payload)
    msg = message_type()
    json_format.ParseDict(data, msg)
    canonicalize(msg)
    if key is not None:
        _memo.put(key, msg.SerializeToString(deterministic=True))
    return msg


def to_dict(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=False)
    return out


def seconds(ms: int) -> str:
    return f"{ms / 1000:.3f}s"


def socket_address(address: str, port: int) -> dict[str, Any]:
    return {"socketAddress": {"address": address, "portValue": port}}
