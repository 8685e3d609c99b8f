"""Which security policies cover one proxy, and which PeerAuthentication mode wins.

A proxy is covered by the policies of the mesh root namespace without a
targetRef, of its own namespace without a targetRef, and of every Service
that selects its workload (or that it runs as). Authorization and request
authentication policies of all those scopes apply together; for
PeerAuthentication the most specific scope wins (service > namespace > mesh),
and STRICT when nothing applies: zero trust by default.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

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


def peer_mode(index: MeshIndex, namespace: str, services: frozenset[SvcKey]) -> MtlsMode:
    peers = _covering(_first_per_scope(index.peer_authentications), namespace, services)
    for scope in (Scope.SERVICE, Scope.NAMESPACE, Scope.MESH):
        modes = {p.spec.mtls.mode for p in peers if policy_scope(p) is scope}
        if modes:
            # A workload selected by several Services: the strictest of theirs.
            return MtlsMode.STRICT if MtlsMode.STRICT in modes else MtlsMode.PERMISSIVE
    return DEFAULT_MODE


def proxy_policies(index: MeshIndex, namespace: str,
                   services: frozenset[SvcKey]) -> ProxyPolicies:
    authz = _covering(index.authorization_policies, namespace, services)
    return ProxyPolicies(
        mode=peer_mode(index, namespace, services),
        allow=tuple(p for p in authz if p.spec.action is Action.ALLOW),
        deny=tuple(p for p in authz if p.spec.action is Action.DENY),
        jwt=tuple(_covering(index.request_authentications, namespace, services)),
    )
