"""TCPRoute -> the clusters, with weights, a TCP service port's connections go to."""

from __future__ import annotations

from collections.abc import Mapping

from gossamer.index import SvcKey
from gossamer.model import Service, TCPRoute, TLSRoute
from gossamer.translate import names


def tcp_route_clusters(route: TCPRoute | TLSRoute,
                       services: Mapping[SvcKey, Service]) -> list[tuple[str, int]]:
    """(cluster, weight) of each backend with weight > 0. A backend that names no
    Service (or port) keeps its share on a cluster that does not exist, so that
    share of connections is closed, as Gateway API asks; none at all: every one."""
    ns = route.metadata.namespace
    totals: dict[str, int] = {}
    for ref in route.spec.rules[0].backend_refs:
        if ref.weight == 0 or ref.port is None:
            continue
        svc = services.get((ref.namespace or ns, ref.name))
        cluster = (names.outbound_cluster(ref.namespace or ns, ref.name, ref.port)
                   if svc is not None and svc.port(ref.port) is not None
                   else names.NO_ROUTE_CLUSTER)
        totals[cluster] = totals.get(cluster, 0) + ref.weight
    return list(totals.items()) or [(names.NO_ROUTE_CLUSTER, 1)]
