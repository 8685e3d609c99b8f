"""One proxy's inbound security: its mTLS mode, the filters its policies make, and
the JWKS clusters those filters fetch keys through.

It depends only on the proxy's namespace, the services covering it, its ports and
protocol (`InboundKey`), so replicas of a service share one result (see
`MeshConfig.inbound_security`).
"""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3.cluster_pb2 import Cluster

from gossamer.contract.protocol import Protocol
from gossamer.index import MeshIndex, SvcKey
from gossamer.model.authorizationpolicy import Action
from gossamer.translate.jwt import jwks_cluster, jwks_uris, jwt_filter
from gossamer.translate.listeners import InboundSecurity
from gossamer.translate.policies import PolicyIndex, ProxyPolicies, proxy_policies
from gossamer.translate.rbac import RuleContext, http_rbac_filter, network_rbac_filter
from gossamer.translate.settings import MeshSettings

# namespace, covering services, app port, inbound port, protocol
InboundKey = tuple[str, frozenset[SvcKey], int, int, Protocol]


def _filters(pols: ProxyPolicies, ctx: RuleContext) -> tuple[dict[str, Any], ...]:
    """In the order Envoy must run them: jwt_authn, then DENY, then ALLOW."""
    made: tuple[dict[str, Any] | None, ...]
    if ctx.tcp:
        made = (network_rbac_filter(pols.deny, Action.DENY, ctx),
                network_rbac_filter(pols.allow, Action.ALLOW, ctx))
    else:
        made = (jwt_filter(pols.jwt), http_rbac_filter(pols.deny, Action.DENY, ctx),
                http_rbac_filter(pols.allow, Action.ALLOW, ctx))
    return tuple(f for f in made if f is not None)


def inbound_security(index: MeshIndex, settings: MeshSettings, key: InboundKey,
                     found: PolicyIndex | None = None) -> tuple[InboundSecurity, list[Cluster]]:
    namespace, services, app_port, inbound_port, protocol = key
    pols = proxy_policies(index, namespace, services, found)
    tcp = protocol is Protocol.TCP
    filters = _filters(pols, RuleContext(settings.trust_domain, app_port, inbound_port, tcp))
    security = InboundSecurity(mtls=pols.mode if settings.mtls else None,
                               http_filters=() if tcp else filters,
                               network_filters=filters if tcp else ())
    jwks = [] if tcp else [jwks_cluster(uri, settings.jwks_ca_file)
                           for uri in jwks_uris(pols.jwt)]
    return security, jwks
