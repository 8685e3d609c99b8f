"""A projected ServiceAccount token rotated by kubelet is what the agent presents
next: a control plane in Kubernetes mode (TokenReview through the API emulator,
tests/k8s_emulator.py), the agent's certificate client reading its token file as
`gossamer proxy --token-file` does, the file swapped as kubelet swaps a projected
volume (a new `..data` directory behind a symlink), a renewal forced."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gossamer.agent.certs import WorkloadIdentity
from gossamer.agent.join import TokenFile, join_token
from gossamer.contract.spiffe import SpiffeId
from gossamer.controlplane.server import ControlPlane, ControlPlaneOptions
from tests.k8s_emulator import KubeEmulator

pytestmark = pytest.mark.slow
USER = "system:serviceaccount:shop:web"
FIRST, SECOND = "hdr.first-token.sig", "hdr.second-token.sig"


def project(volume: Path, token: str, generation: int) -> Path:
    """Write `token` as kubelet writes a projected volume: files in a new
    `..<timestamp>` directory, `..data` swapped to it atomically, `token` a link
    through `..data`. Returns the path the agent is given."""
    data = volume / f"..2026_{generation}"
    data.mkdir()
    (data / "token").write_text(token)
    tmp = volume / "..data_tmp"
    tmp.symlink_to(data.name)
    tmp.replace(volume / "..data")
    link = volume / "token"
    if not link.is_symlink():
        link.symlink_to("..data/token")
    return link


@pytest.fixture
async def emulator() -> AsyncIterator[KubeEmulator]:
    emu = KubeEmulator()
    await emu.start()
    try:
        emu.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
        yield emu
    finally:
        await emu.stop()


async def test_a_rotated_token_is_the_one_presented_at_the_next_renewal(
        emulator: KubeEmulator, tmp_path: Path) -> None:
    plane = ControlPlane(ControlPlaneOptions(
        state_dir=None, xds_port=0, api_port=0, debounce=0.01, secure=True, kubernetes=True,
        kubeconfig=emulator.kubeconfig(tmp_path / "kubeconfig")))
    await plane.start()
    identity: WorkloadIdentity | None = None
    try:
        emulator.tokens[FIRST] = (USER, ["gossamer"])
        volume = tmp_path / "gossamer-token"
        volume.mkdir()
        path = project(volume, FIRST, 1)
        first = join_token(None, path)
        assert first == FIRST
        token = TokenFile(path, first)
        spiffe = SpiffeId(plane.options.trust_domain, "shop", "web")
        identity = WorkloadIdentity(spiffe, f"127.0.0.1:{plane.xds_port}",
                                    plane.ca.bundle_pem(), token, bundle_poll=None)
        await identity.start(wait=20)
        assert emulator.reviewed == [FIRST]

        # kubelet rotates the token; the old one expires (the API server no longer
        # vouches for it).
        emulator.tokens[SECOND] = (USER, ["gossamer"])
        project(volume, SECOND, 2)
        del emulator.tokens[FIRST]
        info = await asyncio.wait_for(identity.renew(), 20)
        assert info.spiffe_id == str(spiffe)
        assert emulator.reviewed == [FIRST, SECOND]
        assert token.reads == 2

        # A swap that leaves the file unreadable keeps the last good token.
        os.unlink(volume / "..data")
        assert token() == SECOND
    finally:
        if identity is not None:
            await identity.close()
        await plane.stop()
