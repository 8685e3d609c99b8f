"""The mesh CA's store-backed edge: where its state lives and who changes it.

`MeshCA` holds the current `RootState` in memory and persists it in the
resource store (kind `_CA`, namespace `gossamer-system`, name `ca`), so a
restarted control plane keeps its root and every certificate it issued keeps
verifying. Everything else (keys, signing, checks, rotation rules) is
delegated to the pure `pki` and `rotation` modules.

Concurrency model: writes use optimistic concurrency on the store revision,
so two replicas racing on first start end with one root (the loser reloads the
winner's), and a rotation step taken on stale state fails with CaError
instead of overwriting: each step is taken once, by one replica. Every replica
runs `follow`, which adopts the state another replica stored as soon as its
event arrives, so all replicas serve one bundle and sign with one signer.

The stored body holds the CA private keys in PEM. The store is therefore
part of the trust boundary (like Istio's `istio-ca-secret`): kinds starting
with `_` must never be served by the API or logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from gossamer.ca import pki, rotation, servercert
from gossamer.ca.errors import CaError, IdentityMismatch
from gossamer.ca.pki import CaKeyPair, IssuedCert
from gossamer.ca.rotation import Phase, RootState
from gossamer.contract.spiffe import SpiffeId, check_trust_domain, control_plane_id
from gossamer.store.base import (
    Compacted,
    Conflict,
    ResourceStore,
    StoreClosed,
    StoredObject,
    StoreError,
)

log = logging.getLogger(__name__)

KIND = "_CA"
NAMESPACE = "gossamer-system"
NAME = "ca"
DEFAULT_TTL = timedelta(hours=24)
MAX_TTL = timedelta(days=7)
SERVER_TTL = timedelta(hours=24)
MIN_TTL = timedelta(minutes=1)
# Attempts to settle the stored state when other writers keep winning.
_OPEN_ATTEMPTS = 5

Plugin = tuple[str, str, str]
"""(CA certificate PEM, CA private key PEM, chain PEM up to the root)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class _ServerCert:
    names: tuple[tuple[str, ...], tuple[str, ...]]
    signer: str
    chain_pem: bytes
    key_pem: bytes
    not_before: datetime
    not_after: datetime


