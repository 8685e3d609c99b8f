"""TrafficTarget (with its HTTPRouteGroups and TCPRoutes) -> AuthorizationPolicy ALLOW
rules on the Services whose workloads run as the destination ServiceAccount.

An AuthorizationPolicy attaches to a Service (all its workloads) and matches paths
exactly, by prefix or by suffix: so the destination account must be the only account
of each Service it runs, and a path or header regex maps only when it is a literal,
a literal prefix (`/api/.*`, or `/api`: SMI anchors at the start only), a suffix or
`$`-ended exact value. Anything else is refused with the field (docs/smi.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gossamer.model.authorizationpolicy import AuthorizationPolicy
from gossamer.model.meta import MESH_API_VERSION
from gossamer.model.smi import HTTPMatch, HTTPRouteGroup, SmiTCPRoute, TrafficTarget
from gossamer.smi.common import generated, refuse

_META = set(".^$*+?()[]{}|\\")


def literal(regex: str) -> str | None:
    """The text a regex without operators matches (escaped punctuation allowed)."""
    out, i = [], 0
    while i < len(regex):
        c = regex[i]
        if c == "\\":
            if i + 1 >= len(regex) or regex[i + 1].isalnum():
                return None
            out.append(regex[i + 1])
            i += 2
            continue
        if c in _META:
            return None
        out.append(c)
        i += 1
    return "".join(out)


def pattern(regex: str, *, anchored_start: bool) -> str | None:
    """A regex as an exact/prefix/suffix/`*` pattern, or None. `anchored_start`: SMI's
    path regex, matched from the start of the path only (so a literal is a prefix)."""
    text = regex.removeprefix("^")
    if text in (".*", ".+"):
        return "*"
    if text.endswith("$") and (exact := literal(text[:-1])):
        return exact
    if text.endswith(".*") and (prefix := literal(text[:-2])):
        return prefix + "*"
    if not anchored_start and text.startswith(".*") and (suffix := literal(text[2:])):
        return "*" + suffix
    plain = literal(text)
    if plain:
        return plain + "*" if anchored_start else plain
    return None


def _rule(match: HTTPMatch, principals: list[str], ports: Sequence[int],
          where: str, target: TrafficTarget) -> dict[str, Any]:
    operation: dict[str, Any] = {}
    if ports:
        operation["ports"] = list(ports)
    if match.methods and "*" not in match.methods:
        operation["methods"] = list(match.methods)
    if match.path_regex is not None:
        path = pattern(match.path_regex, anchored_start=True)
        if path is None or not path.startswith(("/", "*")):
            raise refuse(target, where, f"match {match.name!r}: pathRegex "
                         f"{match.path_regex!r} cannot be mapped: an AuthorizationPolicy "
                         "matches a path exactly, by prefix or by suffix; use a literal path, "
                         "optionally ending in '.*' or '$'")
        if path != "*":
            operation["paths"] = [path]
    when = []
    for name, regex in sorted(match.headers.items()):
        value = pattern(regex, anchored_start=False)
        if value is None:
            raise refuse(target, where, f"match {match.name!r}: header {name!r} regex "
                         f"{regex!r} cannot be mapped: use a literal value, a literal "
                         "prefix ending in '.*', a suffix after '.*', or '.*'")
        when.append({"key": f"request.headers[{name}]", "values": [value]})
    rule: dict[str, Any] = {"from": [{"source": {"principals": principals}}]}
    if operation:
        rule["to"] = [{"operation": operation}]
    if when:
        rule["when"] = when
    return rule


def _selected(target: TrafficTarget, groups: Mapping[str, HTTPRouteGroup],
              tcp_routes: Mapping[str, SmiTCPRoute],
              ) -> tuple[list[tuple[str, HTTPMatch]], list[int] | None]:
    """The HTTP matches the rules name (with the rule's field path), and the ports of
    their TCPRoutes (None: no TCPRoute, or one that allows every port)."""
    ns = target.metadata.namespace
    matches: list[tuple[str, HTTPMatch]] = []
    ports: set[int] = set()
    tcp, every_port = False, False
    for i, rule in enumerate(target.spec.rules):
        where = f"spec.rules[{i}]"
        if rule.kind == "TCPRoute":
            route = tcp_routes.get(rule.name)
            if route is None:
                raise refuse(target, f"{where}.name", f"TCPRoute {rule.name!r} not found "
                             f"in namespace {ns!r}")
            tcp, every_port = True, every_port or not route.spec.matches.ports
            ports.update(route.spec.matches.ports)
            continue
        group = groups.get(rule.name)
        if group is None:
            raise refuse(target, f"{where}.name", f"HTTPRouteGroup {rule.name!r} not found "
                         f"in namespace {ns!r}")
        by_name = {m.name: m for m in group.spec.matches}
        for j, name in enumerate(rule.matches):
            if name not in by_name:
                raise refuse(target, f"{where}.matches[{j}]", f"HTTPRouteGroup "
                             f"{rule.name!r} has no match named {name!r}")
        chosen = [by_name[n] for n in rule.matches] or group.spec.matches
        matches += [(where, m) for m in chosen]
    return matches, (None if every_port or not tcp else sorted(ports))


def traffic_target(target: TrafficTarget, groups: Mapping[str, HTTPRouteGroup],
                   tcp_routes: Mapping[str, SmiTCPRoute],
                   accounts: Mapping[str, Sequence[str]], trust_domain: str,
                   ) -> list[dict[str, Any]]:
    """The AuthorizationPolicies of one TrafficTarget. `groups`, `tcp_routes`: the SMI
    specs of its namespace by name; `accounts`: its namespace's Services by name, with
    the accounts their workloads run as."""
    ns, account = target.metadata.namespace, target.spec.destination.name
    principals = [f"{trust_domain}/ns/{s.namespace or ns}/sa/{s.name}"
                  for s in target.spec.sources]
    matches, ports = _selected(target, groups, tcp_routes)
    if matches:
        rules = [_rule(m, principals, ports or (), where, target) for where, m in matches]
    else:
        rules = [_rule(HTTPMatch(name="ports"), principals, ports or (), "spec.rules", target)]
    out = []
    for service in sorted(s for s, runs in accounts.items() if account in runs):
        others = sorted(set(accounts[service]) - {account})
        if others:
            raise refuse(target, "spec.destination.name", f"Service {service!r} also runs "
                         f"workloads as {', '.join(others)}: an AuthorizationPolicy covers "
                         f"all of a Service's workloads, so access to {account!r}'s alone "
                         "cannot be expressed")
        out.append(generated(target, MESH_API_VERSION, AuthorizationPolicy.KIND, service, {
            "targetRef": {"group": "", "kind": "Service", "name": service},
            "action": "ALLOW", "rules": rules}))
    return out

