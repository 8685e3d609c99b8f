"""Discovery responses assembled as bytes from cached, pre-serialized pieces.

Why: at thousands of proxies, building a `DiscoveryResponse` message per stream
and serializing it re-encodes every resource once per proxy per push, which was
2-7x slower and used gigabytes (see DESIGN.md, "Facts checked"). Protobuf's wire
format lets a message be written as a concatenation of its fields, and a
repeated message field is just that field repeated, so a response is

    version_info | resources... | type_url | nonce          (DiscoveryResponse)

where each `resources` entry is the length-delimited bytes of a
`google.protobuf.Any`: the resource's serialized payload with a few bytes of
framing (the field tag and length, the Any's type_url) before it. The framing
is made once per `XdsResource` object and kept on it (`sotw_frame`,
`delta_frame`), so it lives exactly as long as some snapshot still holds the
resource (they are immutable, and translation shares one object among every
snapshot that holds the same resource), and a push does no per-resource encoding
at all.

The bytes we produce are the canonical (field-number ordered) encoding, so they
parse back into exactly the message the slow path would have built; the unit
tests check that with the real protobuf classes.

Also here: a small byte-bounded LRU of whole state-of-the-world response
bodies (everything but the nonce), shared by all streams, because proxies with
the same wildcard subscription get byte-identical responses.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final

from gossamer.xds.types import XdsResource

# Wire type 2 (length-delimited) tags, precomputed: (field_number << 3) | 2.
# Any: type_url = 1, value = 2.
# Resource: version = 1, resource = 2, name = 3, aliases = 4.
# DiscoveryResponse: version_info = 1, resources = 2, type_url = 4, nonce = 5.
# DeltaDiscoveryResponse: system_version_info = 1, resources = 2, type_url = 4,
#   nonce = 5, removed_resources = 6.
_TAG1: Final = b"\x0a"
_TAG2: Final = b"\x12"
_TAG3: Final = b"\x1a"
_TAG4: Final = b"\x22"
_TAG5: Final = b"\x2a"
_TAG6: Final = b"\x32"


def varint(value: int) -> bytes:
    """Base-128 varint, as protobuf encodes lengths (value must be >= 0)."""
    if value < 0:
        raise ValueError("varint of a negative number")
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, data: bytes) -> bytes:
    return tag + varint(len(data)) + data


def _str_field(tag: bytes, text: str) -> bytes:
    """A proto3 string field; empty strings are omitted, as protobuf does."""
    if not text:
        return b""
    return _field(tag, text.encode())


def _any_head(resource: XdsResource) -> bytes:
    """An Any's bytes up to its value: type_url, then the value's tag and length."""
    head = _str_field(_TAG1, resource.type_url)
    if resource.payload:  # proto3 omits an empty bytes field
        head += _TAG2 + varint(len(resource.payload))
    return head


def _sotw_frame(resource: XdsResource) -> bytes:
    """What goes before the payload in one `resources` entry (an Any) of a
    DiscoveryResponse: made on a resource's first send and kept on it (callers
    read `resource.sotw_frame` first).

    Why only the framing and not the whole entry: the entry would copy the
    payload, and most resources are one proxy's own (its listeners and
    routes), sent once; kept per resource, such copies were ~10 KiB of the
    control plane's memory per proxy. Joining frame and payload costs what
    joining one piece does.
    """
    head = _any_head(resource)
    frame = _TAG2 + varint(len(head) + len(resource.payload)) + head
    object.__setattr__(resource, "sotw_frame", frame)
    return frame


def _resource_parts(resource: XdsResource) -> tuple[bytes, bytes]:
    """A delta `Resource` (version, the Any, name) as the bytes before and after
    the payload."""
    any_head = _any_head(resource)
    head = (_str_field(_TAG1, resource.version)
            + _TAG2 + varint(len(any_head) + len(resource.payload)) + any_head)
    return head, _str_field(_TAG3, resource.name)


def _delta_frame(resource: XdsResource) -> tuple[bytes, bytes]:
    """The same for a DeltaDiscoveryResponse's `resources` entry: (before, after),
    kept as `resource.delta_frame`."""
    head, tail = _resource_parts(resource)
    size = len(head) + len(resource.payload) + len(tail)
    frame = (_TAG2 + varint(size) + head, tail)
    object.__setattr__(resource, "delta_frame", frame)
    return frame


def any_bytes(resource: XdsResource) -> bytes:
    """Serialized `google.protobuf.Any` wrapping the resource."""
    return _any_head(resource) + resource.payload


def delta_resource_bytes(resource: XdsResource) -> bytes:
    """Serialized `envoy.service.discovery.v3.Resource` (version, Any, name)."""
    head, tail = _resource_parts(resource)
    return head + resource.payload + tail


def sotw_body(type_url: str, version: str, resources: Iterable[XdsResource]) -> bytes:
    """A DiscoveryResponse without its nonce: version_info, resources, type_url.

    Append `nonce_field(nonce)` to get the whole response (fields may appear in
    any order on the wire, but nonce = 5 after type_url = 4 keeps it canonical).
    """
    parts = [_str_field(_TAG1, version)]
    append = parts.append
    for resource in resources:  # the hot loop of every SotW push: keep it lean
        append(resource.sotw_frame or _sotw_frame(resource))
        append(resource.payload)
    parts.append(_str_field(_TAG4, type_url))
    return b"".join(parts)


def nonce_field(nonce: str) -> bytes:
    """The nonce (field 5 in both response messages)."""
    return _str_field(_TAG5, nonce)


def sotw_response(type_url: str, version: str, resources: Iterable[XdsResource],
                  nonce: str) -> bytes:
    """A whole serialized DiscoveryResponse."""
    return sotw_body(type_url, version, resources) + nonce_field(nonce)


def _aliased_frame(resource: XdsResource, aliases: Sequence[str]) -> tuple[bytes, bytes]:
    """A delta `Resource` entry's framing with `aliases` (field 4, after the name):
    made per response, not kept, since the aliases are one stream's requests."""
    head, tail = _resource_parts(resource)
    tail += b"".join(_field(_TAG4, a.encode()) for a in aliases)
    size = len(head) + len(resource.payload) + len(tail)
    return _TAG2 + varint(size) + head, tail


