"""The one entry point a wiring calls: resources in, native resources out, the SMI ones
replaced by what they map to (docs/smi.md).

Pure: it reads only its arguments. Each SMI resource maps on its own; one that cannot
be mapped is left out and reported in `Expanded.refused` (its key -> why, with the
field), so one bad TrafficTarget never takes the rest of the mesh with it. What it
maps to is validated as any applied document is, so nothing it makes can be config
Envoy would reject.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gossamer.contract.spiffe import DEFAULT_TRUST_DOMAIN
from gossamer.model.errors import FieldError, InvalidResource
from gossamer.model.meta import Resource, ResourceKey
from gossamer.model.registry import parse_document
from gossamer.model.service import Service
from gossamer.model.smi import HTTPRouteGroup, SmiTCPRoute, TrafficSplit, TrafficTarget
from gossamer.model.workload import Workload
from gossamer.smi.access import traffic_target
from gossamer.smi.split import traffic_split

SMI = (TrafficSplit, TrafficTarget, HTTPRouteGroup, SmiTCPRoute)


@dataclass(frozen=True)
class Expanded:
    resources: list[Resource]
    refused: dict[ResourceKey, InvalidResource] = field(default_factory=dict)


def _selects(service: Service, workload: Workload) -> bool:
    """The index's rule (a Service's workloads): same namespace, and labels containing
    the selector, or with no selector `spec.service` naming it."""
    if workload.metadata.namespace != service.metadata.namespace:
        return False
    if not service.spec.selector:
        return workload.spec.service == service.metadata.name
    return all(workload.metadata.labels.get(k) == v for k, v in service.spec.selector.items())


def service_accounts(services: Iterable[Service], workloads: Iterable[Workload],
                     ) -> dict[tuple[str, str], tuple[str, ...]]:
    """(namespace, Service) -> the accounts its workloads run as (healthy or not: access
    is granted to an identity, not to an endpoint)."""
    workloads = list(workloads)
    return {(s.metadata.namespace, s.metadata.name):
            tuple(sorted({w.account for w in workloads if _selects(s, w)}))
            for s in services}


def _by_name(items: Iterable[Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = defaultdict(dict)
    for r in items:
        out[r.metadata.namespace][r.metadata.name] = r
    return out


def _parsed(source: Resource, docs: list[dict[str, Any]]) -> list[Resource]:
    out = []
    for doc in docs:
        try:
            out.append(parse_document(doc))
        except InvalidResource as exc:
            reason = "; ".join(str(e) for e in exc.errors)
            raise InvalidResource([FieldError("spec", f"maps to an invalid {doc['kind']} "
                                                      f"{doc['metadata']['name']!r}: {reason}")],
                                  kind=source.kind, name=source.metadata.name) from exc
    return out


def native_documents(source: Resource, resources: Iterable[Resource],
                     trust_domain: str = DEFAULT_TRUST_DOMAIN) -> list[dict[str, Any]]:
    """What one SMI TrafficSplit or TrafficTarget maps to, given the other resources;
    InvalidResource (with the field) when it cannot be mapped."""
    resources = list(resources)
    ns = source.metadata.namespace
    groups = _by_name(r for r in resources if isinstance(r, HTTPRouteGroup)).get(ns, {})
    if isinstance(source, TrafficSplit):
        root = next((r for r in resources if isinstance(r, Service)
                     and r.metadata.namespace == ns
                     and r.metadata.name == source.spec.service), None)
        return traffic_split(source, groups, root)
    if isinstance(source, TrafficTarget):
        tcp = _by_name(r for r in resources if isinstance(r, SmiTCPRoute)).get(ns, {})
        accounts = service_accounts((r for r in resources if isinstance(r, Service)),
                                    (r for r in resources if isinstance(r, Workload)))
        local = {svc: runs for (sns, svc), runs in accounts.items() if sns == ns}
        return traffic_target(source, groups, tcp, local, trust_domain)
    return []


def check(source: Resource, resources: Iterable[Resource],
          trust_domain: str = DEFAULT_TRUST_DOMAIN) -> None:
    """At apply: InvalidResource when `source` (SMI or not) would not map, with the
    resources it would join."""
    if isinstance(source, TrafficSplit | TrafficTarget):
        _parsed(source, native_documents(source, resources, trust_domain))


def expand(documents: Iterable[Resource], trust_domain: str = DEFAULT_TRUST_DOMAIN,
           ) -> Expanded:
    """Every resource that is not SMI, then what each TrafficSplit and TrafficTarget
    maps to; HTTPRouteGroups and SMI TCPRoutes are only read."""
    resources = list(documents)
    out = [r for r in resources if not isinstance(r, SMI)]
    refused: dict[ResourceKey, InvalidResource] = {}
    for source in resources:
        if not isinstance(source, TrafficSplit | TrafficTarget):
            continue
        try:
            out += _parsed(source, native_documents(source, resources, trust_domain))
        except InvalidResource as exc:
            refused[source.key] = exc
    return Expanded(out, refused)


def expand_documents(documents: Iterable[Mapping[str, Any]],
                     trust_domain: str = DEFAULT_TRUST_DOMAIN) -> list[dict[str, Any]]:
    """`expand` for documents (as `gossamer apply` reads them): the native documents,
    or the first refusal raised."""
    result = expand([parse_document(d) for d in documents], trust_domain)
    for exc in result.refused.values():
        raise exc
    return [r.to_document() for r in result.resources]
