"""Rotation decisions, pure: when to renew a certificate, and the root rotation
state machine.

Theory of operation (root rotation)
-----------------------------------
A workload accepts a peer's certificate only if it chains to a root in the
workload's trust bundle. Replacing root A by root B in one step would break
every connection between a workload that already holds a B-signed
certificate and one whose bundle still says [A] (and the reverse). So the
rotation moves in three steps, each of which keeps every pair of
(certificate, bundle) that can meet in the mesh verifying:

    STABLE        bundle=[A]    signer=A
      | begin(B)
    DISTRIBUTING  bundle=[A,B]  signer=A   new bundle reaches every workload;
      | switch                             certificates are still A-signed,
    SWITCHED      bundle=[A,B]  signer=B   new certificates are B-signed; old
      | finish                             A-signed ones still verify against
    STABLE        bundle=[B]    signer=B   [A,B] until they are renewed.

- Wait after `begin` until every workload has fetched the two-root bundle
  (compare the bundle_version agents report, or wait at least the agents'
  bundle refresh interval) before `switch`: from `switch` on, a peer may
  present a B-signed certificate, which a workload holding only [A] rejects.
- Wait after `switch` until every A-signed certificate has been renewed or
  has expired (at most the maximum workload certificate lifetime, since
  agents renew at half-life) before `finish`: after it, bundles say [B] only.
- The control plane's own serving certificate follows the signer, so agents
  that trust [A,B] keep reaching it across `switch`.

No step fails a request: signing always has exactly one signer, and every
state's bundle contains the root of every certificate still in use.

States are immutable `RootState` values and the transitions are functions
returning new states, so the store-backed edge (`authority.MeshCA`) can
compute the next state, persist it with optimistic concurrency, and only then
adopt it. An invalid transition raises CaError.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from cryptography import x509

from gossamer.ca.errors import CaError
from gossamer.ca.pki import CaKeyPair, certs_pem


class Phase(StrEnum):
    """Where a root rotation stands; `str(phase)` is its name."""

    STABLE = "STABLE"
    DISTRIBUTING = "DISTRIBUTING"
    SWITCHED = "SWITCHED"


# (number of roots, signer index) each phase allows.
_SHAPE = {
    Phase.STABLE: (1, 0),
    Phase.DISTRIBUTING: (2, 0),
    Phase.SWITCHED: (2, 1),
}


@dataclass(frozen=True)
class RootState:
    """The CAs the mesh trusts now, which one signs, and the rotation phase.

    During a rotation `roots` is (old, new). A state that breaks the phase's
    shape (e.g. read from a corrupted store body) is refused at construction.
    """

    roots: tuple[CaKeyPair, ...]
    signer_index: int = 0
    phase: Phase = Phase.STABLE

    def __post_init__(self) -> None:
        count, signer = _SHAPE[self.phase]
        if len(self.roots) != count or self.signer_index != signer:
            raise CaError(f"invalid CA state: phase {self.phase} needs {count} root(s) with "
                          f"signer {signer}, got {len(self.roots)} with signer "
                          f"{self.signer_index}")

    @property
    def signer(self) -> CaKeyPair:
        return self.roots[self.signer_index]

    def bundle_pem(self) -> str:
        """The root certificates of every CA in this state (once each, in order)."""
        roots: list[x509.Certificate] = []
        for ca in self.roots:
            # Two plug-in CAs under one organisation root share it.
            if ca.root not in roots:
                roots.append(ca.root)
        return certs_pem(roots)


def initial(ca: CaKeyPair) -> RootState:
    """The state of a CA that is not rotating."""
    return RootState((ca,), 0, Phase.STABLE)


def begin(state: RootState, new: CaKeyPair) -> RootState:
    """STABLE [A] -> DISTRIBUTING [A, B]: trust B everywhere, still sign with A."""
    if state.phase is not Phase.STABLE:
        raise CaError(f"cannot begin a root rotation in phase {state.phase}; "
                      "finish the current one first")
    if new == state.signer:
        raise CaError("the new CA is the current one; nothing to rotate")
    return RootState((state.signer, new), 0, Phase.DISTRIBUTING)


def switch(state: RootState) -> RootState:
    """DISTRIBUTING -> SWITCHED: sign with B; both roots stay trusted."""
    if state.phase is not Phase.DISTRIBUTING:
        raise CaError(f"cannot switch the signer in phase {state.phase}; "
                      "begin a rotation first")
    return RootState(state.roots, 1, Phase.SWITCHED)


def finish(state: RootState) -> RootState:
    """SWITCHED [A, B] -> STABLE [B]: stop trusting A."""
    if state.phase is not Phase.SWITCHED:
        raise CaError(f"cannot finish a root rotation in phase {state.phase}; "
                      "switch the signer first")
    return RootState((state.roots[1],), 0, Phase.STABLE)


# --- certificate renewal -------------------------------------------------------------


def renew_at(not_before: datetime, not_after: datetime, fraction: float = 0.5) -> datetime:
    """When a certificate should be renewed: after `fraction` of its life, so a
    renewal that fails has the rest of the life to be retried."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError("fraction must be in (0, 1]")
    if not_after < not_before:
        raise ValueError("not_after is before not_before")
    return not_before + (not_after - not_before) * fraction


def should_renew(
    not_before: datetime, not_after: datetime, now: datetime, fraction: float = 0.5
) -> bool:
    return now >= renew_at(not_before, not_after, fraction)
