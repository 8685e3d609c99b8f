"""Immutable xDS resources and snapshots, shared between translation and the server.

A resource is serialized exactly once, when it is made; its version is a hash
of those bytes. Two proxies that get an identical cluster get the same
`XdsResource` object (see `intern`), so a push serializes nothing per stream.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from google.protobuf.message import Message

API = "type.googleapis.com/"
CLUSTER = API + "envoy.config.cluster.v3.Cluster"
ENDPOINT = API + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = API + "envoy.config.listener.v3.Listener"
ROUTE = API + "envoy.config.route.v3.RouteConfiguration"
SECRET = API + "envoy.extensions.transport_sockets.tls.v3.Secret"
# The order Envoy needs to see updates in (make before break): clusters before
# their endpoints, listeners before their routes.
PUSH_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)
SHORT = {CLUSTER: "clusters", ENDPOINT: "endpoints", LISTENER: "listeners", ROUTE: "routes",
         SECRET: "secrets"}
# Types whose subscriptions name resources; the others are wildcard by default.
NAMED_TYPES = frozenset({ENDPOINT, ROUTE, SECRET})


@dataclass(frozen=True, eq=False)
class XdsResource:
    type_url: str
    name: str
    # The serialized resource message (not wrapped in Any).
    payload: bytes
    # Content hash of payload: equal bytes, equal version.
    version: str

    @classmethod
    def from_message(cls, type_url: str, name: str, message: Message) -> XdsResource:
        payload = message.SerializeToString(deterministic=True)
        digest = hashlib.blake2b(payload, digest_size=8).hexdigest()
        return cls(type_url, name, payload, digest)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, XdsResource)
            and self.type_url == other.type_url
            and self.name == other.name
            and self.version == other.version
        )

    def __hash__(self) -> int:
        return hash((self.type_url, self.name, self.version))


def version_of(resources: Mapping[str, XdsResource]) -> str:
    """Version of a whole set: a hash over (name, version) pairs, order-independent."""
    h = hashlib.blake2b(digest_size=8)
    for name in sorted(resources):
        h.update(name.encode())
        h.update(b"\0")
        h.update(resources[name].version.encode())
        h.update(b"\0")
    return h.hexdigest()


@dataclass(frozen=True)
class Snapshot:
    """Everything one proxy should have, per type URL, by resource name."""

    resources: Mapping[str, Mapping[str, XdsResource]]
    versions: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, by_type: Mapping[str, Mapping[str, XdsResource]]) -> Snapshot:
        frozen = {t: MappingProxyType(dict(by_type.get(t, {}))) for t in PUSH_ORDER}
        versions = {t: version_of(r) for t, r in frozen.items()}
        return cls(MappingProxyType(frozen), MappingProxyType(versions))

    def of(self, type_url: str) -> Mapping[str, XdsResource]:
        return self.resources.get(type_url, MappingProxyType({}))

    def version(self, type_url: str) -> str:
        return self.versions.get(type_url, version_of({}))
