"""Zero trust on the running demo mesh: mTLS modes, bad certificates, the
authorization matrix, JWT, and tokens. Everything real: Envoy, TLS, the CA."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib import resources as pkg
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from envoy.config.core.v3 import base_pb2 as core_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from gossamer.ca import api as ca_api
from gossamer.ca import pki
from gossamer.ca.authority import MeshCA
from gossamer.contract.names import CONTROL_PLANE_NAME
from gossamer.contract.node import NodeMetadata
from gossamer.contract.spiffe import SpiffeId
from gossamer.store.sqlite import SqliteStore
from gossamer.testing.envoy import free_port
from tests.e2e.conftest import Mesh, running_mesh

pytestmark = pytest.mark.slow
TD = "gossamer.local"


DB_PORT = free_port()  # the client's dedicated local port for the TCP service
TCP_APP = f"""
---
apiVersion: mesh.gossamer.dev/v1alpha1
kind: Service
metadata: {{name: db}}
spec: {{selector: {{app: db}}, ports: [{{port: 5432, protocol: tcp}}]}}
---
apiVersion: local.gossamer.dev/v1alpha1
kind: Process
metadata: {{name: db}}
spec:
  service: db
  protocol: tcp
  command: ["{{python}}", "-m", "gossamer.demo.tcpecho", "--port", "{{port}}"]
---
apiVersion: local.gossamer.dev/v1alpha1
kind: Process
metadata: {{name: reporter}}
spec:
  service: reporter
  inbound: false
  upstreams: ["db:5432={DB_PORT}"]
  command: ["{{python}}", "-c", "import time; time.sleep(3600)"]
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    demo = pkg.files("gossamer.demo").joinpath("demo.yaml").read_text()
    yield from running_mesh(tmp_path_factory, "security", text=demo + TCP_APP)


def _settle(mesh: Mesh) -> None:
    """Wait for a policy change to hold for every connection. Envoy applies a
    changed filter chain to new connections at once and drains connections
    already open within the agent's --drain-seconds (1 s in these tests)."""
    mesh.wait_synced()
    time.sleep(mesh.run.drain_seconds + 0.5)


def _mesh_ca(mesh: Mesh) -> pki.CaKeyPair:
    """The mesh CA's signer, read from the control plane's store file, so the test
    can mint certificates the mesh would otherwise never issue (expired ones)."""
    async def load() -> pki.CaKeyPair:
        store = SqliteStore(str(mesh.run.state_dir / "store" / "gossamer.db"))
        try:
            return (await MeshCA.open(store, TD)).signer
        finally:
            await store.close()
    return asyncio.run(load())


def _client_cert(tmp: Path, ca: pki.CaKeyPair, account: str, *, now: datetime,
                 ttl: timedelta) -> tuple[Path, Path]:
    key = pki.generate_workload_key()
    identity = SpiffeId(TD, "default", account)
    issued = pki.sign_workload_csr(ca, pki.make_csr(key, identity), identity, now, ttl,
                                   max_ttl=timedelta(days=1))
    stem = tmp / f"{account}-{issued.serial}"
    cert, key_file = stem.with_suffix(".pem"), stem.with_suffix(".key")
    cert.write_text(issued.chain_pem)
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert, key_file


def _tls_get(port: int, cert: tuple[Path, Path] | None) -> str:
    """GET / over TLS to a sidecar's inbound port; returns the status line or the error."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # we test the server's checks of *our* certificate
    if cert:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                ctx.wrap_socket(raw) as tls:
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: catalog\r\nConnection: close\r\n\r\n")
            data = tls.recv(200)
            return data.split(b"\r\n")[0].decode() if data else "closed"
    except (ssl.SSLError, OSError) as exc:
        return f"refused: {type(exc).__name__}"


def _plain_get(port: int) -> str:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: catalog\r\nConnection: close\r\n\r\n")
            data = s.recv(200)
            return data.split(b"\r\n")[0].decode() if data else "closed"
    except OSError as exc:
        return f"refused: {type(exc).__name__}"


PERMISSIVE = """
apiVersion: mesh.gossamer.dev/v1alpha1
kind: PeerAuthentication
metadata: {name: catalog-permissive}
spec:
  targetRef: {kind: Service, name: catalog}
  mtls: {mode: PERMISSIVE}
