"""Immutable xDS resources and snapshots, shared between translation and the server.

A resource is serialized exactly once, when it is made; its version is a hash
of those bytes. Two proxies that get an identical cluster get the same
`XdsResource` object (translation builds each shared resource once per mesh,
translate/mesh.py), so a push serializes nothing per stream.
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
# VHDS: the virtual hosts of a route config whose `vhds` names ADS, each its own
# resource named `<route config>/<domain>` (delta streams only).
VHOST = API + "envoy.config.route.v3.VirtualHost"
# The order Envoy needs to see updates in (make before break): clusters before
# their endpoints, listeners before their routes, route configs before their
# virtual hosts.
PUSH_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE, VHOST, SECRET)
SHORT = {CLUSTER: "clusters", ENDPOINT: "endpoints", LISTENER: "listeners", ROUTE: "routes",
         VHOST: "vhosts", SECRET: "secrets"}
# Types whose subscriptions name resources; the others are wildcard by default
# (VHDS too: Envoy's first VirtualHost request names nothing, and the server sends
# every virtual host the node's snapshot holds).
NAMED_TYPES = frozenset({ENDPOINT, ROUTE, SECRET})
# Types whose subscriptions may name namespaces: a name stands for every resource
# named `<that name>/...` (Envoy's namespace matching, for VHDS).
NAMESPACED_TYPES = frozenset({VHOST})


def namespace_of(name: str) -> str:
    """The namespace of a resource name of a NAMESPACED_TYPES type (Envoy's rule:
    everything before the last '/'); "" for a name without one."""
    return name.rpartition("/")[0]


@dataclass(frozen=True, eq=False, slots=True, weakref_slot=True)
class XdsResource:
    type_url: str
    name: str
    # The serialized resource message (not wrapped in Any).
    payload: bytes
    # Content hash of payload: equal bytes, equal version.
    version: str
    # Hash of (name, version) as an integer: a set's version sums these.
    digest: int = field(init=False, repr=False, compare=False)
    # The protobuf framing around `payload` in a response (see xds.wire), made
    # on first send and kept with the resource: the bytes before the payload
    # (SotW), or before and after it (delta). Only the framing: the payload is
    # never copied, because most resources are one proxy's own, sent once.
    sotw_frame: bytes | None = field(
        default=None, init=False, repr=False, compare=False)
    delta_frame: tuple[bytes, bytes] | None = field(
        default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        item = hashlib.blake2b(self.name.encode() + b"\0" + self.version.encode(),
                               digest_size=8).digest()
        object.__setattr__(self, "digest", int.from_bytes(item, "big"))

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
    """Version of a whole set: the sum (mod 2^64) of its (name, version) hashes.

    Order-independent, and with the item hashes made once per resource it costs
    one addition per resource: every proxy's snapshot carries the whole mesh's
    clusters and endpoints, so sorting and rehashing them per proxy was most of a
    rebuild's time at a thousand services. (A multiset sum is fine here: names
    are unique within a set, and versions are content hashes, not secrets.)
    """
    return version_of_sum(digest_sum(resources))


_MASK = (1 << 64) - 1


def digest_sum(resources: Mapping[str, XdsResource]) -> int:
    """What `version_of` hashes: translation keeps it for sets many snapshots share."""
    return sum(r.digest for r in resources.values()) & _MASK


def version_of_sum(total: int) -> str:
    return f"{total & _MASK:016x}"


EMPTY_VERSION = version_of_sum(0)  # of a type with no resources (or none at all)


def _frozen(resources: Mapping[str, XdsResource]) -> Mapping[str, XdsResource]:
    """A read-only mapping of `resources`. A MappingProxyType is taken as is: the
    caller hands over a view of a dict nobody changes any more, so thousands of
    proxies' snapshots can share one (e.g. every proxy's endpoints)."""
    if isinstance(resources, MappingProxyType):
        return resources
    return MappingProxyType(dict(resources))


@dataclass(frozen=True, eq=False, slots=True)
class OnDemand:
    """Which of a type's resources a proxy gets only when it asks for them by name
    (Envoy's on-demand discovery: the `on_demand` filter's ODCDS and VHDS lookups),
    not by its wildcard or namespace subscription; and, for VHDS, the aliases it may
    ask by (`<route config>/<Host header>` -> the virtual host's resource name).

    Translation shares one object among the proxies of one scope, and the stream
    machine compares it by identity to notice a change (xds/delta.py)."""

    names: frozenset[str] | None  # None: every resource of the type
    aliases: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # What the first answer names, as aliases resolving to nothing, when it has
    # nothing else (VHDS: `<route config>/`, in the namespace Envoy watches): a
    # namespace watch ignores an empty response, and the route config would wait
    # for its virtual hosts until the initial fetch timeout (15 s).
    namespaces: tuple[str, ...] = ()
    # Of `names`, those sent up front all the same: a few per proxy, so that the big
    # set is one object shared by every proxy of a scope (a set per proxy was ~30
    # MiB at 1000 proxies x 1000 Services).
    kept: frozenset[str] = frozenset()

    def holds(self, name: str) -> bool:
        return (self.names is None or name in self.names) and name not in self.kept


_NO_DEMAND: Mapping[str, OnDemand] = MappingProxyType({})


@dataclass(frozen=True)
class Snapshot:
    """Everything one proxy should have, per type URL, by resource name; and per type,
    which of them it gets only on demand (`OnDemand`; delta streams only)."""

    resources: Mapping[str, Mapping[str, XdsResource]]
    versions: Mapping[str, str] = field(default_factory=dict)
    on_demand: Mapping[str, OnDemand] = field(default_factory=lambda: _NO_DEMAND)

    @classmethod
    def build(cls, by_type: Mapping[str, Mapping[str, XdsResource]],
              sums: Mapping[str, int] | None = None,
              on_demand: Mapping[str, OnDemand] | None = None) -> Snapshot:
        """`sums`: `digest_sum` of some types' resources, when the caller has them
        (it must be exactly that sum; it only spares adding up big shared sets)."""
        frozen = {t: _frozen(by_type.get(t, {})) for t in PUSH_ORDER}
        sums = sums or {}
        versions = {t: version_of_sum(sums[t]) if t in sums else version_of(r)
                    for t, r in frozen.items()}
        return cls(MappingProxyType(frozen), MappingProxyType(versions),
                   MappingProxyType(dict(on_demand)) if on_demand else _NO_DEMAND)

    def replace_type(self, type_url: str, resources: Mapping[str, XdsResource],
                     total: int | None = None, on_demand: OnDemand | None = None,
                     ) -> Snapshot:
        """This snapshot with one type's resources replaced; the others are shared,
        not copied. `total`: their `digest_sum`, if the caller has it. `on_demand`:
        the type's new `OnDemand`, if it has one (else it keeps its old one)."""
        frozen = _frozen(resources)
        version = version_of_sum(total) if total is not None else version_of(frozen)
        demand = self.on_demand
        if on_demand is not None:
            demand = MappingProxyType({**demand, type_url: on_demand})
        return Snapshot(MappingProxyType({**self.resources, type_url: frozen}),
                        MappingProxyType({**self.versions, type_url: version}), demand)

    def demand(self, type_url: str) -> OnDemand | None:
        return self.on_demand.get(type_url)

    def of(self, type_url: str) -> Mapping[str, XdsResource]:
        return self.resources.get(type_url, MappingProxyType({}))

    def version(self, type_url: str) -> str:
        return self.versions.get(type_url, EMPTY_VERSION)
