"""The agent's workload identity against a fake CA, and its SDS server over a Unix socket.

The fake CA is an in-process grpc.aio server speaking the `gossamer.ca.api`
contract (JSON over gRPC, bearer token metadata) on TLS, with a test root and
intermediate made here with `cryptography`, so these tests depend on nothing
but the wire contract. `TinyCa` is also used by tests/envoy/test_sds.py.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import socket
import stat
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc

from gossamer.agent.certs import IdentityError, WorkloadIdentity, make_key_and_csr
from gossamer.agent.sds import SdsServer
from gossamer.ca.api import (
    SERVICE,
    CertificateRequest,
    CertificateResponse,
    TrustBundleResponse,
)
from gossamer.contract.names import CERT_SECRET, CONTROL_PLANE_NAME, ROOT_SECRET
from gossamer.contract.spiffe import SpiffeId
from gossamer.xds.types import SECRET

SPIFFE = SpiffeId("test.local", "default", "web")
OTHER = SpiffeId("test.local", "default", "db")
TOKEN = "join-web"
WAIT = 10.0


# ------------------------------------------------------------------------------ test PKI


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _utc(ts: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(int(ts), datetime.UTC)


class TinyCa:
    """A root and an intermediate that issue leaves: the trust chain of these tests."""

    def __init__(self, name: str = "Gossamer Test Root") -> None:
        now = time.time()
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = self._ca_cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]),
                                  self.root_key, self.root_key, None, now)
        self.int_key = ec.generate_private_key(ec.SECP256R1())
        self.intermediate = self._ca_cert(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name + " Intermediate")]),
            self.int_key, self.root_key, self.root, now)

    @staticmethod
    def _ca_cert(subject: x509.Name, key: ec.EllipticCurvePrivateKey,
                 signer: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
                 now: float) -> x509.Certificate:
        return (x509.CertificateBuilder()
                .subject_name(subject)
                .issuer_name(issuer.subject if issuer else subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(_utc(now - 3600))
                .not_valid_after(_utc(now + 10 * 86400))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=False, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .sign(signer, hashes.SHA256()))

    @property
    def root_pem(self) -> str:
        return _pem(self.root)

    def issue(self, public_key: Any, *, uri: str | None = None, dns: str | None = None,
              not_before: float | None = None, not_after: float | None = None,
              ) -> x509.Certificate:
        """A leaf for server and client auth, signed by the intermediate."""
        nb = int(not_before if not_before is not None else time.time() - 60)
        na = int(not_after if not_after is not None else nb + 86400)
        sans: list[x509.GeneralName] = []
        if uri:
            sans.append(x509.UniformResourceIdentifier(uri))
        if dns:
            sans.append(x509.DNSName(dns))
        return (x509.CertificateBuilder()
                .subject_name(x509.Name([]))
                .issuer_name(self.intermediate.subject)
                .public_key(public_key)
                .serial_number(x509.random_serial_number())
                .not_valid_before(_utc(nb))
                .not_valid_after(_utc(na))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.SubjectAlternativeName(sans), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self.int_key.public_key()), critical=False)
                .sign(self.int_key, hashes.SHA256()))

    def leaf(self, *, uri: str | None = None, dns: str | None = None,
             **kw: Any) -> tuple[str, str, x509.Certificate]:
        """(chain PEM = leaf + intermediate, key PEM, leaf) with a fresh key."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self.issue(key.public_key(), uri=uri, dns=dns, **kw)
        return _pem(cert) + _pem(self.intermediate), _key_pem(key), cert


# ------------------------------------------------------------------------------ fake CA