def delta_response(
    type_url: str,
    system_version: str,
    resources: Iterable[XdsResource],
    removed: Iterable[str],
    nonce: str,
    aliases: Mapping[str, Sequence[str]] | None = None,
    unresolved: Sequence[str] = (),
) -> bytes:
    """A whole serialized DeltaDiscoveryResponse, in canonical field order.
    `aliases`: per resource name, the aliases it is sent as (on-demand VHDS);
    `unresolved`: names sent as a `Resource` with no resource in it, VHDS's answer
    to an alias that no virtual host answers for."""
    parts = [_str_field(_TAG1, system_version)]
    append = parts.append
    for resource in resources:
        named = aliases.get(resource.name) if aliases else None
        if named:
            head, tail = _aliased_frame(resource, named)
        else:
            head, tail = resource.delta_frame or _delta_frame(resource)
        append(head)
        append(resource.payload)
        append(tail)
    for name in unresolved:
        append(_field(_TAG2, _field(_TAG3, name.encode()) + _field(_TAG4, name.encode())))
    parts.append(_str_field(_TAG4, type_url))
    parts.append(_str_field(_TAG5, nonce))
    for name in removed:
        # Repeated strings keep empty elements, unlike singular proto3 strings.
        parts.append(_field(_TAG6, name.encode()))
    return b"".join(parts)


BodyKey = tuple[str, str, frozenset[str] | None]


class BodyCache:
    """Byte-bounded LRU of state-of-the-world response bodies, shared by all streams.

    Key: (type_url, set version, requested names or None for "every resource
    of the type"). The set version is a content hash of every (name, version)
    of the type in the snapshot, so with the requested names it pins the body
    (the requested resources that exist). Proxies of the same workload
    subscribe alike, so a push builds each distinct body once, not once per
    stream. Not thread-safe: use it from the event loop that runs the streams.
    """

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self.max_bytes = max_bytes
        self._bytes = 0
        self._entries: OrderedDict[BodyKey, tuple[bytes, int]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, type_url: str, version: str, names: frozenset[str] | None,
            select: Callable[[], Sequence[XdsResource]]) -> tuple[bytes, int]:
        """(body, resource count); `select()` lists the resources on a miss."""
        key: BodyKey = (type_url, version, names)
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            return entry
        self.misses += 1
        resources = select()
        entry = (sotw_body(type_url, version, resources), len(resources))
        size = len(entry[0])
        if size <= self.max_bytes // 4:
            self._entries[key] = entry
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (evicted, _count) = self._entries.popitem(last=False)
                self._bytes -= len(evicted)
        return entry

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0
