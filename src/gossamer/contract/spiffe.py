"""Workload identity: SPIFFE IDs, `spiffe://<trust-domain>/ns/<namespace>/sa/<account>`.

The account defaults to the service name. The CA signs them, the agent asks for
them, translation names them in mTLS SAN checks and authorization policies read
them. Envoy gets its certificate and the trust bundle over SDS from its own agent
(the private key never leaves the workload), as the secrets `names.CERT_SECRET`
and `names.ROOT_SECRET`, through the static cluster `names.SDS_CLUSTER`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_TRUST_DOMAIN = "gossamer.local"
# The control plane's own SPIFFE identity: the client certificate it reaches sidecars'
# admin listeners with (`gossamer_admin`, proxyadmin/). Reserved: the CA signs it for
# no CSR and no join token grants it.
CONTROL_PLANE_NAMESPACE = "gossamer-system"
CONTROL_PLANE_ACCOUNT = "control-plane"

_TRUST_DOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?\Z")
_SPIFFE = re.compile(r"^spiffe://([^/]+)/ns/([^/]+)/sa/([^/]+)\Z")


class BadSpiffeId(ValueError):
    pass


@dataclass(frozen=True, order=True)
class SpiffeId:
    trust_domain: str
    namespace: str
    account: str

    def __str__(self) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.account}"

    @classmethod
    def parse(cls, text: str) -> SpiffeId:
        m = _SPIFFE.match(text)
        if not m:
            raise BadSpiffeId(f"{text!r} is not spiffe://<trust-domain>/ns/<ns>/sa/<account>")
        return cls(m.group(1), m.group(2), m.group(3))


def control_plane_id(trust_domain: str) -> SpiffeId:
    return SpiffeId(trust_domain, CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_ACCOUNT)


def check_trust_domain(value: str) -> str:
    if not _TRUST_DOMAIN.match(value) or len(value) > 255:
        raise ValueError(f"{value!r} is not a trust domain (lowercase DNS-like name)")
    return value