class FakeCa:
    """The control plane's CA service as the contract describes it, on TLS.

    `fail` (if set) decides per call whether to answer with a status code
    instead; `clock` stamps not_before, so tests with a fake clock get
    certificates that agree with it.
    """

    def __init__(self, ca: TinyCa, *, ttl: float = 3600.0,
                 clock: Callable[[], float] = time.time,
                 serving: tuple[str, str] | None = None) -> None:
        self.ca = ca
        self.ttl = ttl
        self.clock = clock
        self.tokens: dict[str, str] = {TOKEN: str(SPIFFE), "join-db": str(OTHER)}
        self.bundle_pem = ca.root_pem
        self.bundle_version = "v1"
        self.requests: list[CertificateRequest] = []
        self.issued: list[tuple[float, x509.Certificate]] = []
        self.bundle_polls = 0
        self.fail: Callable[[], grpc.StatusCode | None] | None = None
        self.wrong_key = False
        if serving is None:
            chain, key, _ = ca.leaf(dns=CONTROL_PLANE_NAME)
            serving = (chain, key)
        self._serving = serving
        self._server: grpc.aio.Server | None = None
        self.target = ""

    async def start(self) -> str:
        server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler(SERVICE, {
            "CreateCertificate": grpc.unary_unary_rpc_method_handler(
                self._create, response_serializer=lambda m: m.encode()),
            "GetTrustBundle": grpc.unary_unary_rpc_method_handler(
                self._bundle, response_serializer=lambda m: m.encode()),
        })
        server.add_generic_rpc_handlers((handler,))
        chain, key = self._serving
        creds = grpc.ssl_server_credentials([(key.encode(), chain.encode())])
        port = server.add_secure_port("127.0.0.1:0", creds)
        await server.start()
        self._server, self.target = server, f"127.0.0.1:{port}"
        return self.target

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)

    async def _auth(self, context: grpc.aio.ServicerContext[bytes, Any]) -> str:
        metadata = dict(context.invocation_metadata() or ())
        auth = str(metadata.get("authorization", ""))
        token = auth.removeprefix("Bearer ")
        if not auth.startswith("Bearer ") or token not in self.tokens:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown join token")
        if self.fail is not None and (code := self.fail()) is not None:
            await context.abort(code, "the CA is having a bad day")
        return self.tokens[token]

    async def _create(self, body: bytes,
                      context: grpc.aio.ServicerContext[bytes, Any]) -> CertificateResponse:
        granted = await self._auth(context)
        request = CertificateRequest.model_validate_json(body)
        csr = x509.load_pem_x509_csr(request.csr_pem.encode())
        sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
        if uris != [granted]:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"token grants {granted}, not {uris}")
        self.requests.append(request)
        public_key = csr.public_key()
        if self.wrong_key:
            public_key = ec.generate_private_key(ec.SECP256R1()).public_key()
        nb = int(self.clock())
        cert = self.ca.issue(public_key, uri=granted, not_before=nb,
                             not_after=nb + self.ttl)
        self.issued.append((time.monotonic(), cert))
        return CertificateResponse(
            cert_chain_pem=_pem(cert) + _pem(self.ca.intermediate),
            trust_bundle_pem=self.bundle_pem, bundle_version=self.bundle_version,
            spiffe_id=granted, serial=format(cert.serial_number, "x"),
            not_before=cert.not_valid_before_utc.timestamp(),
            not_after=cert.not_valid_after_utc.timestamp())

    async def _bundle(self, body: bytes,
                      context: grpc.aio.ServicerContext[bytes, Any]) -> TrustBundleResponse:
        await self._auth(context)
        self.bundle_polls += 1
        return TrustBundleResponse(trust_bundle_pem=self.bundle_pem,
                                   bundle_version=self.bundle_version)


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture
def pki() -> TinyCa:
    return TinyCa()


@pytest.fixture
async def fake_ca(pki: TinyCa) -> AsyncIterator[FakeCa]:
    ca = FakeCa(pki)
    await ca.start()
    try:
        yield ca
    finally:
        await ca.stop()


@pytest.fixture
async def sds(tmp_path: Path) -> AsyncIterator[SdsServer]:
    server = SdsServer(tmp_path / "agent" / "sds.sock")
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0)


def identity(ca: FakeCa, sink: Any = None, **kw: Any) -> WorkloadIdentity:
    kw.setdefault("bundle_poll", None)
    kw.setdefault("jitter", 0.0)
    kw.setdefault("retry_base", 0.05)
    return WorkloadIdentity(kw.pop("spiffe_id", SPIFFE), ca.target,
                            kw.pop("ca_bundle", ca.ca.root_pem), kw.pop("token", TOKEN), sink,
                            workload="web-1", **kw)


