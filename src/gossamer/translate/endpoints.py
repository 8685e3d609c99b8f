"""ClusterLoadAssignments: the healthy instances behind each service port.

Built directly (not via dicts) because endpoint churn is the hottest path.
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.core.v3 import address_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from gossamer.index import Endpoint


def load_assignment(
    cluster_name: str, endpoints: Iterable[Endpoint]
) -> endpoint_pb2.ClusterLoadAssignment:
    """An empty assignment is still sent: a cluster without one never finishes warming."""
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=cluster_name)
    locality = cla.endpoints.add()
    for ep in endpoints:
        lb = endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(
                address=address_pb2.Address(
                    socket_address=address_pb2.SocketAddress(
                        address=ep.address, port_value=ep.port
                    )
                )
            )
        )
        locality.lb_endpoints.append(lb)
    return cla