"""


def test_strict_refuses_plaintext_and_permissive_accepts_it(mesh: Mesh) -> None:
    port = mesh.instance("catalog-v1-0").inbound_port
    assert _plain_get(port).startswith(("refused", "closed"))
    mesh.apply(PERMISSIVE)
    _settle(mesh)
    assert _plain_get(port) == "HTTP/1.1 200 OK"
    mesh.delete("PeerAuthentication", "default", "catalog-permissive")
    _settle(mesh)
    assert _plain_get(port).startswith(("refused", "closed"))


def test_bad_client_certificates_are_refused(mesh: Mesh, tmp_path: Path) -> None:
    port = mesh.instance("catalog-v1-0").inbound_port
    now = datetime.now(UTC)
    ca = _mesh_ca(mesh)
    good = _client_cert(tmp_path, ca, "frontend", now=now, ttl=timedelta(minutes=5))
    assert _tls_get(port, good) == "HTTP/1.1 200 OK"  # the control: a mesh identity works
    expired = _client_cert(tmp_path, ca, "frontend", now=now - timedelta(hours=2),
                           ttl=timedelta(minutes=5))
    foreign_ca = pki.generate_root("elsewhere.example", now)
    foreign = _client_cert(tmp_path, foreign_ca, "frontend", now=now, ttl=timedelta(minutes=5))
    assert _tls_get(port, expired).startswith(("refused", "closed"))
    assert _tls_get(port, foreign).startswith(("refused", "closed"))
    assert _tls_get(port, None).startswith(("refused", "closed"))


class RogueServer:
    """A TLS server with a valid mesh certificate for the WRONG identity."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.requests = 0
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(cert), str(key))
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    if tls.recv(100):
                        self.requests += 1
                        tls.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nrogue")
            except (ssl.SSLError, OSError):
                pass


def test_callers_refuse_a_destination_with_the_wrong_identity(mesh: Mesh,
                                                             tmp_path: Path) -> None:
    ca = _mesh_ca(mesh)
    cert = _client_cert(tmp_path, ca, "rogue", now=datetime.now(UTC), ttl=timedelta(hours=1))
    rogue = RogueServer(*cert)
    try:
        # An admin mistake (or a compromised registry): the rogue becomes an
        # endpoint of inventory, the only one.
        mesh.apply(f"""
apiVersion: mesh.gossamer.dev/v1alpha1
kind: Service
metadata: {{name: inventory-rogue}}
spec: {{selector: {{app: nothing}}, ports: [{{port: 80}}]}}
---
apiVersion: mesh.gossamer.dev/v1alpha1
kind: Workload
metadata: {{name: rogue-0, labels: {{app: nothing}}}}
spec: {{service: inventory-rogue, address: 127.0.0.1, port: {rogue.port}}}
""")
        mesh.wait_synced()
        with mesh.client_via("frontend") as client:
            statuses = {client.get("http://inventory-rogue/").status_code for _ in range(5)}
        assert statuses == {503}
        assert rogue.requests == 0  # not one request reached it
        admin = mesh.instance("frontend").admin_port
        stats = httpx.get(f"http://127.0.0.1:{admin}/stats?filter=inventory-rogue.*ssl",
                          trust_env=False).text
        assert "ssl.fail_verify_san" in stats
        assert "ssl.fail_verify_san: 0" not in stats
    finally:
        rogue.sock.close()
        mesh.delete("Workload", "default", "rogue-0")
        mesh.delete("Service", "default", "inventory-rogue")


POLICIES = """
apiVersion: mesh.gossamer.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: default-deny, namespace: gossamer-system}
spec: {}
---
apiVersion: mesh.gossamer.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: catalog-from-frontend}
spec:
  targetRef: {kind: Service, name: catalog}
  rules:
  - from: [{source: {principals: ["gossamer.local/ns/default/sa/frontend"]}}]
    to: [{operation: {methods: [GET], paths: ["/items", "/items/*"]}}]
---
apiVersion: mesh.gossamer.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: inventory-from-catalog}
spec:
  targetRef: {kind: Service, name: inventory}
  rules:
  - from: [{source: {principals: ["spiffe://gossamer.local/ns/default/sa/catalog"]}}]
    to: [{operation: {methods: [GET], paths: [/stock]}}]
"""
DENY_SECRET = """
apiVersion: mesh.gossamer.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: no-secrets}
spec:
  targetRef: {kind: Service, name: catalog}
  action: DENY
  rules:
  - to: [{operation: {paths: ["/items/secret"]}}]
"""


