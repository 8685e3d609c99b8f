"""A simulated sidecar's delta-xDS behaviour, sans I/O: what Envoy asks and ACKs.

The load generator (`loadgen.py`) runs thousands of these over real gRPC
streams; this module holds only the protocol decisions, so tests can feed it
plain messages.

What it copies from Envoy (delta ADS, `DELTA_GRPC`, `setNodeOnFirstMessageOnly`):
- On (re)connect: a CDS request carrying the node, then LDS, both wildcard
  (an empty first subscription), each with `initial_resource_versions` of
  what it already holds; then EDS/RDS requests re-subscribing the names it
  had, with their versions too. So a reconnect to a restarted control plane
  with unchanged config transfers nothing.
- Every response is ACKed with its nonce (this simulator never NACKs).
- After clusters arrive, the EDS subscription follows the EDS clusters'
  `eds_cluster_config.service_name` (or the cluster name); after listeners
  arrive, the RDS subscription follows the HTTP connection managers'
  `rds.route_config_name`. Both as one subscribe/unsubscribe diff request,
  sent before the ACK of the CDS/LDS response, as Envoy's paused EDS/RDS
  subscriptions resume before the ACK goes out.
- After route configs arrive, one of them with `vhds` opens the VirtualHost
  subscription (VHDS; translate/vhds.py) as Envoy does: an empty first request
  (every virtual host the node has), resumed on reconnect with its versions.
- On demand (`calls`, the Mesh's `onDemand`): after the first VirtualHost
  answer, the VHDS aliases of the hosts its app calls (`outbound/<Host>`), as
  Envoy's `on_demand` filter asks on a first request; it is in sync once each was
  answered (with a virtual host, or as unresolved), and resumes them on reconnect.
- Resources are decoded only to find those names, and the result is cached by
  (name, version): the many proxies of one process share that work, as they
  share the control plane's resource objects.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2

from gossamer.translate.protos import HCM
from gossamer.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, VHOST

SHORT = {CLUSTER: "cds", ENDPOINT: "eds", LISTENER: "lds", ROUTE: "rds", VHOST: "vhds"}
# Parent type -> the named type its resources make Envoy subscribe to.
CHILD = {CLUSTER: ENDPOINT, LISTENER: ROUTE}

Request = discovery_pb2.DeltaDiscoveryRequest
Response = discovery_pb2.DeltaDiscoveryResponse

# (type, name, version) -> child resource names; bounded by distinct resources.
_children: dict[tuple[str, str, str], tuple[str, ...]] = {}
# (name, version) of route configs -> has `vhds`.
_vhds: dict[tuple[str, str], bool] = {}


def uses_vhds(resource: discovery_pb2.Resource) -> bool:
    """Does this route config take its virtual hosts from VHDS (cached)?"""
    key = (resource.name, resource.version)
    found = _vhds.get(key)
    if found is None:
        config = route_pb2.RouteConfiguration.FromString(resource.resource.value)
        found = _vhds[key] = config.HasField("vhds")
    return found


def _cluster_children(payload: bytes) -> tuple[str, ...]:
    cluster = cluster_pb2.Cluster.FromString(payload)
    if (cluster.WhichOneof("cluster_discovery_type") == "type"
            and cluster.type == cluster_pb2.Cluster.EDS):
        return (cluster.eds_cluster_config.service_name or cluster.name,)
    return ()


def _listener_children(payload: bytes) -> tuple[str, ...]:
    listener = listener_pb2.Listener.FromString(payload)
    names: list[str] = []
    chains = list(listener.filter_chains)
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    for chain in chains:
        for f in chain.filters:
            if f.typed_config.type_url != HCM:
                continue
            hcm = hcm_pb2.HttpConnectionManager.FromString(f.typed_config.value)
            if hcm.WhichOneof("route_specifier") == "rds":
                names.append(hcm.rds.route_config_name)
    return tuple(dict.fromkeys(names))


def children_of(type_url: str, resource: discovery_pb2.Resource) -> tuple[str, ...]:
    """EDS names an EDS cluster needs, RDS names a listener needs (cached)."""
    if type_url not in CHILD:
        return ()
    key = (type_url, resource.name, resource.version)
    found = _children.get(key)
    if found is None:
        payload = resource.resource.value
        found = (_cluster_children(payload) if type_url == CLUSTER
                 else _listener_children(payload))
        _children[key] = found
    return found


def node_proto(node_id: str, cluster: str, metadata: dict[str, Any]) -> Any:
    """The `Node` a sidecar's Envoy sends (id, cluster, metadata, user agent)."""
    meta = struct_pb2.Struct()
    meta.update(metadata)
    req = Request()
    req.node.id = node_id
    req.node.cluster = cluster
    req.node.metadata.CopyFrom(meta)
    req.node.user_agent_name = "envoy"
    req.node.user_agent_build_version.version.major_number = 1
    req.node.user_agent_build_version.version.minor_number = 40
    return req.node


