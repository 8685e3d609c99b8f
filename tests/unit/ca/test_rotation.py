"""Root rotation state machine and renewal timing (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from gossamer.ca import pki, rotation
from gossamer.ca.errors import CaError
from gossamer.ca.pki import CaKeyPair
from gossamer.ca.rotation import Phase, RootState
from gossamer.contract.spiffe import SpiffeId

NOW = datetime(2030, 5, 1, 12, 0, 0, tzinfo=UTC)
TD = "example.org"
WEB = SpiffeId(TD, "default", "web")


@pytest.fixture(scope="module")
def roots() -> tuple[CaKeyPair, CaKeyPair]:
    return pki.generate_root(TD, NOW), pki.generate_root(TD, NOW)


def bundle(state: RootState) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(state.bundle_pem().encode())


def test_full_rotation_moves_bundle_before_signer(roots: tuple[CaKeyPair, CaKeyPair]) -> None:
    a, b = roots
    stable = rotation.initial(a)
    assert (stable.phase, stable.signer, bundle(stable)) == (Phase.STABLE, a, [a.cert])

    distributing = rotation.begin(stable, b)
    assert distributing.phase is Phase.DISTRIBUTING
    assert distributing.signer == a
    assert bundle(distributing) == [a.cert, b.cert]

    switched = rotation.switch(distributing)
    assert switched.phase is Phase.SWITCHED
    assert switched.signer == b
    assert bundle(switched) == [a.cert, b.cert]

    done = rotation.finish(switched)
    assert (done.phase, done.signer, bundle(done)) == (Phase.STABLE, b, [b.cert])
    # States are values: the old ones are untouched.
    assert stable.phase is Phase.STABLE
    assert str(Phase.DISTRIBUTING) == "DISTRIBUTING"


def test_invalid_transitions_raise(roots: tuple[CaKeyPair, CaKeyPair]) -> None:
    a, b = roots
    stable = rotation.initial(a)
    distributing = rotation.begin(stable, b)
    switched = rotation.switch(distributing)
    with pytest.raises(CaError, match="cannot switch the signer in phase STABLE"):
        rotation.switch(stable)
    with pytest.raises(CaError, match="cannot finish a root rotation in phase STABLE"):
        rotation.finish(stable)
    with pytest.raises(CaError, match="cannot finish a root rotation in phase DISTRIBUTING"):
        rotation.finish(distributing)
    with pytest.raises(CaError, match="cannot begin a root rotation in phase DISTRIBUTING"):
        rotation.begin(distributing, b)
    with pytest.raises(CaError, match="cannot begin a root rotation in phase SWITCHED"):
        rotation.begin(switched, a)
    with pytest.raises(CaError, match="cannot switch the signer in phase SWITCHED"):
        rotation.switch(switched)
    with pytest.raises(CaError, match="nothing to rotate"):
        rotation.begin(stable, a)


@pytest.mark.parametrize(("count", "signer", "phase"), [
    (2, 0, Phase.STABLE), (1, 1, Phase.STABLE), (1, 0, Phase.DISTRIBUTING),
    (2, 1, Phase.DISTRIBUTING), (2, 0, Phase.SWITCHED), (0, 0, Phase.STABLE),
])
def test_states_of_the_wrong_shape_are_refused(
        roots: tuple[CaKeyPair, CaKeyPair], count: int, signer: int, phase: Phase) -> None:
    with pytest.raises(CaError, match="invalid CA state"):
        RootState((roots * 2)[:count], signer, phase)


def test_no_certificate_in_use_stops_verifying_across_the_rotation(
        roots: tuple[CaKeyPair, CaKeyPair]) -> None:
    """Each step: every certificate issued in the previous or the current state
    verifies against the bundle of the previous and of the current state (the
    pairs that can meet while the step propagates). Only after `finish` do
    A-signed certificates stop verifying, which is what the wait before it is for."""
    a, b = roots
    csr = pki.make_csr(pki.generate_workload_key(), WEB)
    states = [rotation.initial(a)]
    states.append(rotation.begin(states[-1], b))
    states.append(rotation.switch(states[-1]))
    states.append(rotation.finish(states[-1]))
    leaves = [pki.sign_workload_csr(s.signer, csr, WEB, NOW, timedelta(hours=1),
                                    timedelta(hours=1)).cert for s in states]

    def verifies(leaf: x509.Certificate, state: RootState) -> bool:
        verifier = PolicyBuilder().store(Store(bundle(state))).time(NOW).build_client_verifier()
        try:
            verifier.verify(leaf, [])
        except VerificationError:
            return False
        return True

    for step in range(1, len(states)):
        before, after = states[step - 1], states[step]
        if after.phase is Phase.STABLE:
            continue  # finish: A-signed leaves must be gone by now
        for leaf in leaves[step - 1: step + 1]:
            assert verifies(leaf, before)
            assert verifies(leaf, after)
    assert verifies(leaves[2], states[3])  # B-signed leaf after finish
    assert not verifies(leaves[0], states[3])  # A-signed leaf after finish


def test_bundle_lists_a_shared_root_once() -> None:
    org_root = pki.generate_root("org.example", NOW)
    # Two CAs whose chains end at the same root (as plug-in intermediates under
    # one org root do); the shape is all the bundle looks at.
    one = CaKeyPair(org_root.cert, org_root.key, ())
    two = pki.generate_root(TD, NOW)
    fake_two = CaKeyPair(two.cert, two.key, (org_root.cert,))
    state = RootState((one, fake_two), 0, Phase.DISTRIBUTING)
    assert bundle(state) == [org_root.cert]


def test_renew_at_half_life_by_default() -> None:
    start, end = NOW, NOW + timedelta(hours=24)
    assert rotation.renew_at(start, end) == NOW + timedelta(hours=12)
    assert rotation.renew_at(start, end, 0.75) == NOW + timedelta(hours=18)
    assert rotation.renew_at(start, end, 1.0) == end
    assert not rotation.should_renew(start, end, NOW + timedelta(hours=11, minutes=59))
    assert rotation.should_renew(start, end, NOW + timedelta(hours=12))
    assert rotation.should_renew(start, end, end + timedelta(days=1))
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            rotation.renew_at(start, end, bad)
    with pytest.raises(ValueError, match="before"):
        rotation.renew_at(end, start)