def _call(mesh: Mesh, method: str, url: str, **kw: Any) -> httpx.Response:
    with mesh.client_via("frontend") as client:
        return client.request(method, url, **kw)


def _authz_cli(mesh: Mesh, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GOSSAMER_TOKEN": mesh.run.admin_token_file.read_text().strip()}
    return subprocess.run([sys.executable, "-m", "gossamer", "authz", "check", *args,
                           "--server", mesh.run.server], capture_output=True, text=True,
                          timeout=60, check=False, env=env)


def test_authorization_matrix(mesh: Mesh) -> None:
    mesh.apply(POLICIES)
    _settle(mesh)
    try:
        ok = _call(mesh, "GET", "http://catalog/items")
        assert ok.status_code == 200  # allowed edge, and catalog -> inventory allowed too
        assert ok.json()["upstreams"]["http://inventory/stock"]["status"] == 200
        denied_edge = _call(mesh, "GET", "http://inventory/stock")
        # frontend -> inventory: no ALLOW rule admits frontend, so its sidecar is not
        # sent inventory at all (the scope inferred from the policies, translate/reach.py)
        assert denied_edge.status_code == 404
        assert "no mesh service matches" in denied_edge.text
        assert _call(mesh, "POST", "http://catalog/items").status_code == 403  # method rule
        assert _call(mesh, "GET", "http://catalog/admin").status_code == 403  # path rule
        assert _call(mesh, "GET", "http://catalog/items/secret").status_code == 200
        mesh.apply(DENY_SECRET)
        _settle(mesh)
        secret = _call(mesh, "GET", "http://catalog/items/secret")
        assert secret.status_code == 403  # DENY wins over the matching ALLOW
        assert "default/no-secrets" in secret.text
        assert _call(mesh, "GET", "http://catalog/items").status_code == 200

        allowed = _authz_cli(mesh, "--from", "frontend", "--to", "catalog", "--path", "/items")
        assert allowed.returncode == 0, allowed.stderr
        assert allowed.stdout.startswith("ALLOWED")
        assert "default/catalog-from-frontend" in allowed.stdout
        post = _authz_cli(mesh, "--from", "frontend", "--to", "catalog", "--path", "/items",
                          "--method", "POST")
        assert post.returncode == 1
        assert post.stdout.startswith("DENIED (403)")
        secret_cli = _authz_cli(mesh, "--from", "frontend", "--to", "catalog", "--path",
                                "/items/secret")
        assert "default/no-secrets" in secret_cli.stdout

        # Default deny: without its ALLOW policy, catalog refuses even frontend (and
        # leaves frontend's inferred scope: 404 from frontend's own sidecar).
        mesh.delete("AuthorizationPolicy", "default", "catalog-from-frontend")
        _settle(mesh)
        assert _call(mesh, "GET", "http://catalog/items").status_code == 404
    finally:
        for ns, name in (("gossamer-system", "default-deny"), ("default", "no-secrets"),
                         ("default", "catalog-from-frontend"),
                         ("default", "inventory-from-catalog")):
            mesh.api.delete(f"/api/v1/resources/AuthorizationPolicy/{ns}/{name}")
        mesh.applied = max(mesh.applied, mesh.api.get("/healthz").json()["revision"])
        _settle(mesh)
    assert _call(mesh, "GET", "http://inventory/stock").status_code == 200


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(key: ec.EllipticCurvePrivateKey, claims: dict[str, Any]) -> str:
    header = _b64(json.dumps({"alg": "ES256", "typ": "JWT", "kid": "k1"}).encode())
    payload = _b64(json.dumps(claims).encode())
    der = key.sign(f"{header}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return f"{header}.{payload}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def _jwks(key: ec.EllipticCurvePrivateKey) -> str:
    nums = key.public_key().public_numbers()
    return json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256",
                                 "use": "sig", "x": _b64(nums.x.to_bytes(32, "big")),
                                 "y": _b64(nums.y.to_bytes(32, "big"))}]})


