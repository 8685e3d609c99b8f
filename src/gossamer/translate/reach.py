"""Reachability inferred from AuthorizationPolicies: the egress scope of a sidecar no
`Sidecar` covers, so that without writing one a workload holds only the Services its
identity could be let into (Kuma infers reachable services from its traffic
permissions the same way).

It must never exclude a Service a request could reach: a missing cluster breaks
traffic that RBAC would have let through. So it over-approximates: a Service is left
out only when EVERY workload behind it would refuse EVERY request from the caller's
identity (spiffe://<td>/ns/<ns>/sa/<account>):
- an ALLOW rule counts as admitting the caller whenever one of its `from` sources
  could match it (principals and namespaces compared without the trust domain;
  request principals, `to` and `when` are assumed to match);
- a DENY rule counts only when it surely matches: no `to`, no `when`, and a source
  that names the caller (or no `from` at all);
- a Service without workloads, and a workload no ALLOW covers, admit everyone.
Which policies cover a workload is as for its inbound RBAC (translate/policies.py):
the mesh root namespace's, its namespace's, and those targeting a Service that selects
it or that it runs as.

Off unless the Mesh asks for it (`spec.reachability: inferred`, `inferred_for`): a
caller outside its inferred scope gets a 404 from its own sidecar where it would get
the callee's 403, and is no longer counted at the callee, so a mesh opts in, as Kuma's
reachable-services inference is opt-in.

Computed once per mesh for the policies (workloads grouped by the policies that cover
them, indexed by the principals and namespaces they admit), then once per caller
identity, not per proxy: the proxies of one identity share a scope.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from gossamer.index import MeshIndex, SvcKey
from gossamer.model import AuthorizationPolicy
from gossamer.model.authorizationpolicy import Action, Rule, Source, principal_id
from gossamer.model.mesh import Reachability as MeshReachability
from gossamer.translate.policies import Covering

Caller = tuple[str, str]  # (namespace, service account)
# What admits a caller, indexed: a principal's "ns/<ns>/sa/<account>", a namespace,
# or neither (checked for every caller).
_Key = tuple[str, str] | None
ANY_SOURCE: Source | None = None  # an ALLOW rule without `from`


def inferred_for(index: MeshIndex) -> bool:
    """Whether sidecars no Sidecar covers are scoped by inference (the Mesh's choice)."""
    return index.mesh is not None and index.mesh.spec.reachability is MeshReachability.INFERRED


def _path(principal: str) -> str:
    """"ns/<ns>/sa/<account>" of a (non-`*`) principal, whatever its trust domain."""
    return principal_id(principal).split("/", 3)[3]


@dataclass(frozen=True)
class _Who:
    namespace: str
    path: str  # ns/<ns>/sa/<account>
    spiffe: str
    authenticated: bool  # mTLS on: the caller's identity is what RBAC sees

    def loosely(self, principal: str) -> bool:
        return principal == "*" or _path(principal) == self.path

    def exactly(self, principal: str) -> bool:
        return self.authenticated and (principal == "*" or principal_id(principal) == self.spiffe)

    def in_namespace(self, pattern: str) -> bool:
        return pattern in ("*", self.namespace)


def could_match(src: Source, who: _Who) -> bool:
    """An ALLOW source that a request from `who` could match (false only when it surely
    cannot: it names other principals or namespaces, or excludes this one exactly)."""
    if src.principals and not any(who.loosely(p) for p in src.principals):
        return False
    if any(who.exactly(p) for p in src.not_principals):
        return False
    if src.namespaces and not any(who.in_namespace(n) for n in src.namespaces):
        return False
    return not (who.authenticated and any(who.in_namespace(n) for n in src.not_namespaces))


def surely_matches(src: Source, who: _Who) -> bool:
    """A DENY source that every request from `who` matches."""
    if src.request_principals or src.not_request_principals:
        return False
    if src.principals and not any(who.exactly(p) for p in src.principals):
        return False
    if any(who.loosely(p) for p in src.not_principals):
        return False
    if src.namespaces and not (who.authenticated
                               and any(who.in_namespace(n) for n in src.namespaces)):
        return False
    return not any(who.in_namespace(n) for n in src.not_namespaces)


def _everyone(src: Source) -> bool:
    """A source every mesh caller may match (`*` principals or namespaces, no `not`)."""
    return not (src.not_principals or src.not_namespaces or src.not_request_principals) \
        and (not src.principals or "*" in src.principals) \
        and (not src.namespaces or "*" in src.namespaces)


def _deny_sources(rule: Rule) -> list[Source | None]:
    """The sources of a DENY rule that can deny every request: none if it has a `to`
    or a `when` (it may spare some requests)."""
    if rule.to or rule.when:
        return []
    return [f.source for f in rule.from_] if rule.from_ else [ANY_SOURCE]


@dataclass(frozen=True, eq=False)  # by identity: one per set of covering policies
class Gate:
    """What the policies covering a group of workloads admit. `allow` is None when no
    ALLOW policy covers them (everyone not surely denied gets in)."""

    allow: tuple[Source | None, ...] | None
    deny: tuple[Source | None, ...]

    @property
    def open(self) -> bool:
        """Admits every caller: nothing surely denies, and no ALLOW or one for all."""
        return not self.deny and (self.allow is None or any(
            src is None or _everyone(src) for src in self.allow))

    def admits(self, who: _Who) -> bool:
        if any(src is None or surely_matches(src, who) for src in self.deny):
            return False
        return self.allow is None or any(src is None or could_match(src, who)
                                         for src in self.allow)

    def index_keys(self) -> set[_Key]:
        """Where a caller it may admit finds it: every source's principals, else its
        namespaces, else nowhere in particular (None)."""
        if self.allow is None:
            return {None}
        out: set[_Key] = set()
        for src in self.allow:
            if src is not None and src.principals and "*" not in src.principals:
                out.update(("p", _path(p)) for p in src.principals)
            elif src is not None and src.namespaces and "*" not in src.namespaces:
                out.update(("n", n) for n in src.namespaces)
            else:
                out.add(None)
        return out


def gate_of(policies: Sequence[AuthorizationPolicy]) -> Gate:
    allows = [p for p in policies if p.spec.action is Action.ALLOW]
    allow = None if not allows else tuple(
        src for p in allows for rule in p.spec.rules
        for src in ([f.source for f in rule.from_] if rule.from_ else [ANY_SOURCE]))
    deny = tuple(src for p in policies if p.spec.action is Action.DENY
                 for rule in p.spec.rules for src in _deny_sources(rule))
    return Gate(allow, deny)


class Reachability:
    """The inferred scope of each caller identity (`scope`); built once per mesh from
    the index's Services, Workloads, their selection and the AuthorizationPolicies."""

    def __init__(self, index: MeshIndex, trust_domain: str, mtls: bool = True) -> None:
        self._trust_domain, self._mtls = trust_domain, mtls
        self.settings = (trust_domain, mtls)
        self.inputs = self.inputs_of(index)
        self._services = len(index.services)
        self._scopes: dict[Caller, frozenset[SvcKey] | None] = {}
        covering = Covering(index.authorization_policies)
        gates: dict[tuple[int, ...], Gate] = {}
        behind: dict[SvcKey, set[Gate]] = defaultdict(set)
        for w in index.workloads:
            ns = w.metadata.namespace
            selecting = index.workload_services.get((ns, w.metadata.name), ())
            policies = covering.of(ns, (*selecting, (ns, w.spec.service)))
            slot = tuple(id(p) for p in policies)
            gate = gates.get(slot)
            if gate is None:
                gate = gates[slot] = gate_of(policies)
            for key in selecting:
                behind[key].add(gate)
        # Services a caller reaches whoever it is: no workloads, or one no policy guards.
        self._always = frozenset(key for key in index.services
                                 if not behind.get(key) or any(g.open for g in behind[key]))
        self.restricted = len(self._always) < self._services
        self._by_key: dict[_Key, set[Gate]] = defaultdict(set)
        self._guarded: dict[Gate, list[SvcKey]] = defaultdict(list)
        for key, guards in behind.items():
            if key in self._always or key not in index.services:
                continue
            for gate in guards:
                self._guarded[gate].append(key)
        for gate in self._guarded:
            for k in gate.index_keys():
                self._by_key[k].add(gate)

    @staticmethod
    def inputs_of(index: MeshIndex) -> tuple[object, ...]:
        """What it reads: equal inputs (the same policy objects, mostly an identity
        check), the same scopes. Not the workloads' health, which every heartbeat
        changes."""
        return (index.authorization_policies, tuple(index.services),
                index.workload_services, tuple((w.metadata.namespace, w.metadata.name,
                                                w.spec.service) for w in index.workloads))

    def scope(self, namespace: str, account: str) -> frozenset[SvcKey] | None:
        """The Services a caller of this identity could be let into; None for all."""
        if not self.restricted:
            return None
        caller = (namespace, account)
        if caller not in self._scopes:
            self._scopes[caller] = self._compute(namespace, account)
        return self._scopes[caller]

    def _compute(self, namespace: str, account: str) -> frozenset[SvcKey] | None:
        path = f"ns/{namespace}/sa/{account}"
        who = _Who(namespace, path, f"spiffe://{self._trust_domain}/{path}", self._mtls)
        candidates = (self._by_key.get(("p", path), set())
                      | self._by_key.get(("n", namespace), set())
                      | self._by_key.get(None, set()))
        found = set(self._always)
        for gate in candidates:
            if gate.admits(who):
                found.update(self._guarded[gate])
        return None if len(found) == self._services else frozenset(found)
