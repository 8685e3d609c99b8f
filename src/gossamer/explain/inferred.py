"""A 404 from the caller's own sidecar for a Service outside the egress scope inferred
from AuthorizationPolicies (translate/reach.py): which identity no policy admits."""

from __future__ import annotations

from gossamer.contract.node import NodeMetadata
from gossamer.contract.spiffe import DEFAULT_TRUST_DOMAIN
from gossamer.explain.finding import Finding, svc_text
from gossamer.explain.records import LoggedRequest
from gossamer.index import MeshIndex, SvcKey
from gossamer.translate.reach import Reachability, inferred_for


def not_inferred(svc: SvcKey, index: MeshIndex, out: LoggedRequest,
                 proxy: NodeMetadata | None) -> Finding | None:
    """None unless the Mesh infers scopes and `svc` is outside the caller's."""
    if not inferred_for(index):
        return None
    ns = out.reporter.namespace
    account = proxy.account if proxy is not None else next((
        w.account for w in index.workloads
        if (w.metadata.namespace, w.metadata.name) == (ns, out.reporter.workload)), None)
    scope = None if account is None else Reachability(index, DEFAULT_TRUST_DOMAIN).scope(
        ns, account)
    if scope is None or svc in scope:
        return None
    who = f"{DEFAULT_TRUST_DOMAIN}/ns/{ns}/sa/{account}"
    return Finding(f"the caller's sidecar ({out.reporter.workload})",
                   f"{svc_text(svc)} is outside the caller's egress scope inferred from "
                   f"AuthorizationPolicies: none covering its workloads could admit {who}, "
                   "so the sidecar holds no route to it and answered 404", None,
                   (f"apply an ALLOW AuthorizationPolicy on {svc[0]}/{svc[1]} for {who}",
                    "or a Sidecar whose egress hosts name the Service"))
