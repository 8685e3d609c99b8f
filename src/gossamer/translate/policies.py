"""Which security policies cover one proxy, and which PeerAuthentication mode wins.

A proxy is covered by the policies of the mesh root namespace without a
targetRef, of its own namespace without a targetRef, and of every Service
that selects its workload (or that it runs as). Authorization and request
authentication policies of all those scopes apply together; for
PeerAuthentication the most specific scope wins (service > namespace > mesh),
and STRICT when nothing applies: zero trust by default.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from gossamer.index import MeshIndex, Policy, SvcKey
from gossamer.model import AuthorizationPolicy, PeerAuthentication, RequestAuthentication
from gossamer.model.authorizationpolicy import Action
from gossamer.model.peerauthentication import MtlsMode
from gossamer.model.policy import Scope, policy_scope, target_name

P = TypeVar("P", bound=Policy)
DEFAULT_MODE = MtlsMode.STRICT


@dataclass(frozen=True)
class ProxyPolicies:
    mode: MtlsMode
    allow: tuple[AuthorizationPolicy, ...]
    deny: tuple[AuthorizationPolicy, ...]
    jwt: tuple[RequestAuthentication, ...]


def covers(policy: Policy, namespace: str, services: frozenset[SvcKey]) -> bool:
    scope = policy_scope(policy)
    if scope is Scope.MESH:
        return True
    if scope is Scope.NAMESPACE:
        return policy.metadata.namespace == namespace
    return (policy.metadata.namespace, target_name(policy)) in services


def _covering(policies: Iterable[P], namespace: str, services: frozenset[SvcKey]) -> list[P]:
    return [p for p in policies if covers(p, namespace, services)]


class Covering(Generic[P]):
    """Policies by where they apply: a proxy's are found (in the index's order, as
    `covers` would) without a pass over every policy of the mesh, which with a policy
    per Service was most of each proxy's translation."""

    def __init__(self, policies: Sequence[P]) -> None:
        self._mesh: list[tuple[int, P]] = []
        self._namespace: dict[str, list[tuple[int, P]]] = defaultdict(list)
        self._service: dict[SvcKey, list[tuple[int, P]]] = defaultdict(list)
        for i, p in enumerate(policies):
            scope = policy_scope(p)
            if scope is Scope.MESH:
                self._mesh.append((i, p))
            elif scope is Scope.NAMESPACE:
                self._namespace[p.metadata.namespace].append((i, p))
            elif (name := target_name(p)) is not None:
                self._service[(p.metadata.namespace, name)].append((i, p))

    def of(self, namespace: str, services: Iterable[SvcKey]) -> list[P]:
        found = dict(self._mesh)
        found.update(self._namespace.get(namespace, ()))
        for key in services:
            found.update(self._service.get(key, ()))
        return [found[i] for i in sorted(found)]


@dataclass(frozen=True)
class PolicyIndex:
    """The mesh's policies as `Covering`s, built once per mesh (MeshConfig)."""

    authz: Covering[AuthorizationPolicy]
    peers: Covering[PeerAuthentication]
    jwt: Covering[RequestAuthentication]


def policy_index(index: MeshIndex) -> PolicyIndex:
    return PolicyIndex(Covering(index.authorization_policies),
                       Covering(_first_per_scope(index.peer_authentications)),
                       Covering(index.request_authentications))


def _first_per_scope(policies: Iterable[PeerAuthentication]) -> list[PeerAuthentication]:
    """The index reports the others as Conflicted; they take no effect."""
    seen: set[tuple[str, str | None]] = set()
    out = []
    for p in policies:  # in (namespace, name) order
        slot = (p.metadata.namespace, target_name(p))
        if slot not in seen:
            seen.add(slot)
            out.append(p)
    return out


def peer_mode(index: MeshIndex, namespace: str, services: frozenset[SvcKey],
              found: PolicyIndex | None = None) -> MtlsMode:
    peers = _covering(_first_per_scope(index.peer_authentications), namespace, services) \
        if found is None else found.peers.of(namespace, services)
    for scope in (Scope.SERVICE, Scope.NAMESPACE, Scope.MESH):
        modes = {p.spec.mtls.mode for p in peers if policy_scope(p) is scope}
        if modes:
            # A workload selected by several Services: the strictest of theirs.
            return MtlsMode.STRICT if MtlsMode.STRICT in modes else MtlsMode.PERMISSIVE
    return DEFAULT_MODE


def proxy_policies(index: MeshIndex, namespace: str, services: frozenset[SvcKey],
                   found: PolicyIndex | None = None) -> ProxyPolicies:
    """`found`: the mesh's `policy_index`, when there is one to reuse."""
    found = found or policy_index(index)
    authz = found.authz.of(namespace, services)
    return ProxyPolicies(
        mode=peer_mode(index, namespace, services, found),
        allow=tuple(p for p in authz if p.spec.action is Action.ALLOW),
        deny=tuple(p for p in authz if p.spec.action is Action.DENY),
        jwt=tuple(found.jwt.of(namespace, services)),
    )
