"""The workload's identity: a key made here, a certificate signed by the control plane.

Why this shape: the private key never leaves the workload. The agent makes an
ECDSA P-256 key in memory (never on disk), sends only a CSR whose one SAN is
the workload's SPIFFE ID to the control plane's CA (`gossamer.ca.api`: JSON
over gRPC on the control plane's TLS port, bearer join token), and hands
certificate, key and trust bundle to its Envoy through its own SDS server
(`agent/sds.py`). Workload certificates are short-lived (24 h by default,
down to minutes), so renewal is routine, must not depend on restarts, and
must never leave Envoy without a valid certificate.

The agent is independent of `gossamer.ca.pki`: it makes keys and CSRs with
`cryptography` directly, and speaks only the wire contract of `ca.api`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

import grpc
import grpc.aio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from pydantic import BaseModel, ValidationError

from gossamer.ca.api import (
    CREATE_CERTIFICATE,
    GET_TRUST_BUNDLE,
    CertificateRequest,
    CertificateResponse,
    TrustBundleRequest,
    TrustBundleResponse,
)
from gossamer.ca.pki import issued_by
from gossamer.contract.names import CONTROL_PLANE_NAME
from gossamer.contract.spiffe import SpiffeId

__all__ = ["CertInfo", "IdentityError", "SecretSink", "WorkloadIdentity", "make_key_and_csr"]

log = logging.getLogger(__name__)

_M = TypeVar("_M", bound=BaseModel)

# Failures worth retrying while the agent starts: the control plane may still
# be coming up. Anything else (a refused token, a TLS trust mismatch) is a
# configuration error that waiting will not fix.
_TRANSIENT: Final = frozenset({
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED,
    grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED,
})
# How grpc's TLS stack says the peer's certificate was not acceptable.
_TLS_FAILURE_HINTS: Final = ("certificate_verify_failed", "certificate verify failed",
                             "handshake failed", "hostname verification",
                             "verification check failed", "peer name", "ssl_error")


class IdentityError(Exception):
    """The workload could not get (or keep) its certificate.

    `code` is the gRPC status when the control plane (or the TLS handshake
    with it) said no, None when the answer itself was unusable. The gRPC
    error is chained as `__cause__`.
    """

    def __init__(self, message: str, code: grpc.StatusCode | None = None, *,
                 tls: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.tls = tls

    @property
    def transient(self) -> bool:
        """Worth retrying soon (the control plane may be starting or overloaded)."""
        return self.code in _TRANSIENT and not self.tls


class SecretSink(Protocol):
    """Where certificates go: `SdsServer`, or anything with the same `update`."""

    def update(self, cert_chain_pem: str | bytes, key_pem: str | bytes,
               bundle_pem: str | bytes) -> None: ...


@dataclass(frozen=True)
class CertInfo:
    """What the operator wants to see about the current certificate (`gossamer identity`)."""

    spiffe_id: str
    serial: str          # hex, lowercase, as the CA reports it
    not_before: float    # unix seconds
    not_after: float
    bundle_version: str
    renew_at: float      # when the renewal loop will ask for the next one

    def to_json(self) -> dict[str, Any]:
        return {"spiffe_id": self.spiffe_id, "serial": self.serial,
                "not_before": self.not_before, "not_after": self.not_after,
                "bundle_version": self.bundle_version, "renew_at": self.renew_at}


def make_key_and_csr(spiffe_id: SpiffeId | str) -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A fresh P-256 key and a PEM CSR whose only SAN is the SPIFFE ID's URI.

    The subject is empty, as X509-SVIDs identify by URI SAN alone; RFC 5280
    then wants the SAN extension critical.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName(
               [x509.UniformResourceIdentifier(str(spiffe_id))]), critical=True)
           .sign(key, hashes.SHA256()))
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _spki(public_key: CertificatePublicKeyTypes) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def _chains_to(chain: list[x509.Certificate], roots: list[x509.Certificate]) -> bool:
    """Leaf first, each signed by the next, the last by one of `roots` (signatures only:
    validity periods and names are the peers' TLS stacks' business)."""
    if not chain:
        return False
    if not all(issued_by(c, i) for c, i in itertools.pairwise(chain)):
        return False
    return any(issued_by(chain[-1], root) for root in roots)


def _load_bundle(bundle_pem: str | bytes, what: str) -> list[x509.Certificate]:
    data = bundle_pem.encode() if isinstance(bundle_pem, str) else bundle_pem
    try:
        roots = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise IdentityError(f"{what} is not a PEM certificate bundle: {exc}") from exc
    return roots


def _deserializer(model: type[_M]) -> Callable[[bytes], _M]:
    def parse(data: bytes) -> _M:
        return model.model_validate_json(data)
    return parse


class WorkloadIdentity:
    """Keeps one workload's certificate and trust bundle current in a `SecretSink`.

    Use: `await start()` once (first certificate, pushed to the sink; do it
    before starting Envoy), then run `run()` as a task for the life of the
    agent (renewals and bundle updates), and `await close()` at the end.

    `target` is the control plane's TLS gRPC address (host:port), or several
    replicas' comma-separated (an unreachable one sends the next call to the next);
    `ca_bundle` the PEM roots to verify it with (--ca-file), replaced by the
    mesh's bundle as soon as the CA hands one out, so a root rotation does
    not cut the agent off; the server must present a certificate for
    CONTROL_PLANE_NAME, whatever address is dialled. `clock` (unix seconds)
    and `sleep` can be replaced for tests; `jitter` spreads retries of many
    agents after a control-plane outage.
    """

    def __init__(
        self,
        spiffe_id: SpiffeId | str,
        target: str,
        ca_bundle: str | bytes,
        token: str | Callable[[], str],
        sink: SecretSink | None = None,
        *,
        workload: str = "",
        ttl_seconds: int | None = None,
        renew_fraction: float = 0.5,
        bundle_poll: float | None = 5.0,
        rpc_timeout: float = 10.0,
        retry_base: float = 1.0,
        retry_max: float = 30.0,
        jitter: float = 0.1,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not 0.0 < renew_fraction < 1.0:
            raise ValueError("renew_fraction must be between 0 and 1 (exclusive)")
        if not (token() if callable(token) else token):
            raise ValueError("a join token is required to ask the CA for a certificate")
        try:
            CertificateRequest(csr_pem="", ttl_seconds=ttl_seconds)
        except ValidationError as exc:
            raise ValueError(f"ttl_seconds={ttl_seconds} is out of the CA's range: "
                             f"{exc.errors()[0]['msg']}") from exc
        self.spiffe_id = str(spiffe_id if isinstance(spiffe_id, SpiffeId)
                             else SpiffeId.parse(spiffe_id))
        self._targets = [t.strip() for t in target.split(",") if t.strip()]
        self._target = 0
        self.sink = sink
        self.workload = workload
        self.ttl_seconds = ttl_seconds
        self.renew_fraction = renew_fraction
        self.bundle_poll = bundle_poll
        self.rpc_timeout = rpc_timeout
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.jitter = jitter
        self._clock = clock
        self._sleep = sleep
        # Read at each request: a rotated token file is used from the next one on.
        self._token: Callable[[], str] = token if callable(token) else (lambda: token)
        ca = ca_bundle.encode() if isinstance(ca_bundle, str) else bytes(ca_bundle)
        _load_bundle(ca, "the CA file")
        # Roots the channel to the control plane trusts; the mesh bundle once known.
        self._channel_roots = ca
        self._channel: grpc.aio.Channel | None = None
        self._channel_built_for = b""
        # One RPC (and the update it causes) at a time, so answers are applied
        # in the order the control plane gave them: a slow bundle poll can never
        # undo a newer bundle that came with a certificate.
        self._lock = asyncio.Lock()
        self._chain_pem = ""
        self._key_pem = b""
        self._bundle_pem = ""
        self._info: CertInfo | None = None
        # Set when the served certificate no longer chains to the bundle.
        self._renew_now = asyncio.Event()
        self.renewals = 0

    # -- public -------------------------------------------------------------------------------

    def cert_info(self) -> CertInfo | None:
        """The certificate served now (None before `start` succeeded)."""
        return self._info

    @property
    def bundle_pem(self) -> str:
        """The trust bundle served now (empty before `start`)."""
        return self._bundle_pem

    async def start(self, *, wait: float = 30.0) -> CertInfo:
        """Get the first certificate and push it to the sink.

        Transient failures (control plane not up yet) are retried with backoff
        for `wait` seconds; a refused token or a TLS trust mismatch raises at
        once. Raises IdentityError.
        """
        deadline = self._clock() + wait
        attempt = 0
        while True:
            try:
                return await self.renew()
            except IdentityError as exc:
                delay = self._backoff(attempt)
                if not exc.transient or self._clock() + delay > deadline:
                    raise
                log.info("certificate request failed, retrying in %.1fs: %s", delay, exc)
            attempt += 1
            await self._sleep(delay)

    async def renew(self) -> CertInfo:
        """One issuance with a new key: CSR -> CA -> checked -> sink. Raises IdentityError."""
        key, csr = make_key_and_csr(self.spiffe_id)
        request = CertificateRequest(csr_pem=csr, workload=self.workload,
                                     ttl_seconds=self.ttl_seconds)
        async with self._lock:
            response = await self._call(CREATE_CERTIFICATE, request, CertificateResponse)
            info = self._check(response, key)
            self._chain_pem, self._key_pem = response.cert_chain_pem, _key_pem(key)
            self._set_bundle(response.trust_bundle_pem)
            self._info = info
            self._push()
        log.info("certificate for %s: serial %s, valid until %s, renewing at %s",
                 info.spiffe_id, info.serial, _fmt(info.not_after), _fmt(info.renew_at))
        return info

    async def refresh_bundle(self) -> bool:
        """Poll the trust bundle once; push it if its version changed. Raises IdentityError."""
        async with self._lock:
            response = await self._call(GET_TRUST_BUNDLE, TrustBundleRequest(),
                                        TrustBundleResponse)
            info = self._info
            if info is None or response.bundle_version == info.bundle_version:
                return False
            roots = _load_bundle(response.trust_bundle_pem,
                                 "the trust bundle from the control plane")
            if not roots:
                raise IdentityError("the control plane sent an empty trust bundle")
            self._set_bundle(response.trust_bundle_pem)
            self._info = dataclasses.replace(info, bundle_version=response.bundle_version)
            self._push()
            trusted = _chains_to(_load_bundle(self._chain_pem, "our certificate chain"), roots)
        log.info("trust bundle changed to version %s", response.bundle_version)
        if not trusted:
            # The end of a root rotation dropped the root our certificate
            # chains to: peers will refuse it, so get a new one now.
            log.warning("the new trust bundle no longer covers our certificate; renewing now")
            self._renew_now.set()
        return True

    async def run(self) -> None:
        """Renew certificates and follow the trust bundle until cancelled. Needs `start`."""
        if self._info is None:
            raise RuntimeError("WorkloadIdentity.run() before start()")
        tasks = [asyncio.create_task(self._renew_loop(), name="certificate renewal")]
        if self.bundle_poll:
            tasks.append(asyncio.create_task(self._bundle_loop(self.bundle_poll),
                                             name="trust bundle poll"))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        """Close the channel to the control plane."""
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()

    # -- loops --------------------------------------------------------------------------------

    async def _renew_loop(self) -> None:
        # Theory of operation: a certificate valid from nb to na is replaced at
        # nb + fraction * (na - nb) (half its life by default), with a new key.
        # Envoy applies a new secret to new connections only, and the old
        # certificate stays valid for the other half of its life, so open
        # connections finish undisturbed and no request fails. If the CA cannot
        # be reached the old certificate keeps being served and we retry with
        # exponential backoff (jittered, capped at retry_max), retrying more
        # often as expiry nears (never waiting more than a quarter of the time
        # left), so a control-plane outage shorter than the remaining half-life
        # goes unnoticed. Past expiry we keep trying at the capped backoff:
        # mTLS to this workload fails until the control plane is back, but
        # the agent recovers by itself. A bundle that stops covering our
        # certificate (`_renew_now`, set by the bundle poll) cuts the wait short.
        while True:
            info = self._info
            assert info is not None
            await self._wait_or_wake(max(info.renew_at - self._clock(), 0.5))
            attempt = 0
            while True:
                try:
                    await self.renew()
                    self.renewals += 1
                    break
                except Exception as exc:  # never let the loop die: expiry would follow
                    if isinstance(exc, IdentityError):
                        error = exc
                    else:
                        log.exception("unexpected error renewing the certificate")
                        error = IdentityError(repr(exc))
                    current = self._info
                    assert current is not None
                    left = current.not_after - self._clock()
                    delay = self._backoff(attempt)
                    if left > 0:
                        delay = min(delay, max(left / 4, self.retry_base))
                        log.log(logging.WARNING if error.transient else logging.ERROR,
                                "certificate renewal failed (current one valid %.0fs more), "
                                "retrying in %.1fs: %s", left, delay, error)
                    else:
                        log.error("certificate for %s EXPIRED %.0fs ago and renewal fails, "
                                  "retrying in %.1fs: %s", self.spiffe_id, -left, delay, error)
                    attempt += 1
                    await self._sleep(delay)

    async def _wait_or_wake(self, seconds: float) -> None:
        """Sleep `seconds` (by the injectable sleep), or less if `_renew_now` is set."""
        if not self._renew_now.is_set():
            sleeper = asyncio.ensure_future(self._sleep(seconds))
            waker = asyncio.ensure_future(self._renew_now.wait())
            try:
                await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (sleeper, waker):
                    task.cancel()
                await asyncio.gather(sleeper, waker, return_exceptions=True)
        self._renew_now.clear()

    async def _bundle_loop(self, interval: float) -> None:
        failing = False
        while True:
            await self._sleep(interval)
            try:
                await self.refresh_bundle()
            except Exception as exc:
                if not isinstance(exc, IdentityError):
                    log.exception("unexpected error polling the trust bundle")
                # Renewals report the control plane's troubles loudly enough.
                log.log(logging.DEBUG if failing else logging.WARNING,
                        "trust bundle poll failed: %s", exc)
                failing = True
            else:
                failing = False

    # -- internals ----------------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        delay: float = min(self.retry_max, self.retry_base * 2 ** min(attempt, 30))
        if self.jitter:
            delay *= 1.0 + self.jitter * (2.0 * random.random() - 1.0)
        return delay

    def _push(self) -> None:
        if self.sink is not None:
            self.sink.update(self._chain_pem, self._key_pem, self._bundle_pem)

    def _set_bundle(self, bundle_pem: str) -> None:
        self._bundle_pem = bundle_pem
        # Trust what Envoy trusts: the mesh's current roots. The next call
        # (under the lock, so none is in flight) builds a channel on them.
        self._channel_roots = bundle_pem.encode()

    @property
    def target(self) -> str:
        return self._targets[self._target]

    def _next_target(self) -> None:  # the next call rebuilds the channel, to the next replica
        if len(self._targets) > 1:
            self._target = (self._target + 1) % len(self._targets)
            self._channel_built_for = b""

    async def _get_channel(self) -> grpc.aio.Channel:
        if self._channel is not None and self._channel_built_for == self._channel_roots:
            return self._channel
        old, self._channel = self._channel, None
        if old is not None:
            await old.close()  # nothing is in flight on it: calls hold the lock
        credentials = grpc.ssl_channel_credentials(root_certificates=self._channel_roots)
        self._channel = grpc.aio.secure_channel(
            self.target, credentials,
            options=[("grpc.ssl_target_name_override", CONTROL_PLANE_NAME)])
        self._channel_built_for = self._channel_roots
        return self._channel

    async def _call(self, method: str, request: BaseModel, reply: type[_M]) -> _M:
        channel = await self._get_channel()
        call = channel.unary_unary(
            method, request_serializer=lambda m: m.model_dump_json().encode(),
            response_deserializer=_deserializer(reply))
        try:
            auth = (("authorization", f"Bearer {self._token()}"),)
            result: _M = await call(request, metadata=auth, timeout=self.rpc_timeout)
        except grpc.aio.AioRpcError as exc:
            error = self._error(exc)
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                self._next_target()
            raise error from exc
        except ValidationError as exc:  # should have been caught by grpc; be sure
            raise IdentityError(f"the control plane CA sent an unusable answer: {exc}") from exc
        return result

    def _error(self, exc: grpc.aio.AioRpcError) -> IdentityError:
        code = exc.code()
        details = exc.details() or ""
        where = f"the control plane at {self.target}"
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return IdentityError(f"the join token was refused by {where} ({details})", code)
        if code == grpc.StatusCode.PERMISSION_DENIED:
            return IdentityError(f"the join token does not grant identity {self.spiffe_id} "
                                 f"({details})", code)
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return IdentityError(f"the CA of {where} rejected the certificate request: "
                                 f"{details}", code)
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return IdentityError(f"{where} does not serve the certificate authority "
                                 f"({details})", code)
        if code == grpc.StatusCode.UNAVAILABLE and any(
                hint in details.lower() for hint in _TLS_FAILURE_HINTS):
            return IdentityError(
                f"TLS to {where} failed: its certificate is not signed by the trusted "
                f"bundle (--ca-file) or is not for {CONTROL_PLANE_NAME} ({details})",
                code, tls=True)
        if code == grpc.StatusCode.UNAVAILABLE:
            return IdentityError(f"cannot reach the CA of {where}: {details}", code)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return IdentityError(f"the CA of {where} did not answer within "
                                 f"{self.rpc_timeout:g}s", code)
        return IdentityError(f"certificate call to {where} failed: {code.name}: {details}",
                             code)

    def _check(self, response: CertificateResponse,
               key: ec.EllipticCurvePrivateKey) -> CertInfo:
        """Refuse an answer Envoy could not use or that is not ours, before serving it."""
        try:
            return self._check_certificate(response, key)
        except (ValueError, TypeError) as exc:  # malformed extensions and the like
            raise IdentityError(f"the CA returned an unusable certificate: {exc}") from exc

    def _check_certificate(self, response: CertificateResponse,
                           key: ec.EllipticCurvePrivateKey) -> CertInfo:
        chain = _load_bundle(response.cert_chain_pem, "the certificate chain from the CA")
        roots = _load_bundle(response.trust_bundle_pem, "the trust bundle from the CA")
        if not chain:
            raise IdentityError("the CA returned an empty certificate chain")
        if not roots:
            raise IdentityError("the CA returned an empty trust bundle")
        leaf = chain[0]
        if _spki(leaf.public_key()) != _spki(key.public_key()):
            raise IdentityError("the CA returned a certificate for a different key")
        try:
            sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
        except x509.ExtensionNotFound:
            uris = []
        if uris != [self.spiffe_id]:
            raise IdentityError(f"the CA returned a certificate for {uris}, "
                                f"not for {self.spiffe_id}")
        if not _chains_to(chain, roots):
            raise IdentityError("the certificate chain from the CA is broken or does not "
                                "chain to its own trust bundle")
        not_before = leaf.not_valid_before_utc.timestamp()
        not_after = leaf.not_valid_after_utc.timestamp()
        received = self._clock()
        if not_after <= received:
            raise IdentityError("the CA returned a certificate that has already expired")
        return CertInfo(
            spiffe_id=self.spiffe_id, serial=format(leaf.serial_number, "x"),
            not_before=not_before, not_after=not_after,
            bundle_version=response.bundle_version,
            # From when we got it, not from not_before: the CA backdates
            # not_before for clock skew, which would make short-lived certs
            # look half-spent on arrival and renew in a loop.
            renew_at=received + self.renew_fraction * (not_after - received))


def _fmt(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))

