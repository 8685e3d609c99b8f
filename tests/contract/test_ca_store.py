"""MeshCA and Tokens against every store backend: what is persisted, what
survives a restart, and what concurrent writers end with."""

from __future__ import annotations

import asyncio
import contextlib
import json
import stat
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gossamer.ca import pki
from gossamer.ca.authority import KIND, NAME, NAMESPACE, MeshCA
from gossamer.ca.errors import CaError, IdentityMismatch
from gossamer.ca.rotation import Phase
from gossamer.ca.tokens import Scope, Tokens
from gossamer.contract.names import CONTROL_PLANE_NAME
from gossamer.contract.spiffe import SpiffeId
from gossamer.store import ResourceStore, StoredObject, WatchEvent
from gossamer.store.memory import MemoryStore
from tests.contract.conftest import DurableStores, StoreFactory

TD = "example.org"
WEB = SpiffeId(TD, "default", "web")


class Clock:
    """A settable clock for the CA (real time at start, so TLS stacks agree)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now


class YieldingStore:
    """A store whose first `racers` reads wait for each other, so concurrent opens
    really interleave between their read and their write, even on a store whose
    reads take real I/O (a write could otherwise commit before a slower read)."""

    def __init__(self, inner: ResourceStore, racers: int) -> None:
        self.inner = inner
        self.puts = 0
        self._racers = racers
        self._reads = 0
        self._first_reads = asyncio.Barrier(racers)

    async def get(self, kind: str, namespace: str, name: str) -> StoredObject | None:
        found = await self.inner.get(kind, namespace, name)
        self._reads += 1
        if self._reads <= self._racers:
            await self._first_reads.wait()
        return found

    async def list(self, kind: str | None = None, namespace: str | None = None
                   ) -> tuple[list[StoredObject], int]:
        return await self.inner.list(kind, namespace)

    async def put(self, kind: str, namespace: str, name: str, body: dict[str, Any],
                  expected_revision: int | None = None) -> StoredObject:
        self.puts += 1
        return await self.inner.put(kind, namespace, name, body, expected_revision)

    async def delete(self, kind: str, namespace: str, name: str,
                     expected_revision: int | None = None) -> StoredObject:
        return await self.inner.delete(kind, namespace, name, expected_revision)

    async def revision(self) -> int:
        return await self.inner.revision()

    def watch(self, from_revision: int) -> AsyncIterator[WatchEvent]:
        return self.inner.watch(from_revision)

    async def close(self) -> None:
        await self.inner.close()


def bundle_fingerprints(ca: MeshCA) -> list[str]:
    return [c.fingerprint(hashes.SHA256()).hex()
            for c in x509.load_pem_x509_certificates(ca.bundle_pem().encode())]


def plugin_pki(now: datetime) -> tuple[tuple[str, str, str], x509.Certificate]:
    """An organisation root and a mesh intermediate under it, as PEM texts."""
    def make(name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None
             ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        issuer_cert, issuer_key = issuer or (None, key)
        cert = (
            x509.CertificateBuilder().subject_name(subject)
            .issuer_name(issuer_cert.subject if issuer_cert else subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=90))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(issuer_key, hashes.SHA256())
        )
        return cert, key

    root = make("Acme Root", None)
    inter = make("Acme Mesh CA", root)
    key_pem = inter[1].private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()
    return (pki.certs_pem([inter[0]]), key_pem, pki.certs_pem([root[0]])), root[0]


# --- the CA's persisted state --------------------------------------------------------


async def test_first_open_creates_and_persists_a_root(store: ResourceStore) -> None:
    ca = await MeshCA.open(store, TD)
    assert ca.trust_domain == TD
    assert ca.phase is Phase.STABLE
    assert ca.signer.is_root
    stored = await store.get(KIND, NAMESPACE, NAME)
    assert stored is not None
    assert stored.body["trust_domain"] == TD
    assert stored.body["phase"] == "STABLE"
    assert [r["cert_pem"] for r in stored.body["roots"]] == [ca.signer.cert_pem()]
    assert ca.bundle_pem() == ca.signer.cert_pem()
    assert len(ca.bundle_version()) == 16
    assert "PRIVATE" not in repr(ca)


async def test_reopen_gives_the_same_root(store: ResourceStore) -> None:
    first = await MeshCA.open(store, TD)
    revision = await store.revision()
    second = await MeshCA.open(store, TD)
    assert second.signer.fingerprint() == first.signer.fingerprint()
    assert second.bundle_version() == first.bundle_version()
    assert await store.revision() == revision  # reopening writes nothing


async def test_root_survives_a_restart_of_a_durable_store(durable: DurableStores) -> None:
    store = durable.open()
    ca = await MeshCA.open(store, TD)
    text, _ = await Tokens(store).create(Scope.READ)
    await store.close()
    store = durable.open()
    again = await MeshCA.open(store, TD)
    assert again.signer.fingerprint() == ca.signer.fingerprint()
    record = await Tokens(store).verify(text)
    assert record is not None
    assert record.scope is Scope.READ


async def test_another_trust_domain_is_refused(store: ResourceStore) -> None:
    await MeshCA.open(store, TD)
    with pytest.raises(CaError, match=r"trust domain 'example\.org', not 'other\.org'"):
        await MeshCA.open(store, "other.org")
    with pytest.raises(CaError, match="trust domain"):
        await MeshCA.open(store, "Not_A_Domain")


async def test_plugin_replaces_the_builtin_root_and_is_persisted(store: ResourceStore) -> None:
    builtin = await MeshCA.open(store, TD)
    plugin, org_root = plugin_pki(datetime.now(UTC))
    ca = await MeshCA.open(store, TD, plugin=plugin)
    assert ca.signer.cert_pem() == plugin[0]
    assert ca.bundle_pem() == plugin[2]
    assert ca.signer.fingerprint() != builtin.signer.fingerprint()
    # Persisted: a restart without the plug-in flags keeps it, and the same flags write nothing.
    assert (await MeshCA.open(store, TD)).signer.cert_pem() == plugin[0]
    revision = await store.revision()
    await MeshCA.open(store, TD, plugin=plugin)
    assert await store.revision() == revision
    # Leaves chain through the intermediate to the org root.
    issued = ca.sign(pki.make_csr(pki.generate_workload_key(), WEB), WEB)
    assert [c.subject for c in x509.load_pem_x509_certificates(issued.chain_pem.encode())] == [
        issued.cert.subject, x509.load_pem_x509_certificate(plugin[0].encode()).subject]
    assert issued.cert.issuer == x509.load_pem_x509_certificate(plugin[0].encode()).subject
    assert org_root.subject.rfc4514_string() == "CN=Acme Root"


async def test_invalid_plugin_is_refused_before_touching_the_store(store: ResourceStore) -> None:
    plugin, _ = plugin_pki(datetime.now(UTC))
    with pytest.raises(CaError, match="does not end at a self-signed root"):
        await MeshCA.open(store, TD, plugin=(plugin[0], plugin[1], ""))
    assert await store.get(KIND, NAMESPACE, NAME) is None


async def test_concurrent_first_opens_end_with_one_root(store: ResourceStore) -> None:
    racing = YieldingStore(store, racers=4)
    cas = await asyncio.gather(*(MeshCA.open(racing, TD) for _ in range(4)))
    assert racing.puts == 4  # each tried to create one; three lost and reloaded
    assert len({ca.signer.fingerprint() for ca in cas}) == 1
    objects, _ = await store.list(KIND)
    assert len(objects) == 1


async def test_rotation_phases_persist_across_reopen(store: ResourceStore) -> None:
    ca = await MeshCA.open(store, TD)
    old = ca.signer.fingerprint()
    v0 = ca.bundle_version()

    await ca.begin_root_rotation()
    again = await MeshCA.open(store, TD)
    assert again.phase is Phase.DISTRIBUTING
    assert again.signer.fingerprint() == old
    assert len(bundle_fingerprints(again)) == 2
    assert again.bundle_version() == ca.bundle_version() != v0
    new = ca.state.roots[1].fingerprint()

    await ca.switch_signer()
    again = await MeshCA.open(store, TD)
    assert again.phase is Phase.SWITCHED
    assert again.signer.fingerprint() == new
    assert len(bundle_fingerprints(again)) == 2

    await ca.finish_root_rotation()
    again = await MeshCA.open(store, TD)
    assert again.phase is Phase.STABLE
    assert again.signer.fingerprint() == new
    assert bundle_fingerprints(again) == [new]


async def test_invalid_rotation_steps_and_stale_replicas_are_refused(
        store: ResourceStore) -> None:
    one = await MeshCA.open(store, TD)
    two = await MeshCA.open(store, TD)
    with pytest.raises(CaError, match="cannot switch"):
        await one.switch_signer()
    await one.begin_root_rotation()
    with pytest.raises(CaError, match="changed by someone else"):
        await two.begin_root_rotation()  # two still thinks STABLE
    assert two.phase is Phase.DISTRIBUTING  # and has reloaded
    await two.switch_signer()
    await one.reload()
    assert one.phase is Phase.SWITCHED


async def test_rotation_to_a_plugin_ca(store: ResourceStore) -> None:
    ca = await MeshCA.open(store, TD)
    plugin, _ = plugin_pki(datetime.now(UTC))
    await ca.begin_root_rotation(plugin=plugin)
    assert ca.bundle_pem() == ca.state.roots[0].root_pem() + plugin[2]
    # Restarting with the plug-in flags mid-rotation keeps the rotation going.
    again = await MeshCA.open(store, TD, plugin=plugin)
    assert again.phase is Phase.DISTRIBUTING
    await again.switch_signer()
    await again.finish_root_rotation()
    assert again.bundle_pem() == plugin[2]


# --- signing through the CA ------------------------------------------------------------


async def test_sign_uses_the_signer_and_records_issuance(store: ResourceStore) -> None:
    clock = Clock()
    ca = await MeshCA.open(store, TD, default_ttl=timedelta(hours=1),
                           max_ttl=timedelta(hours=2), clock=clock)
    csr = pki.make_csr(pki.generate_workload_key(), WEB)
    issued = ca.sign(csr, WEB, workload="web-1")
    assert issued.not_after == clock.now + timedelta(hours=1)
    assert ca.sign(csr, WEB, timedelta(days=1), workload="web-2").not_after == (
        clock.now + timedelta(hours=2))
    assert ca.sign(csr, WEB, timedelta(minutes=5), workload="web-2").not_after == (
        clock.now + timedelta(minutes=5))
    assert [(e["spiffe_id"], e["workload"]) for e in ca.issued()] == [
        (str(WEB), "web-1"), (str(WEB), "web-2")]
    assert ca.issued()[0]["serial"] == issued.serial
    json.dumps(ca.issued())  # JSON-ready for the API
    clock.now += timedelta(minutes=30)
    assert [e["workload"] for e in ca.issued()] == ["web-1"]  # web-2's 5 minutes are over
    with pytest.raises(IdentityMismatch, match="not in trust domain"):
        ca.sign(csr, SpiffeId("other.org", "default", "web"), None)
    with pytest.raises(IdentityMismatch):
        ca.sign(csr, SpiffeId(TD, "default", "db"), None)


async def test_ttl_settings_are_checked(store: ResourceStore) -> None:
    with pytest.raises(CaError, match="exceeds max_ttl"):
        await MeshCA.open(store, TD, default_ttl=timedelta(days=8))
    with pytest.raises(CaError, match="at least"):
        await MeshCA.open(store, TD, default_ttl=timedelta(seconds=10))


async def test_server_credentials_are_cached_and_follow_signer_and_age(
        store: ResourceStore) -> None:
    clock = Clock()
    ca = await MeshCA.open(store, TD, clock=clock)
    chain, key = ca.server_credentials([CONTROL_PLANE_NAME], ["127.0.0.1"])
    assert ca.server_credentials([CONTROL_PLANE_NAME], ["127.0.0.1"]) == (chain, key)
    assert ca.server_cert_if_changed() is None
    clock.now += timedelta(hours=11)
    assert ca.server_cert_if_changed() is None
    clock.now += timedelta(hours=1, seconds=1)  # past half of 24 h
    renewed = ca.server_cert_if_changed()
    assert renewed is not None
    assert renewed[0] != chain
    assert ca.server_cert_if_changed() is None

    await ca.begin_root_rotation()
    assert ca.server_cert_if_changed() is None  # same signer
    await ca.switch_signer()
    switched = ca.server_cert_if_changed()
    assert switched is not None
    leaf = x509.load_pem_x509_certificates(switched[0])[0]
    assert leaf.issuer == ca.signer.cert.subject
    assert leaf.not_valid_after_utc == clock.now + timedelta(hours=24)


# --- the serving certificate through grpc ---------------------------------------------


async def _ping(port: int, bundle: str) -> bool:
    """One call on a fresh connection trusting only `bundle`."""
    channel = grpc.aio.secure_channel(
        f"127.0.0.1:{port}", grpc.ssl_channel_credentials(root_certificates=bundle.encode()),
        options=[("grpc.ssl_target_name_override", CONTROL_PLANE_NAME),
                 ("grpc.use_local_subchannel_pool", 1)])
    try:
        reply = await channel.unary_unary("/test.Echo/Ping")(b"hi", timeout=3)
    except grpc.aio.AioRpcError as exc:
        if exc.code() is not grpc.StatusCode.UNAVAILABLE:  # a handshake failure, nothing else
            raise
        return False
    finally:
        await channel.close()
    assert reply == b"hi"
    return True


async def test_grpc_server_credentials_follow_root_rotation() -> None:
    store = MemoryStore()
    ca = await MeshCA.open(store, TD)
    old_bundle = ca.bundle_pem()
    server = grpc.aio.server()

    async def ping(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return request

    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Echo", {
        "Ping": grpc.unary_unary_rpc_method_handler(ping)})])
    port = server.add_secure_port(
        "127.0.0.1:0", ca.grpc_server_credentials([CONTROL_PLANE_NAME], ["127.0.0.1"]))
    await server.start()
    try:
        assert await _ping(port, old_bundle)
        await ca.begin_root_rotation()
        new_root = ca.state.roots[1].root_pem()
        both = ca.bundle_pem()
        assert await _ping(port, both)
        assert not await _ping(port, new_root)  # still served by the old root

        # A connection made before the switch keeps working after it.
        channel = grpc.aio.secure_channel(
            f"127.0.0.1:{port}", grpc.ssl_channel_credentials(both.encode()),
            options=[("grpc.ssl_target_name_override", CONTROL_PLANE_NAME),
                     ("grpc.use_local_subchannel_pool", 1)])
        call = channel.unary_unary("/test.Echo/Ping")
        assert await call(b"hi", timeout=3) == b"hi"
        await ca.switch_signer()
        assert await _ping(port, new_root)  # new connections get the new certificate
        assert not await _ping(port, old_bundle)
        assert await _ping(port, both)
        assert await call(b"hi", timeout=3) == b"hi"
        await channel.close()
    finally:
        await server.stop(None)
        await store.close()


# --- tokens ----------------------------------------------------------------------------


async def test_token_create_verify_revoke(store: ResourceStore) -> None:
    tokens = Tokens(store)
    text, record = await tokens.create(Scope.READ, description="dashboard")
    assert text.startswith(f"gst_{record.id}_")
    assert len(record.id) == 12
    assert len(text) == len("gst_") + 12 + 1 + 43
    assert await tokens.verify(text) == record
    assert record.allows_write() is False
    assert record.identity(TD) is None
    assert [r.id for r in await tokens.list()] == [record.id]
    assert await tokens.revoke(record.id) is True
    assert await tokens.verify(text) is None
    assert await tokens.revoke(record.id) is False
    assert await tokens.list() == []


async def test_join_token_grants_one_identity(store: ResourceStore) -> None:
    tokens = Tokens(store)
    text, _ = await tokens.create(Scope.JOIN, namespace="shop", account="cart")
    verified = await tokens.verify(text)
    assert verified is not None
    assert verified.identity(TD) == SpiffeId(TD, "shop", "cart")
    assert not verified.allows_write()
    _, admin = await tokens.create(Scope.ADMIN)
    assert admin.allows_write()
    assert admin.identity(TD) is None
    with pytest.raises(CaError, match="needs a namespace"):
        await tokens.create(Scope.JOIN, namespace="shop")
    with pytest.raises(CaError, match="not bound to an identity"):
        await tokens.create(Scope.ADMIN, namespace="shop", account="cart")
    with pytest.raises(CaError, match="not a DNS label"):
        await tokens.create(Scope.JOIN, namespace="Shop/../x", account="cart")


async def test_wrong_secret_and_malformed_tokens_are_refused(store: ResourceStore) -> None:
    tokens = Tokens(store)
    text, record = await tokens.create(Scope.ADMIN)
    wrong = text[:-1] + ("A" if text[-1] != "A" else "B")
    other_id = "gst_" + ("0" * 12 if record.id != "0" * 12 else "1" * 12) + text[16:]
    for bad in (wrong, other_id, "", "gst_", "hello", text + "x", text[:-1],
                text.replace("gst_", "gsx_"), text.upper(), f"Bearer {text}"):
        assert await tokens.verify(bad) is None, bad
    assert await tokens.verify(text) == record  # a cached record still checks the secret


async def test_secret_is_never_stored(store: ResourceStore) -> None:
    tokens = Tokens(store)
    text, record = await tokens.create(Scope.JOIN, namespace="shop", account="cart",
                                       description="cart's agent")
    secret = text.split("_", 2)[2]
    objects, _ = await store.list()
    dumped = json.dumps([o.body for o in objects])
    assert secret not in dumped
    assert secret[:16] not in dumped
    stored = await store.get("_Token", "gossamer-system", record.id)
    assert stored is not None
    assert set(stored.body) == {"scope", "namespace", "account", "created_at", "description",
                                "secret_sha256"}
    assert stored.body["scope"] == "join"


async def test_revocation_reaches_other_replicas_within_the_cache_time(
        store: ResourceStore) -> None:
    now = [100.0]
    replica = Tokens(store, cache_seconds=5.0, monotonic=lambda: now[0])
    admin = Tokens(store)
    text, record = await admin.create(Scope.READ)
    assert await replica.verify(text) == record
    await admin.revoke(record.id)
    now[0] += 4.0
    assert await replica.verify(text) == record  # cached for a few seconds
    now[0] += 1.5
    assert await replica.verify(text) is None


class _GatedWatch:
    """A store whose watch reads each next event only when the test releases it,
    and counts the reads of single objects."""

    def __init__(self, store: ResourceStore) -> None:
        self._store = store
        self.released = asyncio.Semaphore(0)
        self.delivered = 0
        self.gets = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def get(self, kind: str, namespace: str, name: str) -> StoredObject | None:
        self.gets += 1
        return await self._store.get(kind, namespace, name)

    async def watch(self, from_revision: int) -> AsyncIterator[WatchEvent]:
        # Released before reading on, so a store with real I/O cannot read ahead of
        # the test's writes either: the next read sees everything written until then.
        events = self._store.watch(from_revision)
        while True:
            await self.released.acquire()
            try:
                event = await anext(events)
            except StopAsyncIteration:
                return
            self.delivered += 1
            yield event


async def _eventually(check: Any, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + 5.0
    while not check():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.01)


async def _deliver(gated: _GatedWatch, n: int) -> None:
    target = gated.delivered + n
    for _ in range(n):
        gated.released.release()
    await _eventually(lambda: gated.delivered == target, f"{n} watch events delivered")


async def test_a_following_replica_answers_from_memory_and_sees_revocations_at_once(
        store: ResourceStore) -> None:
    gated = _GatedWatch(store)
    admin = Tokens(store)
    text, record = await admin.create(Scope.JOIN, namespace="shop", account="cart")
    # A cache time longer than the test: only the watch can make a revocation land.
    replica = Tokens(gated, cache_seconds=3600.0)  # type: ignore[arg-type]
    revoked: list[str] = []
    replica.on_revoked = revoked.append  # the xDS server ends the token's streams
    follower = asyncio.create_task(replica.follow())
    try:
        await _eventually(lambda: replica.following, "the replica follows the store")
        assert await replica.verify(text) == record
        assert await replica.verify(text[:-1] + ("A" if text[-1] != "A" else "B")) is None
        assert gated.gets == 0  # listed at start: no read per verification

        later, later_record = await admin.create(Scope.READ)
        assert await replica.verify(later) == later_record  # its event not here yet: read
        assert gated.gets == 1
        await _deliver(gated, 1)
        assert await replica.verify(later) == later_record
        assert gated.gets == 1  # now from memory

        await admin.revoke(record.id)  # on another replica
        assert await replica.verify(text) == record  # until its event arrives...
        assert revoked == []
        await _deliver(gated, 1)
        assert await replica.verify(text) is None  # ...and not a cache time later
        assert revoked == [record.id]
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
    assert not replica.following
    assert await replica.verify(later) == later_record  # back to reading the store


async def test_a_revocation_here_outlasts_a_queued_put_of_the_token(
        store: ResourceStore) -> None:
    gated = _GatedWatch(store)
    tokens = Tokens(gated)  # type: ignore[arg-type]
    follower = asyncio.create_task(tokens.follow())
    try:
        await _eventually(lambda: tokens.following, "following the store")
        text, record = await Tokens(store).create(Scope.READ)  # its PUT event waits
        revoked: list[str] = []
        tokens.on_revoked = revoked.append
        assert await tokens.revoke(record.id) is True
        assert revoked == [record.id]  # at once, not at its event
        assert await tokens.verify(text) is None
        await _deliver(gated, 1)  # the PUT, applied after the revocation
        assert await tokens.verify(text) is None
        await _deliver(gated, 1)  # the DELETE
        assert await tokens.verify(text) is None
        assert await tokens.revoke(record.id) is False
        # Tokens created and revoked here are known at once and gone at once.
        mine, mine_record = await tokens.create(Scope.ADMIN)
        reads = gated.gets
        assert await tokens.verify(mine) == mine_record
        assert gated.gets == reads
        assert await tokens.revoke(mine) is True
        assert await tokens.verify(mine) is None
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower


async def test_a_follower_that_falls_behind_the_history_lists_again(
        store_factory: StoreFactory) -> None:
    store = store_factory(history=2)
    gated = _GatedWatch(store)
    replica = Tokens(gated)  # type: ignore[arg-type]
    follower = asyncio.create_task(replica.follow())
    admin = Tokens(store)
    try:
        await _eventually(lambda: replica.following, "following the store")
        made = [await admin.create(Scope.READ) for _ in range(4)]
        await admin.revoke(made[0][1].id)
        gated.released.release()  # the watch now finds its history gone: relist
        newest = made[-1][0]  # its PUT event is never delivered: only a list brings it
        deadline = asyncio.get_running_loop().time() + 5.0
        while True:
            reads = gated.gets
            if await replica.verify(newest) is not None and gated.gets == reads:
                break
            assert asyncio.get_running_loop().time() < deadline, "the follower relisted"
            await asyncio.sleep(0.01)
        for text, record in made[1:]:
            assert await replica.verify(text) == record
        assert await replica.verify(made[0][0]) is None
        assert gated.gets == reads + 1  # only the revoked one was looked up
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower


async def test_revoke_accepts_the_token_text(store: ResourceStore) -> None:
    tokens = Tokens(store)
    text, _ = await tokens.create(Scope.READ)
    assert await tokens.revoke(text) is True
    assert await tokens.verify(text) is None
    assert await tokens.revoke("not-an-id") is False


async def test_ensure_admin_writes_a_private_file_once(
        store_factory: StoreFactory, tmp_path: Path) -> None:
    store = store_factory()
    tokens = Tokens(store)
    path = tmp_path / "state" / "secrets" / "admin-token"
    text = await tokens.ensure_admin(path)
    assert text is not None
    assert path.read_text().strip() == text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    record = await tokens.verify(text)
    assert record is not None
    assert record.scope is Scope.ADMIN
    assert await tokens.ensure_admin(path) is None
    assert await Tokens(store).ensure_admin(tmp_path / "other") is None
    assert not (tmp_path / "other").exists()
    assert path.read_text().strip() == text
    # A store with only non-admin tokens still gets its admin token.
    fresh = Tokens(store_factory())
    await fresh.create(Scope.READ)
    assert await fresh.ensure_admin(tmp_path / "fresh") is not None