class JwksServer:
    """Serves a JWKS document over HTTP on loopback, and counts fetches."""

    def __init__(self, body: str) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.fetches += 1
                data = body.encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.fetches = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_jwt_authentication_and_claims(mesh: Mesh) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    remote_key = ec.generate_private_key(ec.SECP256R1())
    jwks = JwksServer(_jwks(remote_key))
    mesh.apply(f"""
apiVersion: mesh.gossamer.dev/v1alpha1
kind: RequestAuthentication
metadata: {{name: users}}
spec:
  targetRef: {{kind: Service, name: catalog}}
  jwtRules:
  - issuer: https://login.test
    audiences: [catalog]
    jwks: '{_jwks(key)}'
    outputClaimToHeaders: [{{header: x-jwt-sub, claim: sub}}]
  - issuer: https://remote.test
    jwksUri: http://127.0.0.1:{jwks.port}/jwks.json
---
apiVersion: mesh.gossamer.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: private-needs-jwt}}
spec:
  targetRef: {{kind: Service, name: catalog}}
  action: DENY
  rules:
  - from: [{{source: {{notRequestPrincipals: ["*"]}}}}]
    to: [{{operation: {{paths: ["/private/*"]}}}}]
  - to: [{{operation: {{paths: ["/admin/*"]}}}}]
    when: [{{key: "request.auth.claims[groups]", notValues: [admins]}}]
""")
    _settle(mesh)
    now = int(time.time())
    base = {"iss": "https://login.test", "aud": "catalog", "sub": "alice", "exp": now + 300,
            "groups": ["admins"]}

    def get(path: str, claims: dict[str, Any] | None) -> httpx.Response:
        headers = {"authorization": f"Bearer {_jwt(key, claims)}"} if claims else {}
        return _call(mesh, "GET", f"http://catalog{path}", headers=headers)

    try:
        valid = get("/private/x", base)
        assert valid.status_code == 200
        assert valid.json()["headers"]["x-jwt-sub"] == "alice"  # claim forwarded as a header
        # Envoy allows 60 s of clock skew; this one expired ten minutes ago.
        assert get("/private/x", {**base, "exp": now - 600}).status_code == 401
        assert get("/private/x", {**base, "iss": "https://evil.test"}).status_code == 401
        assert get("/private/x", {**base, "aud": "someone-else"}).status_code == 401
        forged = _jwt(ec.generate_private_key(ec.SECP256R1()), base)
        assert _call(mesh, "GET", "http://catalog/private/x",
                     headers={"authorization": f"Bearer {forged}"}).status_code == 401
        assert get("/private/x", None).status_code == 403   # missing token where required
        assert get("/public", None).status_code == 200      # not required elsewhere
        assert get("/admin/x", base).status_code == 200      # claims: groups has admins
        assert get("/admin/x", {**base, "groups": ["users"]}).status_code == 403
        # The second issuer's keys come from its jwksUri, fetched by Envoy itself.
        remote = {**base, "iss": "https://remote.test", "aud": "anyone"}
        token = _jwt(remote_key, remote)
        via_uri = _call(mesh, "GET", "http://catalog/private/x",
                        headers={"authorization": f"Bearer {token}"})
        assert via_uri.status_code == 200
        assert jwks.fetches >= 1
        wrong_key = _jwt(key, remote)  # signed with the other issuer's key
        assert _call(mesh, "GET", "http://catalog/private/x",
                     headers={"authorization": f"Bearer {wrong_key}"}).status_code == 401
    finally:
        jwks.close()
        mesh.delete("AuthorizationPolicy", "default", "private-needs-jwt")
        mesh.delete("RequestAuthentication", "default", "users")
        _settle(mesh)


def _token(mesh: Mesh, **body: Any) -> str:
    resp = mesh.api.post("/api/v1/tokens", json=body)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["token"])