class MeshCA:
    """The mesh's certificate authority: signs workload CSRs, serves the trust
    bundle, issues the control plane's serving certificate, rotates roots.

    Build it with `await MeshCA.open(store, trust_domain)`. `sign`,
    `bundle_pem` and `server_credentials` are synchronous and cheap (one ECDSA
    signature at most), so handlers call them inline. Everything belongs to
    the event loop's thread except `server_credentials` and
    `server_cert_if_changed`, which are locked because grpc calls its
    certificate fetcher from its own threads.
    """

    def __init__(
        self,
        store: ResourceStore,
        trust_domain: str,
        state: RootState,
        revision: int,
        *,
        default_ttl: timedelta = DEFAULT_TTL,
        max_ttl: timedelta = MAX_TTL,
        server_ttl: timedelta = SERVER_TTL,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """Use `open`; this only assembles already-loaded parts."""
        for what, value in (("default_ttl", default_ttl), ("max_ttl", max_ttl),
                            ("server_ttl", server_ttl)):
            if value < MIN_TTL:
                raise CaError(f"{what} must be at least {MIN_TTL}, not {value}")
        if default_ttl > max_ttl:
            raise CaError(f"default_ttl {default_ttl} exceeds max_ttl {max_ttl}")
        self._store = store
        self._trust_domain = trust_domain
        self._state = state
        self._revision = revision
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self.server_ttl = server_ttl
        self._clock = clock
        self._issued: dict[tuple[str, str], dict[str, Any]] = {}
        # server_credentials may be called from grpc's certificate fetcher thread.
        self._lock = threading.Lock()
        self._server: _ServerCert | None = None
        self._served_chain: bytes | None = None
        self._server_names: tuple[tuple[str, ...], tuple[str, ...]] | None = None
        self._client: _ServerCert | None = None

    def __repr__(self) -> str:
        return (f"MeshCA(trust_domain={self._trust_domain!r}, phase={self.phase}, "
                f"bundle={self.bundle_version()})")

    # --- opening -----------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        store: ResourceStore,
        trust_domain: str,
        *,
        plugin: Plugin | None = None,
        default_ttl: timedelta = DEFAULT_TTL,
        max_ttl: timedelta = MAX_TTL,
        server_ttl: timedelta = SERVER_TTL,
        clock: Callable[[], datetime] = utcnow,
    ) -> MeshCA:
        """Load the CA state from the store, or create it on first start.

        First start: a new built-in root (or the plug-in CA) is stored with
        expected_revision=0, so of replicas racing only one creates it; the
        others reload it. With `plugin`, the validated plug-in CA replaces a
        stored CA unless the stored state already contains it (e.g. a rotation
        towards it is in progress). That replacement is abrupt (certificates
        signed by the old CA stop verifying); to move without failing
        requests, use `begin_root_rotation(plugin=...)` instead.
        A store whose CA belongs to another trust domain is refused.
        """
        try:
            check_trust_domain(trust_domain)
        except ValueError as exc:
            raise CaError(str(exc)) from None
        wanted = (pki.load_plugin(*plugin, clock(), trust_domain=trust_domain)
                  if plugin else None)
        for _ in range(_OPEN_ATTEMPTS):
            stored = await store.get(KIND, NAMESPACE, NAME)
            try:
                if stored is None:
                    ca = wanted or pki.generate_root(trust_domain, clock())
                    state = rotation.initial(ca)
                    stored = await store.put(KIND, NAMESPACE, NAME,
                                             _encode(trust_domain, state), expected_revision=0)
                    log.info("created the mesh CA for %s: %s", trust_domain, ca)
                else:
                    state = _decode(stored, trust_domain)
                    if wanted is not None and wanted not in state.roots:
                        log.warning("the plug-in CA %s replaces the stored CA %s; certificates "
                                    "signed by the old one stop verifying", wanted, state.signer)
                        state = rotation.initial(wanted)
                        stored = await store.put(KIND, NAMESPACE, NAME,
                                                 _encode(trust_domain, state),
                                                 expected_revision=stored.revision)
            except Conflict:
                continue  # another replica wrote first: read its state
            return cls(store, trust_domain, state, stored.revision, default_ttl=default_ttl,
                       max_ttl=max_ttl, server_ttl=server_ttl, clock=clock)
        raise CaError(f"the CA state in the store kept changing over {_OPEN_ATTEMPTS} attempts")

    async def reload(self) -> None:
        """Adopt the stored state (written by another replica, or restored)."""
        stored = await self._store.get(KIND, NAMESPACE, NAME)
        if stored is None:
            raise CaError("the CA state disappeared from the store")
        self._state = _decode(stored, self._trust_domain)
        self._revision = stored.revision

    async def follow(self, retry: float = 1.0) -> None:
        """Adopt every CA state another replica stores, until the store closes; a
        store that is away (fail static) is waited for, and read again when back."""
        while True:
            try:
                await self._follow_once()
                return
            except StoreClosed:
                return
            except StoreError as exc:
                log.warning("CA: following the store: %s; again in %gs", exc, retry)
                await asyncio.sleep(retry)

    async def _follow_once(self) -> None:
        revision = await self._store.revision()
        await self.reload()  # what was written before the watch starts
        while True:
            try:
                async for event in self._store.watch(revision):
                    revision = event.revision
                    found = event.object
                    if (found.kind, found.namespace, found.name) == (KIND, NAMESPACE, NAME) \
                            and found.revision > self._revision:
                        self._adopt(found)
                return
            except Compacted:
                revision = await self._store.revision()
                await self.reload()

    def _adopt(self, stored: StoredObject) -> None:
        try:
            self._state = _decode(stored, self._trust_domain)
        except CaError as exc:
            log.error("cannot adopt the CA state at revision %d: %s", stored.revision, exc)
            return
        self._revision = stored.revision
        log.info("adopted the CA state at revision %d: phase %s, bundle %s", stored.revision,
                 self.phase, self.bundle_version())

    # --- what the mesh trusts ------------------------------------------------------

    @property
    def trust_domain(self) -> str:
        return self._trust_domain

    @property
    def phase(self) -> Phase:
        return self._state.phase

    @property
    def state(self) -> RootState:
        return self._state

    @property
    def signer(self) -> CaKeyPair:
        return self._state.signer

    def bundle_pem(self) -> str:
        """Every root the mesh trusts now (two during a root rotation)."""
        return self._state.bundle_pem()

    def bundle_version(self) -> str:
        """A short content hash of `bundle_pem()`: agents compare it to know
        whether their bundle is current."""
        return hashlib.sha256(self.bundle_pem().encode()).hexdigest()[:16]

    # --- workload certificates -------------------------------------------------------

    def sign(
        self,
        csr_pem: bytes | str,
        identity: SpiffeId,
        ttl: timedelta | None = None,
        *,
        workload: str = "",
    ) -> IssuedCert:
        """Sign a workload's CSR for exactly `identity` (what the caller's token
        grants) with the current signer; ttl None means `default_ttl`, and any
        ttl is capped at `max_ttl`. Raises CsrRejected / IdentityMismatch."""
        if identity.trust_domain != self._trust_domain:
            raise IdentityMismatch(f"{identity} is not in trust domain {self._trust_domain}")
        if identity == control_plane_id(self._trust_domain):
            raise IdentityMismatch(f"{identity} is the control plane's own identity: it "
                                   "reaches every sidecar's admin, so no CSR gets it")
        now = self._clock()
        issued = pki.sign_workload_csr(self._state.signer, csr_pem, identity, now,
                                       self.default_ttl if ttl is None else ttl, self.max_ttl)
        self._record(issued, workload, now)
        return issued

    def _record(self, issued: IssuedCert, workload: str, now: datetime) -> None:
        # Expired entries go, so workloads that come and go do not grow this forever.
        for key in [k for k, v in self._issued.items() if v["_not_after"] <= now]:
            del self._issued[key]
        self._issued[(str(issued.spiffe_id), workload)] = {
            "spiffe_id": str(issued.spiffe_id),
            "workload": workload,
            "serial": issued.serial,
            "issued_at": now.isoformat(),
            "not_before": issued.not_before.isoformat(),
            "not_after": issued.not_after.isoformat(),
            "_not_after": issued.not_after,
        }

    def issued(self) -> list[dict[str, Any]]:
        """The last certificate issued per (identity, workload) by this process
        and still valid, JSON-ready, sorted by identity then workload."""
        now = self._clock()
        return [
            {k: v for k, v in entry.items() if not k.startswith("_")}
            for _, entry in sorted(self._issued.items())
            if entry["_not_after"] > now
        ]

    # --- the control plane's own TLS ---------------------------------------------------

    def server_credentials(
        self, dns_names: Sequence[str], ip_addresses: Sequence[str] = ()
    ) -> tuple[bytes, bytes]:
        """(certificate chain PEM, private key PEM) for the control plane's TLS.

        Cached; re-issued when half its life has passed, when the signer
        changed (root rotation `switch`, plug-in) or when the names changed.
        Also marks this pair as served for `server_cert_if_changed`.
        """
        with self._lock:
            self._server_names = (tuple(dns_names), tuple(ip_addresses))
            current = self._current_server_cert(self._server_names)
            self._served_chain = current.chain_pem
            return current.chain_pem, current.key_pem

    def server_cert(
        self, dns_names: Sequence[str], ip_addresses: Sequence[str] = ()
    ) -> tuple[bytes, bytes]:
        """The same (chain PEM, key PEM) as `server_credentials`, renewed by the same
        rules, for another server of the control plane (the HTTP API), without marking
        it served: grpc's certificate fetcher must still see a renewal as a change."""
        with self._lock:
            current = self._current_server_cert((tuple(dns_names), tuple(ip_addresses)))
            return current.chain_pem, current.key_pem

    def server_cert_if_changed(self) -> tuple[bytes, bytes] | None:
        """The serving pair if it differs from the one last returned (by this or
        `server_credentials`), else None: the shape grpc's certificate fetcher
        wants. Uses the names of the last `server_credentials` call."""
        with self._lock:
            if self._server_names is None:
                raise CaError("call server_credentials() first: it sets the names")
            current = self._current_server_cert(self._server_names)
            if current.chain_pem == self._served_chain:
                return None
            self._served_chain = current.chain_pem
            return current.chain_pem, current.key_pem

    def grpc_server_credentials(
        self, dns_names: Sequence[str], ip_addresses: Sequence[str] = ()
    ) -> Any:
        """`grpc.ServerCredentials` that follow the CA: grpc asks before each
        new connection's handshake whether the certificate changed, so renewal
        and root rotation reach new connections without a restart. Clients
        authenticate with bearer tokens, so no client certificate is required.
        """
        import grpc

        chain, key = self.server_credentials(dns_names, ip_addresses)

        def fetch() -> Any:
            try:
                changed = self.server_cert_if_changed()
            except Exception:
                log.exception("could not renew the control plane's serving certificate")
                return None
            if changed is None:
                return None
            log.info("serving a renewed control-plane certificate")
            return grpc.ssl_server_certificate_configuration([(changed[1], changed[0])])

        return grpc.dynamic_ssl_server_credentials(
            grpc.ssl_server_certificate_configuration([(key, chain)]),
            fetch,
            require_client_authentication=False,
        )

    def control_plane_client_cert(self) -> tuple[bytes, bytes]:
        """(certificate chain PEM, private key PEM) of the control plane's own SPIFFE
        identity (`identity.control_plane_id`), the client certificate it reaches
        sidecars' `gossamer_admin` listeners with (proxyadmin/). Renewed as the
        serving certificate: at half its life, and when the signer changed."""
        with self._lock:
            now = self._clock()
            signer = self._state.signer
            cached = self._client
            if (cached is not None and cached.signer == signer.fingerprint()
                    and not rotation.should_renew(cached.not_before, cached.not_after, now)):
                return cached.chain_pem, cached.key_pem
            identity = control_plane_id(self._trust_domain)
            key = pki.generate_workload_key()
            issued = pki.sign_workload_csr(signer, pki.make_csr(key, identity), identity, now,
                                           self.server_ttl, self.server_ttl)
            key_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
            self._client = _ServerCert(((), ()), signer.fingerprint(),
                                       issued.chain_pem.encode("ascii"), key_pem,
                                       issued.not_before, issued.not_after)
            log.info("issued the control plane's client certificate %s (serial %s)",
                     identity, issued.serial)
            return self._client.chain_pem, self._client.key_pem

    def _current_server_cert(
        self, names: tuple[tuple[str, ...], tuple[str, ...]]
    ) -> _ServerCert:
        now = self._clock()
        signer = self._state.signer
        cached = self._server
        if (cached is not None and cached.names == names
                and cached.signer == signer.fingerprint()
                and not rotation.should_renew(cached.not_before, cached.not_after, now)):
            return cached
        chain, key = servercert.issue_server_cert(signer, names[0], names[1], now, self.server_ttl)
        info = pki.cert_info(chain)
        self._server = _ServerCert(
            names, signer.fingerprint(), chain, key,
            datetime.fromisoformat(info["not_before"]),
            datetime.fromisoformat(info["not_after"]),
        )
        return self._server

    # --- root rotation ---------------------------------------------------------------

    async def begin_root_rotation(self, plugin: Plugin | None = None) -> None:
        """STABLE -> DISTRIBUTING: add a new root (a fresh built-in one, or the
        given plug-in CA) to the bundle; the current CA keeps signing."""
        now = self._clock()
        new = (pki.load_plugin(*plugin, now, trust_domain=self._trust_domain) if plugin
               else pki.generate_root(self._trust_domain, now))
        await self._commit(rotation.begin(self._state, new))

    async def switch_signer(self) -> None:
        """DISTRIBUTING -> SWITCHED: sign with the new CA from now on."""
        await self._commit(rotation.switch(self._state))

    async def finish_root_rotation(self) -> None:
        """SWITCHED -> STABLE: drop the old root from the bundle."""
        await self._commit(rotation.finish(self._state))

    async def _commit(self, state: RootState) -> None:
        """Persist first, adopt second: memory never runs ahead of the store."""
        try:
            stored = await self._store.put(KIND, NAMESPACE, NAME,
                                           _encode(self._trust_domain, state),
                                           expected_revision=self._revision)
        except Conflict:
            await self.reload()
            raise CaError("the CA state was changed by someone else (another replica?); "
                          f"reloaded it, now in phase {self.phase}: check and retry") from None
        self._state = state
        self._revision = stored.revision
        log.info("CA root rotation: phase %s, signer %s, bundle %s",
                 state.phase, state.signer, self.bundle_version())


def _encode(trust_domain: str, state: RootState) -> dict[str, Any]:
    return {
        "trust_domain": trust_domain,
        "phase": state.phase.value,
        "signer_index": state.signer_index,
        "roots": [
            {"cert_pem": ca.cert_pem(), "key_pem": ca.key_pem(), "chain_pem": ca.chain_pem()}
            for ca in state.roots
        ],
    }


def _decode(stored: StoredObject, trust_domain: str) -> RootState:
    body = stored.body
    if body.get("trust_domain") != trust_domain:
        raise CaError(f"the store holds the CA of trust domain {body.get('trust_domain')!r}, "
                      f"not {trust_domain!r}; a trust domain cannot change under a running mesh")
    try:
        roots = tuple(pki.load_keypair(r["cert_pem"], r["key_pem"], r["chain_pem"])
                      for r in body["roots"])
        return RootState(roots, int(body["signer_index"]), Phase(body["phase"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CaError(f"the stored CA state is malformed: {exc!r}") from None
