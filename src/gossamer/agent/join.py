"""What a new host needs to join: the control plane's address, a join token, and
trust in the control plane (its CA bundle, or the bundle's fingerprint).

Theory of operation:
  trust:    with --ca-file, the bundle is read from the file. With
            --ca-fingerprint, it is fetched from the control plane's open
            endpoint (`GET /api/v1/ca/bundle`) WITHOUT verification and without
            any credential, and kept only if one of its certificates has the
            pinned SHA-256 fingerprint. From then on every connection to the
            control plane (API, CA, xDS) is verified against that bundle, so the
            join token only ever goes to a server whose certificate chains to
            the pinned CA. An impostor can serve the real (public) bundle, but not
            a certificate that chains to it.
  address:  the workload's address is the source address of this host's route
            to the control plane (a UDP connect sends nothing), so peers on
            other hosts reach the inbound listener where the control plane sees
            this host; 127.0.0.1 for a control plane on loopback.

Several control-plane URLs (replicas, comma-separated): the bundle is fetched from
the first that answers, and the address is the one towards the first URL.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from gossamer.ca import fingerprint
from gossamer.ca.trust import TrustError, read_bundle

BUNDLE_PATH = "/api/v1/ca/bundle"


class JoinError(Exception):
    """The agent cannot establish trust in (or find its way to) the control plane."""


async def trust_bundle(server: str, ca_file: Path | None, pin: str | None,
                       timeout: float) -> str | None:
    """The PEM bundle to verify the control plane with; None when neither is given
    (a plaintext API on loopback, and no TLS anywhere)."""
    if ca_file is not None and pin is not None:
        raise JoinError("give --ca-file or --ca-fingerprint, not both")
    if ca_file is not None:
        try:
            bundle = read_bundle(ca_file)
            fingerprint.certificates(bundle)
        except (TrustError, fingerprint.BadBundle) as exc:
            raise JoinError(f"--ca-file {ca_file}: {exc}") from exc
        return bundle
    if pin is not None:
        try:
            digest = fingerprint.parse(pin)
        except fingerprint.BadFingerprint as exc:
            raise JoinError(f"--ca-fingerprint: {exc}") from exc
        return await _pinned_from_any(server.split(","), digest, timeout)
    if server.startswith("https://"):
        raise JoinError(f"the control plane at {server} serves TLS: give --ca-file (its CA "
                        "bundle) or --ca-fingerprint (the SHA-256 `gossamer ca fingerprint` "
                        "prints)")
    return None


async def pinned_bundle(server: str, pin: bytes, timeout: float) -> str:
    """The control plane's bundle if it holds the pinned certificate. Retries while the
    control plane cannot be reached (it may be starting), for `timeout` seconds."""
    text = await _fetch_unverified(server.rstrip("/") + BUNDLE_PATH, timeout)
    try:
        matched = fingerprint.pinned(text, pin)
        offered = fingerprint.of_bundle(text)
    except fingerprint.BadBundle as exc:
        raise JoinError(f"the control plane at {server} sent no usable CA bundle: "
                        f"{exc}") from exc
    if not matched:
        raise JoinError(f"the control plane at {server} is not the pinned one: its CA bundle "
                        f"({', '.join(map(fingerprint.show, offered))}) does not hold "
                        f"--ca-fingerprint {fingerprint.show(pin)}")
    return text


async def _pinned_from_any(servers: list[str], pin: bytes, timeout: float) -> str:
    """From the first replica that answers; each is tried briefly in turn until
    `timeout`. A replica that answers with a bundle the pin refuses ends it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        for server in servers:
            try:
                return await pinned_bundle(server.strip(), pin, 0 if len(servers) > 1
                                           else timeout)
            except _Unreachable as exc:
                if loop.time() > deadline:
                    raise JoinError(str(exc)) from exc
        await asyncio.sleep(0.3)


class _Unreachable(JoinError):
    """No answer from this control plane within the time given."""


async def _fetch_unverified(url: str, timeout: float) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    # No verification, so nothing secret goes out: no token header, no cookies.
    async with httpx.AsyncClient(verify=False, trust_env=False, timeout=5.0) as http:
        while True:
            try:
                resp = await http.get(url)
            except httpx.HTTPError as exc:
                if loop.time() >= deadline:
                    raise _Unreachable(f"cannot fetch the CA bundle from {url}: {exc}") \
                        from exc
                await asyncio.sleep(0.3)
                continue
            if resp.status_code != 200:
                raise JoinError(f"cannot fetch the CA bundle from {url}: HTTP "
                                f"{resp.status_code}")
            return resp.text


def detect_address(server: str) -> str:
    """This host's address towards the control plane at `server` (a URL)."""
    parts = urlsplit(server.split(",")[0].strip())
    host = parts.hostname or "127.0.0.1"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        family, _, _, _, target = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        if ipaddress.ip_address(target[0]).is_loopback:
            return "127.0.0.1"
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(target)  # routes, sends nothing
            return str(probe.getsockname()[0])
    except (OSError, ValueError) as exc:
        raise JoinError(f"cannot find this host's address towards the control plane at "
                        f"{host}: {exc}; give --address") from exc


def join_token(token: str | None, token_file: Path | None) -> str | None:
    """--token-file (or $GOSSAMER_TOKEN_FILE), else --token, else $GOSSAMER_TOKEN: a
    file named for this agent wins over a token the shell may hold for the CLI."""
    if token_file is None:
        return token or os.environ.get("GOSSAMER_TOKEN") or None
    if token is not None:
        raise JoinError("give --token or --token-file, not both")
    try:
        text = token_file.read_text().strip()
    except OSError as exc:
        raise JoinError(f"cannot read --token-file {token_file}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise JoinError(f"--token-file {token_file} is not text") from exc
    if not text:
        raise JoinError(f"--token-file {token_file} is empty")
    return text


class TokenFile:
    """A token file read again whenever it changes: kubelet rotates a projected
    ServiceAccount token by swapping the volume's files, and the agent must present
    the new one on its next certificate request or API call (the old one expires).
    A read that fails or finds the file empty keeps the last good token, since the
    swap is atomic and a transient error should not cost the agent its identity."""

    def __init__(self, path: Path, first: str) -> None:
        self.path = path
        self._token = first
        self._seen = self._stamp()
        self.reads = 1

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()  # follows kubelet's ..data symlink to the new file
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def __call__(self) -> str:
        stamp = self._stamp()
        if stamp is not None and stamp != self._seen:
            try:
                text = self.path.read_text().strip()
            except (OSError, UnicodeDecodeError):
                text = ""
            if text:
                self._token, self._seen = text, stamp
                self.reads += 1
        return self._token