def test_join_token_cannot_obtain_another_identity(mesh: Mesh) -> None:
    token = _token(mesh, scope="join", service="catalog")
    key = pki.generate_workload_key()
    bundle = mesh.api.get("/api/v1/ca").json()["bundle_pem"].encode()

    def ask(identity: SpiffeId) -> grpc.StatusCode | None:
        creds = grpc.ssl_channel_credentials(root_certificates=bundle)
        with grpc.secure_channel(f"127.0.0.1:{mesh.run.xds_port}", creds, options=[
                ("grpc.ssl_target_name_override", CONTROL_PLANE_NAME)]) as channel:
            call = channel.unary_unary(ca_api.CREATE_CERTIFICATE)
            req = ca_api.CertificateRequest(csr_pem=pki.make_csr(key, identity).decode())
            try:
                call(req.encode(), metadata=(("authorization", f"Bearer {token}"),),
                     timeout=10)
            except grpc.RpcError as exc:
                return exc.code()  # type: ignore[no-any-return]
        return None

    assert ask(SpiffeId(TD, "default", "catalog")) is None
    assert ask(SpiffeId(TD, "default", "inventory")) == grpc.StatusCode.PERMISSION_DENIED
    assert ask(SpiffeId(TD, "other", "catalog")) == grpc.StatusCode.PERMISSION_DENIED

    # Nor may it register a workload of another service, or wear its app label.
    api = httpx.Client(base_url=mesh.run.server, trust_env=False,
                       headers={"Authorization": f"Bearer {token}"})
    squat = {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Workload",
             "metadata": {"name": "squatter", "labels": {"app": "inventory"}},
             "spec": {"service": "catalog", "address": "127.0.0.1", "port": 1}}
    assert api.post("/api/v1/apply", json=squat).status_code == 403
    squat["spec"]["service"] = "inventory"  # type: ignore[index]
    assert api.post("/api/v1/apply", json=squat).status_code == 403


def _ads(mesh: Mesh, token: str | None, service: str,
         revoke: str | None = None) -> grpc.StatusCode | None:
    """Open a delta ADS stream as a sidecar of `service` with `token`: None if the
    control plane answers its first request, else the stream's status code. With
    `revoke`, revoke that token once answered and return how the stream ends."""
    bundle = mesh.api.get("/api/v1/ca").json()["bundle_pem"].encode()
    spec = NodeMetadata(node_id=f"probe-{service}.default", service=service,
                        namespace="default", workload=f"probe-{service}",
                        inbound_port=free_port(), inbound_address="127.0.0.1",
                        app_port=free_port(), app_protocol=None, outbound_port=free_port(),
                        admin_port=free_port())
    node = core_pb2.Node(id=spec.node_id)
    node.metadata.update(spec.to_metadata())
    first = discovery_pb2.DeltaDiscoveryRequest(
        node=node, type_url="type.googleapis.com/envoy.config.cluster.v3.Cluster")
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    done = threading.Event()

    def requests() -> Iterator[discovery_pb2.DeltaDiscoveryRequest]:
        yield first
        done.wait(15)  # keep the stream open, as Envoy does, until we have the answer

    creds = grpc.ssl_channel_credentials(root_certificates=bundle)
    with grpc.secure_channel(f"127.0.0.1:{mesh.run.xds_port}", creds, options=[
            ("grpc.ssl_target_name_override", CONTROL_PLANE_NAME)]) as channel:
        stream = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        responses = stream.DeltaAggregatedResources(requests(), metadata=metadata,
                                                    timeout=10)
        try:
            answer = next(responses)
            assert answer.resources, answer  # its clusters
            if revoke is not None:
                assert mesh.api.delete(f"/api/v1/tokens/{revoke}").status_code == 200
                for _ in responses:  # until the control plane ends the stream
                    pass
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
        finally:
            done.set()
            responses.cancel()
    return None


