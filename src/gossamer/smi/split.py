"""TrafficSplit -> an HTTPRoute on the root Service's HTTP ports and a TCPRoute per TCP
port, with the split's weights on their backendRefs.

With `matches`, the HTTPRoute's first rule carries the matches of the named
HTTPRouteGroups (all of them, merged: SMI) and the weighted backends; a second rule
sends everything else to the root Service itself, as SMI says unmatched requests go.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gossamer.model.httproute import HTTPRoute
from gossamer.model.meta import GATEWAY_API_VERSION
from gossamer.model.service import Service
from gossamer.model.smi import HTTPMatch, HTTPRouteGroup, TrafficSplit
from gossamer.model.tcproute import TCPROUTE_API_VERSION
from gossamer.smi.common import generated, refuse

# A path regex that matches every path needs no match.
ANY_PATH = (".*", "^.*", "/.*", "^/.*")


def route_matches(match: HTTPMatch) -> list[dict[str, Any]]:
    """One SMI match as HTTPRoute matches: one per method (an HTTPRoute match takes one),
    the path regex anchored at the start only (as SMI anchors it), headers by regex."""
    out: dict[str, Any] = {}
    if match.path_regex is not None and match.path_regex not in ANY_PATH:
        out["path"] = {"type": "RegularExpression", "value": f"(?:{match.path_regex}).*"}
    if match.headers:
        out["headers"] = [{"type": "RegularExpression", "name": name, "value": value}
                          for name, value in sorted(match.headers.items())]
    methods = [] if "*" in match.methods else match.methods
    return [{**out, "method": m} for m in methods] or [out]


def traffic_split(split: TrafficSplit, groups: Mapping[str, HTTPRouteGroup],
                  root: Service | None) -> list[dict[str, Any]]:
    """The native documents of one TrafficSplit. `groups`: the HTTPRouteGroups of its
    namespace by name; `root`: its root Service, if known (unknown: HTTP only)."""
    spec = split.spec
    backends = [{"name": b.service, "weight": b.weight} for b in spec.backends]
    http = root is None or any(p.protocol.is_http for p in root.spec.ports)
    tcp = [] if root is None else [p.port for p in root.spec.ports if not p.protocol.is_http]
    if spec.matches and tcp:
        raise refuse(split, "spec.matches", f"the root Service {spec.service!r} has TCP "
                     f"port(s) {', '.join(map(str, tcp))}: HTTPRouteGroup matches cannot "
                     "apply to TCP connections; split TCP ports in a TrafficSplit without "
                     "matches")
    out = []
    if http:
        rules: list[dict[str, Any]] = [{"backendRefs": backends}]
        if spec.matches:
            matches = []
            for i, ref in enumerate(spec.matches):
                group = groups.get(ref.name)
                if group is None:
                    raise refuse(split, f"spec.matches[{i}].name", f"HTTPRouteGroup "
                                 f"{ref.name!r} not found in namespace "
                                 f"{split.metadata.namespace!r}")
                matches += [r for m in group.spec.matches for r in route_matches(m)]
            rules = [{"matches": matches, "backendRefs": backends},
                     {"backendRefs": [{"name": spec.service}]}]
        out.append(generated(split, GATEWAY_API_VERSION, HTTPRoute.KIND, "", {
            "parentRefs": [{"group": "", "kind": "Service", "name": spec.service}],
            "rules": rules}))
    for port in tcp:
        refs = [{**b, "port": port} for b in backends]
        out.append(generated(split, TCPROUTE_API_VERSION, "TCPRoute", str(port), {
            "parentRefs": [{"group": "", "kind": "Service", "name": spec.service,
                            "port": port}],
            "rules": [{"backendRefs": refs}]}))
    return out