async def eventually(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def served(sds: SdsServer, name: str) -> secret_pb2.Secret:
    return secret_pb2.Secret.FromString(sds.secrets()[name].payload)


def leaf_of(sds: SdsServer) -> x509.Certificate:
    chain = served(sds, CERT_SECRET).tls_certificate.certificate_chain.inline_bytes
    return x509.load_pem_x509_certificates(chain)[0]


async def cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


# ------------------------------------------------------------------------------ issuance


def test_csr_has_exactly_the_spiffe_uri() -> None:
    key, pem = make_key_and_csr(SPIFFE)
    csr = x509.load_pem_x509_csr(pem.encode())
    assert csr.is_signature_valid
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert list(san.value) == [x509.UniformResourceIdentifier(str(SPIFFE))]
    assert len(csr.extensions) == 1
    assert isinstance(key.curve, ec.SECP256R1)


async def test_first_issuance_serves_cert_and_keeps_key_in_memory(
        fake_ca: FakeCa, sds: SdsServer, pki: TinyCa) -> None:
    ident = identity(fake_ca, sds)
    try:
        info = await ident.start(wait=0)
    finally:
        await ident.close()

    [request] = fake_ca.requests
    csr = x509.load_pem_x509_csr(request.csr_pem.encode())
    sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(sans) == [x509.UniformResourceIdentifier(str(SPIFFE))]
    assert request.workload == "web-1"

    # Served: the chain (leaf + intermediate), the matching key, the bundle.
    secret = served(sds, CERT_SECRET)
    chain = x509.load_pem_x509_certificates(secret.tls_certificate.certificate_chain.inline_bytes)
    assert [c.subject for c in chain][1:] == [pki.intermediate.subject]
    key = serialization.load_pem_private_key(secret.tls_certificate.private_key.inline_bytes,
                                             None)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert (key.public_key().public_bytes(serialization.Encoding.DER, spki)
            == chain[0].public_key().public_bytes(serialization.Encoding.DER, spki)
            == csr.public_key().public_bytes(serialization.Encoding.DER, spki))
    roots = served(sds, ROOT_SECRET).validation_context.trusted_ca.inline_bytes
    assert roots.decode() == pki.root_pem

    assert info == ident.cert_info()
    assert info.spiffe_id == str(SPIFFE)
    assert info.serial == format(chain[0].serial_number, "x")
    assert info.not_after == chain[0].not_valid_after_utc.timestamp()
    assert info.renew_at == pytest.approx(info.not_before + 0.5 * 3600)
    assert info.bundle_version == "v1"

    # The key never touched the disk: the workdir holds the socket, nothing else.
    workdir = sds.path.parent
    assert sorted(p.name for p in workdir.rglob("*")) == ["sds.sock"]
    mode = os.stat(sds.path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


async def test_renews_at_the_fraction_with_a_new_key(pki: TinyCa, sds: SdsServer) -> None:
    ca = FakeCa(pki, ttl=4)
    await ca.start()
    ident = identity(ca, sds, renew_fraction=0.5)
    task: asyncio.Task[None] | None = None
    try:
        first = await ident.start(wait=0)
        first_leaf = leaf_of(sds)
        task = asyncio.create_task(ident.run())
        await eventually(lambda: len(ca.issued) >= 2, "the first renewal")
        (t1, c1), (t2, c2) = ca.issued[:2]
        # Renewal at not_before + 2 s; not_before is whole seconds, so 1-2 s after issue.
        assert 0.8 <= t2 - t1 <= 3.0, t2 - t1
        keys = [x509.load_pem_x509_csr(r.csr_pem.encode()).public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            for r in ca.requests[:2]]
        assert keys[0] != keys[1]
        await eventually(lambda: leaf_of(sds).serial_number == c2.serial_number,
                         "the renewed certificate to be served")
        assert first_leaf.serial_number == c1.serial_number
        info = ident.cert_info()
        assert info is not None
        assert info.serial != first.serial
        assert ident.renewals >= 1
    finally:
        if task is not None:
            await cancel(task)
        await ident.close()
        await ca.stop()


class FakeTime:
    """A clock that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def test_renewal_schedule_and_backoff_with_a_fake_clock(pki: TinyCa) -> None:
    fake = FakeTime()
    ca = FakeCa(pki, ttl=40, clock=fake.clock)
    start = fake.now
    down_from, down_until = start + 20, start + 70  # an outage past the first cert's expiry
    ca.fail = lambda: (grpc.StatusCode.UNAVAILABLE
                       if down_from <= fake.now < down_until else None)
    await ca.start()
    ident = identity(ca, renew_fraction=0.5, retry_base=1.0, retry_max=8.0,
                     clock=fake.clock, sleep=fake.sleep)
    task: asyncio.Task[None] | None = None
    try:
        await ident.start(wait=0)
        task = asyncio.create_task(ident.run())
        await eventually(lambda: len(ca.issued) >= 3, "renewals after the outage")
    finally:
        if task is not None:
            await cancel(task)
        await ident.close()
        await ca.stop()

    sleeps = fake.sleeps
    assert sleeps[0] == 20  # half of the 40 s life
    # Then retries while the CA is down: exponential from 1 s, but never more than
    # a quarter of the time left while the certificate is valid...
    t = start + 20
    retries = []
    for s in sleeps[1:]:
        if t >= down_until:
            break
        retries.append((t, s))
        t += s
    assert [s for _, s in retries[:3]] == [1.0, 2.0, 4.0]
    for at, s in retries:
        left = start + 40 - at
        if left > 0:
            assert s <= max(left / 4, 1.0) + 1e-9, (at - start, s)
        else:
            assert s <= 8.0  # ...and capped at retry_max once it expired
    assert any(at > start + 40 for at, _ in retries), "kept retrying past expiry"
    # Recovered: the next certificate comes from the first call after the outage,
    # and the one after that at its own half-life.
    nb2 = ca.issued[1][1].not_valid_before_utc.timestamp()
    assert down_until <= nb2 < down_until + 8.0 + 1
    assert sleeps[len(retries) + 1] == pytest.approx(20, abs=1.0)


async def test_start_retries_while_the_ca_is_unavailable(fake_ca: FakeCa) -> None:
    failures = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]
    fake_ca.fail = lambda: failures.pop() if failures else None
    ident = identity(fake_ca)
    try:
        info = await ident.start(wait=10)
    finally:
        await ident.close()
    assert info.spiffe_id == str(SPIFFE)
    assert not failures


async def test_a_dead_replica_first_in_the_list_moves_calls_to_the_next(
        fake_ca: FakeCa) -> None:
    with socket.socket() as unused:  # a port nothing listens on: a dead replica
        unused.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{unused.getsockname()[1]}"
    ident = WorkloadIdentity(SPIFFE, f"{dead},{fake_ca.target}", fake_ca.ca.root_pem, TOKEN,
                             workload="web-1", bundle_poll=None, jitter=0.0, retry_base=0.05)
    try:
        info = await ident.start(wait=10)
    finally:
        await ident.close()
    assert info.spiffe_id == str(SPIFFE)
    assert ident.target == fake_ca.target
    assert len(fake_ca.requests) == 1


async def test_unusable_certificate_is_refused(fake_ca: FakeCa) -> None:
    fake_ca.wrong_key = True
    ident = identity(fake_ca)
    try:
        with pytest.raises(IdentityError, match="different key"):
            await ident.start(wait=0)
    finally:
        await ident.close()
    assert ident.cert_info() is None


# ------------------------------------------------------------------------------ bundle


async def test_bundle_change_reaches_sds(fake_ca: FakeCa, sds: SdsServer) -> None:
    ident = identity(fake_ca, sds, bundle_poll=0.1)
    task: asyncio.Task[None] | None = None
    try:
        await ident.start(wait=0)
        task = asyncio.create_task(ident.run())
        await eventually(lambda: fake_ca.bundle_polls >= 2, "bundle polls")
        served_before = sds.secrets()[CERT_SECRET]

        # Root rotation begins: the bundle holds the old and the new root.
        new_root = TinyCa("Next Root")
        fake_ca.bundle_pem = fake_ca.ca.root_pem + new_root.root_pem
        fake_ca.bundle_version = "v2"
        await eventually(lambda: served(sds, ROOT_SECRET).validation_context.trusted_ca
                         .inline_bytes.decode() == fake_ca.bundle_pem, "the new bundle in SDS")
        info = ident.cert_info()
        assert info is not None
        assert info.bundle_version == "v2"
        assert ident.bundle_pem == fake_ca.bundle_pem
        # The certificate did not change, so it is not even a new version.
        assert sds.secrets()[CERT_SECRET].version == served_before.version
        # The channel now trusts the new bundle and keeps working.
        polls = fake_ca.bundle_polls
        await eventually(lambda: fake_ca.bundle_polls >= polls + 2, "polls on the new channel")
    finally:
        if task is not None:
            await cancel(task)
        await ident.close()


async def test_bundle_that_drops_our_root_brings_a_new_certificate(sds: SdsServer) -> None:
    # The control plane's serving certificate has its own root, kept in every bundle,
    # so the channel survives; the workload root is rotated out from under us.
    serving_ca, old, new = TinyCa("Serving"), TinyCa("Old"), TinyCa("New")
    chain, key, _ = serving_ca.leaf(dns=CONTROL_PLANE_NAME)
    ca = FakeCa(old, serving=(chain, key))
    ca.bundle_pem = old.root_pem + serving_ca.root_pem
    await ca.start()
    ident = identity(ca, sds, bundle_poll=0.1, ca_bundle=serving_ca.root_pem)
    task: asyncio.Task[None] | None = None
    try:
        first = await ident.start(wait=0)
        task = asyncio.create_task(ident.run())
        ca.ca = new
        ca.bundle_pem, ca.bundle_version = new.root_pem + serving_ca.root_pem, "v2"
        # Long before the scheduled renewal (half of an hour).
        await eventually(lambda: len(ca.issued) >= 2, "a renewal forced by the new bundle")
        await eventually(lambda: leaf_of(sds).issuer == new.intermediate.subject,
                         "a certificate from the new root in SDS")
        info = ident.cert_info()
        assert info is not None
        assert info.serial != first.serial
        assert info.bundle_version == "v2"
    finally:
        if task is not None:
            await cancel(task)
        await ident.close()
        await ca.stop()


async def test_bundle_also_comes_with_each_certificate(fake_ca: FakeCa,
                                                       sds: SdsServer) -> None:
    ident = identity(fake_ca, sds)
    try:
        await ident.start(wait=0)
        fake_ca.bundle_pem = fake_ca.ca.root_pem + TinyCa("Next").root_pem
        fake_ca.bundle_version = "v2"
        info = await ident.renew()
    finally:
        await ident.close()
    assert info.bundle_version == "v2"
    roots = served(sds, ROOT_SECRET).validation_context.trusted_ca.inline_bytes.decode()
    assert roots == fake_ca.bundle_pem


# ------------------------------------------------------------------------------ errors


async def test_unknown_token_is_a_clear_error(fake_ca: FakeCa) -> None:
    ident = identity(fake_ca, token="nope")
    try:
        with pytest.raises(IdentityError, match="join token was refused") as err:
            await ident.start(wait=5)
    finally:
        await ident.close()
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert not err.value.transient
    assert isinstance(err.value.__cause__, grpc.aio.AioRpcError)


async def test_token_for_another_identity_is_a_clear_error(fake_ca: FakeCa) -> None:
    ident = identity(fake_ca, token="join-db")
    try:
        with pytest.raises(IdentityError) as err:
            await ident.start(wait=5)
    finally:
        await ident.close()
    assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert f"the join token does not grant identity {SPIFFE}" in str(err.value)
    assert isinstance(err.value.__cause__, grpc.aio.AioRpcError)


async def test_server_not_signed_by_the_bundle_is_refused(fake_ca: FakeCa) -> None:
    stranger = TinyCa("Someone Else")
    ident = identity(fake_ca, ca_bundle=stranger.root_pem)
    t0 = time.monotonic()
    try:
        with pytest.raises(IdentityError, match="TLS") as err:
            await ident.start(wait=10)
    finally:
        await ident.close()
    assert err.value.tls
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - t0 < 5, "a trust mismatch is not worth waiting for"
    assert fake_ca.requests == []


async def test_server_with_the_wrong_name_is_refused(pki: TinyCa) -> None:
    chain, key, _ = pki.leaf(dns="not-the-control-plane")
    ca = FakeCa(pki, serving=(chain, key))
    await ca.start()
    ident = identity(ca)
    try:
        with pytest.raises(IdentityError) as err:
            await ident.start(wait=0)
    finally:
        await ident.close()
        await ca.stop()
    assert err.value.tls
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    assert CONTROL_PLANE_NAME in str(err.value)
    assert ca.requests == []


def test_bad_arguments() -> None:
    pem = TinyCa().root_pem
    with pytest.raises(ValueError, match="renew_fraction"):
        WorkloadIdentity(SPIFFE, "x:1", pem, TOKEN, renew_fraction=1.0)
    with pytest.raises(ValueError, match="token"):
        WorkloadIdentity(SPIFFE, "x:1", pem, "")
    with pytest.raises(ValueError, match="ttl_seconds"):
        WorkloadIdentity(SPIFFE, "x:1", pem, TOKEN, ttl_seconds=5)
    with pytest.raises(IdentityError, match="CA file"):
        WorkloadIdentity(SPIFFE, "x:1", "not a pem", TOKEN)


# ------------------------------------------------------------------------------ SDS


def _sds_stub(sds: SdsServer) -> tuple[grpc.aio.Channel, Any]:
    channel = grpc.aio.insecure_channel(sds.address)
    return channel, sds_pb2_grpc.SecretDiscoveryServiceStub(channel)


def _secrets(resources: Any) -> dict[str, secret_pb2.Secret]:
    out = {}
    for any_ in resources:
        message = any_.resource if hasattr(any_, "resource") else any_
        secret = secret_pb2.Secret.FromString(message.value)
        out[secret.name] = secret
    return out


async def _read(call: Any) -> Any:
    return await asyncio.wait_for(call.read(), WAIT)


async def test_sds_serves_both_secrets_sotw_and_delta(sds: SdsServer, pki: TinyCa) -> None:
    chain, key, _ = pki.leaf(uri=str(SPIFFE))
    sds.update(chain, key, pki.root_pem)
    channel, stub = _sds_stub(sds)
    try:
        sotw = stub.StreamSecrets()
        request = discovery_pb2.DiscoveryRequest(type_url=SECRET, resource_names=[CERT_SECRET])
        request.node.id = "envoy-1"
        await sotw.write(request)
        response = await _read(sotw)
        got = _secrets(response.resources)
        assert list(got) == [CERT_SECRET]
        assert got[CERT_SECRET].tls_certificate.private_key.inline_bytes == key.encode()

        delta = stub.DeltaSecrets()
        dreq = discovery_pb2.DeltaDiscoveryRequest(
            type_url=SECRET, resource_names_subscribe=[CERT_SECRET, ROOT_SECRET])
        dreq.node.id = "some-other-node-id"  # any node gets this workload's secrets
        await delta.write(dreq)
        dresp = await _read(delta)
        dgot = _secrets(dresp.resources)
        assert sorted(dgot) == [ROOT_SECRET, CERT_SECRET]
        assert dgot[ROOT_SECRET].validation_context.trusted_ca.inline_bytes.decode() == (
            pki.root_pem)

        # An update reaches open streams once they ACKed.
        await sotw.write(discovery_pb2.DiscoveryRequest(
            type_url=SECRET, resource_names=[CERT_SECRET], version_info=response.version_info,
            response_nonce=response.nonce))
        await delta.write(discovery_pb2.DeltaDiscoveryRequest(type_url=SECRET,
                                                              response_nonce=dresp.nonce))
        chain2, key2, _ = pki.leaf(uri=str(SPIFFE))
        sds.update(chain2, key2, pki.root_pem)
        update = _secrets((await _read(sotw)).resources)
        assert update[CERT_SECRET].tls_certificate.certificate_chain.inline_bytes == (
            chain2.encode())
        dupdate = await _read(delta)
        # Delta sends only what changed: the bundle is the same bytes.
        assert list(_secrets(dupdate.resources)) == [CERT_SECRET]
        sotw.cancel()
        delta.cancel()
    finally:
        await channel.close()


async def test_sds_stream_waits_for_the_first_update(sds: SdsServer, pki: TinyCa) -> None:
    channel, stub = _sds_stub(sds)
    try:
        call = stub.StreamSecrets()
        request = discovery_pb2.DiscoveryRequest(type_url=SECRET, resource_names=[ROOT_SECRET])
        request.node.id = "early-envoy"
        await call.write(request)
        await asyncio.sleep(0.2)
        assert not sds.ready
        chain, key, _ = pki.leaf(uri=str(SPIFFE))
        sds.update(chain, key, pki.root_pem)
        assert sds.ready
        got = _secrets((await _read(call)).resources)
        assert list(got) == [ROOT_SECRET]
        call.cancel()
    finally:
        await channel.close()


async def test_sds_socket_is_private_and_removed_on_stop(tmp_path: Path) -> None:
    path = tmp_path / "w" / "sds.sock"
    server = SdsServer(path)
    old = os.umask(0)  # even a permissive umask must not open the socket up
    try:
        await server.start()
    finally:
        os.umask(old)
    try:
        assert server.address == f"unix:{path}"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    finally:
        await server.stop(0)
    assert not path.exists()
    # A stale socket left by a dead agent does not stop the next one.
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
    again = SdsServer(path)
    await again.start()
    await again.stop(0)


def test_sds_socket_path_too_long(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="longer than"):
        SdsServer(tmp_path / ("x" * 120) / "sds.sock")

