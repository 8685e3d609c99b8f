"""ClusterLoadAssignments: the healthy instances behind each service port.

Built directly (not via dicts) because endpoint churn is the hottest path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from envoy.config.core.v3 import address_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from gossamer.index import Endpoint
from gossamer.model.resiliencepolicy import REGION_LABEL, ZONE_LABEL


def _lb_endpoint(ep: Endpoint) -> endpoint_components_pb2.LbEndpoint:
    return endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(
            address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address=ep.address, port_value=ep.port)
            )
        )
    )


def load_assignment(
    cluster_name: str, endpoints: Iterable[Endpoint]
) -> endpoint_pb2.ClusterLoadAssignment:
    """An empty assignment is still sent: a cluster without one never finishes warming."""
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=cluster_name)
    locality = cla.endpoints.add()
    locality.lb_endpoints.extend(_lb_endpoint(ep) for ep in endpoints)
    return cla


def _matched(labels: Mapping[str, str], caller: Mapping[str, str],
             failover: Sequence[str]) -> int:
    """How many leading failover labels the endpoint shares with the caller."""
    n = 0
    for key in failover:
        if key not in caller or labels.get(key) != caller[key]:
            break
        n += 1
    return n


def locality_assignment(
    cluster_name: str, endpoints: Iterable[Endpoint], caller: Mapping[str, str],
    failover: Sequence[str],
) -> endpoint_pb2.ClusterLoadAssignment:
    """The assignment as one caller sees it: endpoints sharing all of the caller's
    `failover` labels at priority 0, then all but the last, and so on.

    Priorities are renumbered without gaps (Envoy expects 0..N); Envoy moves traffic
    to the next priority only as the healthy share of the one above drops.
    """
    groups: dict[tuple[int, str, str], list[Endpoint]] = {}
    for ep in endpoints:
        rank = len(failover) - _matched(ep.labels, caller, failover)
        key = (rank, ep.labels.get(REGION_LABEL, ""), ep.labels.get(ZONE_LABEL, ""))
        groups.setdefault(key, []).append(ep)
    if not groups:
        return load_assignment(cluster_name, ())
    priority = {rank: i for i, rank in enumerate(sorted({k[0] for k in groups}))}
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=cluster_name)
    for (rank, region, zone), eps in sorted(groups.items()):
        group = cla.endpoints.add()
        group.priority = priority[rank]
        group.locality.region, group.locality.zone = region, zone
        group.lb_endpoints.extend(_lb_endpoint(ep) for ep in eps)
    return cla