@dataclass
class TypeState:
    """One type of one simulated proxy: what it subscribes to and what it holds."""

    type_url: str
    wildcard: bool = False
    names: set[str] = field(default_factory=set)
    known: dict[str, str] = field(default_factory=dict)
    # Per resource name: the names of the child type it needs (CDS/LDS only).
    needs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    received: bool = False  # a response arrived since the stream started


@dataclass
class SimProxy:
    """The delta-ADS client state of one sidecar, across reconnects."""

    node_id: str
    cluster: str
    metadata: dict[str, Any]
    types: dict[str, TypeState] = field(default_factory=dict)
    responses: int = 0
    bytes: int = 0
    # On demand: the VHDS aliases its app's first requests ask for, and those answered.
    calls: list[str] = field(default_factory=list)
    answered: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        for type_url in (CLUSTER, ENDPOINT, LISTENER, ROUTE, VHOST):
            self.types[type_url] = TypeState(type_url, wildcard=type_url in CHILD)

    def start(self) -> list[Any]:
        """The requests that open a stream (first connect or reconnect)."""
        out: list[Any] = []
        for type_url in (CLUSTER, LISTENER, ENDPOINT, ROUTE, VHOST):
            st = self.types[type_url]
            st.received = False
            if not st.wildcard and not st.names:
                continue  # Envoy subscribes EDS/RDS only once it knows names
            req = Request(type_url=type_url)
            if not st.wildcard:
                req.resource_names_subscribe.extend(sorted(st.names))
            elif st.names:  # VHDS on demand: the wildcard and the aliases it asked for
                req.resource_names_subscribe.extend(["*", *sorted(st.names)])
            for name, version in st.known.items():
                req.initial_resource_versions[name] = version
            out.append(req)
        out[0].node.CopyFrom(node_proto(self.node_id, self.cluster, self.metadata))
        return out

    def on_response(self, resp: Any, size: int) -> list[Any]:
        """Apply a response; return what Envoy would send next (subscription, ACK)."""
        self.responses += 1
        self.bytes += size
        st = self.types.get(resp.type_url)
        if st is None:  # a type we never asked for: ACK it and move on
            return [Request(type_url=resp.type_url, response_nonce=resp.nonce)]
        opened = not st.received
        st.received = True
        for res in resp.resources:
            self.answered.update(res.aliases)
            if not res.HasField("resource"):
                continue  # an unresolved alias: nothing to hold
            st.known[res.name] = res.version
            if resp.type_url in CHILD:
                st.needs[res.name] = children_of(resp.type_url, res)
        for name in resp.removed_resources:
            st.known.pop(name, None)
            st.needs.pop(name, None)
        out: list[Any] = []
        vhds = self.types[VHOST]
        if (resp.type_url == ROUTE and not vhds.wildcard
                and any(uses_vhds(res) for res in resp.resources)):
            vhds.wildcard = True  # Envoy's first VHDS request names nothing
            out.append(Request(type_url=VHOST))
        if resp.type_url == VHOST and opened and self.calls and not st.names:
            st.names = set(self.calls)  # the app's first requests, by Host
            out.append(Request(type_url=VHOST, resource_names_subscribe=self.calls))
        child = CHILD.get(resp.type_url)
        if child is not None:
            sub = self._resubscribe(self.types[child], st.needs.values())
            if sub is not None:
                out.append(sub)
        out.append(Request(type_url=resp.type_url, response_nonce=resp.nonce))
        return out

    @staticmethod
    def _resubscribe(child: TypeState, needs: Iterable[tuple[str, ...]]) -> Any:
        wanted = {name for names in needs for name in names}
        added, dropped = wanted - child.names, child.names - wanted
        if not added and not dropped:
            return None
        child.names = wanted
        for name in dropped:
            child.known.pop(name, None)
        return Request(type_url=child.type_url,
                       resource_names_subscribe=sorted(added),
                       resource_names_unsubscribe=sorted(dropped))

    def synced(self) -> bool:
        """Has every type it wants arrived: clusters, listeners, and each EDS/RDS name?

        Meaningful after a first connect; a reconnect with unchanged config
        receives nothing, so the driver asks the control plane about those.
        """
        for type_url in CHILD:
            if not self.types[type_url].received:
                return False
        for type_url in (ENDPOINT, ROUTE):
            st = self.types[type_url]
            if not st.names <= st.known.keys():
                return False
        vhds = self.types[VHOST]
        return not vhds.wildcard or (vhds.received and set(self.calls) <= self.answered)