def test_xds_serves_a_join_token_only_its_own_identity_until_revoked(mesh: Mesh) -> None:
    token = _token(mesh, scope="join", service="catalog")
    assert _ads(mesh, token, "catalog") is None
    assert _ads(mesh, token, "inventory") == grpc.StatusCode.PERMISSION_DENIED
    assert _ads(mesh, None, "catalog") == grpc.StatusCode.UNAUTHENTICATED
    assert _ads(mesh, token[:-1] + ("A" if token[-1] != "A" else "B"),
                "catalog") == grpc.StatusCode.UNAUTHENTICATED
    token_id = token.split("_")[1]
    # Revoked: the stream it has open is ended, and it may not open another.
    assert _ads(mesh, token, "catalog", revoke=token_id) == grpc.StatusCode.UNAUTHENTICATED
    assert _ads(mesh, token, "catalog") == grpc.StatusCode.UNAUTHENTICATED


def test_api_refuses_writes_without_a_proper_token(mesh: Mesh) -> None:
    doc = {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Service",
           "metadata": {"name": "sneaky"}, "spec": {"ports": [{"port": 80}]}}
    anon = httpx.Client(base_url=mesh.run.server, trust_env=False)
    assert anon.post("/api/v1/apply", json=doc).status_code == 401
    assert anon.get("/api/v1/resources/Service").status_code == 401
    assert anon.get("/healthz").status_code == 200  # liveness stays open
    reader = httpx.Client(base_url=mesh.run.server, trust_env=False, headers={
        "Authorization": f"Bearer {_token(mesh, scope='read')}"})
    assert reader.get("/api/v1/resources/Service").status_code == 200
    refused = reader.post("/api/v1/apply", json=doc)
    assert refused.status_code == 403
    assert "admin token" in refused.json()["error"]
    assert reader.post("/api/v1/tokens", json={"scope": "admin"}).status_code == 403
    assert reader.delete("/api/v1/resources/Service/default/catalog").status_code == 403
    joiner = httpx.Client(base_url=mesh.run.server, trust_env=False, headers={
        "Authorization": f"Bearer {_token(mesh, scope='join', service='catalog')}"})
    assert joiner.post("/api/v1/apply", json=doc).status_code == 403
    revoked = _token(mesh, scope="read")
    token_id = revoked.split("_")[1]
    assert mesh.api.delete(f"/api/v1/tokens/{token_id}").status_code == 200
    time.sleep(0.1)
    gone = httpx.get(mesh.run.server + "/api/v1/resources/Service", trust_env=False,
                     headers={"Authorization": f"Bearer {revoked}"})
    assert gone.status_code == 401


def test_identity_cli_shows_the_served_certificate(mesh: Mesh) -> None:
    env = {**os.environ, "GOSSAMER_TOKEN": mesh.run.admin_token_file.read_text().strip()}
    out = subprocess.run([sys.executable, "-m", "gossamer", "identity", "catalog-v1-0",
                          "--server", mesh.run.server], capture_output=True, text=True,
                         timeout=60, check=False, env=env)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(":", 1) for line in out.stdout.splitlines())
    assert lines["spiffe id"].strip() == "spiffe://gossamer.local/ns/default/sa/catalog"
    cert_pem = httpx.get(f"http://127.0.0.1:{mesh.instance('catalog-v1-0').admin_port}/certs",
                         trust_env=False).json()
    # /certs lists the trust bundle and the workload certificate in no fixed order.
    serial = next(e["cert_chain"][0]["serial_number"] for e in cert_pem["certificates"]
                  if e.get("cert_chain"))
    assert lines["serial"].strip() == serial


def _tcp_echo(port: int) -> bytes:
    """Send a line through the client's TCP upstream port; b"" when the mesh closed it."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"ping")
            return s.recv(100)
    except OSError:
        return b""


def test_tcp_over_mtls_and_denied_tcp_is_closed(mesh: Mesh) -> None:
    assert _tcp_echo(DB_PORT) == b"echo:ping"  # reporter -> db, mutual TLS, tcp_proxy
    mesh.apply("""
apiVersion: mesh.gossamer.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: db-no-reporter}
spec:
  targetRef: {kind: Service, name: db}
  action: DENY
  rules:
  - from: [{source: {principals: ["gossamer.local/ns/default/sa/reporter"]}}]
""")
    _settle(mesh)
    try:
        assert _tcp_echo(DB_PORT) == b""  # the connection is closed, nothing echoed
    finally:
        mesh.delete("AuthorizationPolicy", "default", "db-no-reporter")
        _settle(mesh)
    assert _tcp_echo(DB_PORT) == b"echo:ping"
