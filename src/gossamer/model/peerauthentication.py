"""PeerAuthentication: whether a workload's sidecar accepts plaintext besides mTLS.

Zero trust by default: where no PeerAuthentication applies, the mode is STRICT.
PERMISSIVE exists for migrations (callers without a sidecar yet).
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

from gossamer.model.meta import Resource, Strict
from gossamer.model.policy import TargetedSpec


class MtlsMode(str, Enum):
    STRICT = "STRICT"
    PERMISSIVE = "PERMISSIVE"


class PeerMtls(Strict):
    mode: MtlsMode


class PeerAuthenticationSpec(TargetedSpec):
    mtls: PeerMtls


class PeerAuthentication(Resource):
    KIND = "PeerAuthentication"
    kind: Literal["PeerAuthentication"] = "PeerAuthentication"
    spec: PeerAuthenticationSpec
