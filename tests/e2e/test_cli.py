"""The CLI as a user types it, against a real `gossamer control-plane` process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from gossamer.testing.envoy import free_port
from tests.postgres_server import PostgresServer, postgres_server, postgres_url

pytestmark = pytest.mark.slow
__all__ = ["postgres_server", "postgres_url"]

SERVICE = """
apiVersion: mesh.gossamer.dev/v1alpha1
kind: Service
metadata: {name: catalog}
spec: {selector: {app: catalog}, ports: [{port: 80}]}
"""
ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: catalog}
spec:
  parentRefs: [{name: catalog}]
  rules: [{backendRefs: [{name: catalog}, {name: ghost}]}]
"""


class ControlPlaneProcess:
    def __init__(self, state: Path, extra: tuple[str, ...] = ()) -> None:
        self.state = state
        self.extra = extra
        self.api_port, self.xds_port = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gossamer", "control-plane", "--state-dir", str(self.state),
             "--api-port", str(self.api_port), "--xds-port", str(self.xds_port),
             *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 60  # a loaded machine takes a while to import it all
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", trust_env=False, timeout=1).is_success:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()  # never leave it running behind a failed start
        raise AssertionError("control plane did not start")

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    @property
    def admin_token(self) -> str:
        return (self.state / "admin-token").read_text().strip()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def cp(tmp_path: Path) -> Iterator[ControlPlaneProcess]:
    plane = ControlPlaneProcess(tmp_path / "state")
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()


def gossamer(cp: ControlPlaneProcess | None, *args: str,
             stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["GOSSAMER_SERVER"] = cp.url if cp else f"http://127.0.0.1:{free_port()}"
    if cp:
        env["GOSSAMER_TOKEN"] = cp.admin_token
    return subprocess.run([sys.executable, "-m", "gossamer", *args], input=stdin,
                          capture_output=True, text=True, env=env, timeout=60, check=False)


def test_apply_get_delete_round_trip(cp: ControlPlaneProcess) -> None:
    out = gossamer(cp, "apply", "-f", "-", stdin=SERVICE + "---\n" + ROUTE)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["service/catalog created", "httproute/catalog created"]
    again = gossamer(cp, "apply", "-f", "-", stdin=SERVICE)
    assert again.stdout.strip() == "service/catalog unchanged"

    got = json.loads(gossamer(cp, "get", "httproute", "catalog", "-o", "json").stdout)
    assert got["spec"]["rules"][0]["backendRefs"][1]["name"] == "ghost"
    conditions = {c["type"]: c for c in got["status"]["conditions"]}
    assert conditions["ResolvedRefs"]["reason"] == "BackendNotFound"

    table = gossamer(cp, "get", "routes").stdout
    assert "ResolvedRefs=False (BackendNotFound)" in table
    docs = list(yaml.safe_load_all(gossamer(cp, "get", "services", "-o", "yaml").stdout))
    assert [d["metadata"]["name"] for d in docs] == ["catalog"]

    deleted = gossamer(cp, "delete", "httproute", "catalog")
    assert deleted.returncode == 0
    assert deleted.stdout.strip() == "httproute/catalog deleted"
    missing = gossamer(cp, "delete", "httproute", "catalog")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: HTTPRoute default/catalog not found"


def test_invalid_document_is_one_line_with_field_and_reason(cp: ControlPlaneProcess) -> None:
    bad = SERVICE.replace("port: 80", "port: 70000")
    out = gossamer(cp, "apply", "-f", "-", stdin=bad)
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith("error: invalid Service 'catalog': spec.ports[0].port:")
    # Nothing was stored.
    assert json.loads(gossamer(cp, "get", "services", "-o", "json").stdout) == []


def test_api_rejects_invalid_document_with_field_paths(cp: ControlPlaneProcess) -> None:
    doc = yaml.safe_load(ROUTE)
    doc["spec"]["rules"][0]["matches"] = [{"path": {"type": "Exact", "value": "no-slash"}}]
    resp = httpx.post(cp.url + "/api/v1/apply", json=doc, trust_env=False, headers=cp.auth)
    assert resp.status_code == 422
    fields = resp.json()["fields"]
    assert fields == [{"path": "spec.rules[0].matches[0].path.value",
                       "reason": "an Exact or PathPrefix path must start with '/'"}]


def test_stale_resource_version_is_a_conflict(cp: ControlPlaneProcess) -> None:
    gossamer(cp, "apply", "-f", "-", stdin=SERVICE)
    doc = json.loads(gossamer(cp, "get", "service", "catalog", "-o", "json").stdout)
    doc.pop("status", None)
    doc["spec"]["ports"][0]["port"] = 81
    first = httpx.post(cp.url + "/api/v1/apply", json=doc, trust_env=False, headers=cp.auth)
    assert first.status_code == 200
    # The same, now stale, resourceVersion again.
    second = httpx.post(cp.url + "/api/v1/apply", json=doc, trust_env=False, headers=cp.auth)
    assert second.status_code == 409
    assert "stale" in second.json()["error"]


def test_store_survives_restart(cp: ControlPlaneProcess) -> None:
    gossamer(cp, "apply", "-f", "-", stdin=SERVICE + "---\n" + ROUTE)
    before = httpx.get(cp.url + "/healthz", trust_env=False).json()["revision"]
    cp.stop()
    cp.start()
    names = [d["metadata"]["name"] for d in
             json.loads(gossamer(cp, "get", "routes", "-o", "json").stdout)]
    assert names == ["catalog"]
    assert httpx.get(cp.url + "/healthz", trust_env=False).json()["revision"] == before


def test_errors_without_a_control_plane_are_one_line() -> None:
    out = gossamer(None, "get", "services")
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1
    assert out.stderr.startswith("error: cannot reach the control plane")
    unknown = gossamer(None, "get", "gizmos")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("error: invalid document: kind: unknown kind 'gizmos'")


def test_openapi_document_lists_the_api(cp: ControlPlaneProcess) -> None:
    spec = httpx.get(cp.url + "/openapi.json", trust_env=False).json()
    for path in ("/api/v1/apply", "/api/v1/resources/{kind}", "/api/v1/proxies",
                 "/api/v1/workloads/{namespace}/{name}/heartbeat"):
        assert path in spec["paths"]


def test_agent_startup_failures_are_one_line(cp: ControlPlaneProcess, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text(httpx.get(cp.url + "/api/v1/ca", headers=cp.auth, trust_env=False)
                  .json()["bundle_pem"])
    agent_env = dict(os.environ, GOSSAMER_TOKEN=cp.admin_token, GOSSAMER_CA_FILE=str(ca))
    no_token = subprocess.run(
        [sys.executable, "-m", "gossamer", "proxy", "--service", "web", "--app-port", "1",
         "--server", cp.url, "--workdir", str(tmp_path / "t")],
        env={k: v for k, v in agent_env.items() if k != "GOSSAMER_TOKEN"},
        capture_output=True, text=True, timeout=60, check=False)
    assert no_token.returncode == 1
    assert no_token.stderr.startswith("error: the control plane at "), no_token.stderr
    assert "refused the token" in no_token.stderr
    bad_envoy = subprocess.run(
        [sys.executable, "-m", "gossamer", "proxy", "--service", "web", "--app-port", "1",
         "--server", cp.url, "--workdir", str(tmp_path / "a")],
        env=dict(agent_env, GOSSAMER_ENVOY="/nonexistent/envoy"), capture_output=True,
        text=True, timeout=60, check=False)
    assert bad_envoy.returncode == 1
    assert bad_envoy.stderr == "error: GOSSAMER_ENVOY=/nonexistent/envoy is not an executable " \
                               "file\n"
    refused = subprocess.run(
        [sys.executable, "-m", "gossamer", "proxy", "--service", "Bad_Name", "--app-port", "1",
         "--server", cp.url, "--workdir", str(tmp_path / "b")],
        env=agent_env, capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert "spec.service: must be a Service name" in refused.stderr
    unknown = subprocess.run(
        [sys.executable, "-m", "gossamer", "proxy", "--service", "web", "--app-port", "1",
         "--bogus"], capture_output=True, text=True, timeout=60, check=False)
    assert unknown.returncode == 2
    assert "No such option: --bogus" in unknown.stderr


def test_up_rejects_unknown_placeholders(tmp_path: Path) -> None:
    app = tmp_path / "app.yaml"
    app.write_text("""
apiVersion: local.gossamer.dev/v1alpha1
kind: Process
metadata: {name: web}
spec: {service: web, command: ["serve", "--port", "{prot}"]}
""")
    out = subprocess.run([sys.executable, "-m", "gossamer", "up", "-f", str(app),
                          "--state-dir", str(tmp_path / "s")],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1, out.stderr
    assert "spec.command" in out.stderr
    assert "unknown placeholder {prot}" in out.stderr


def test_metrics_endpoint_serves_prometheus_text(cp: ControlPlaneProcess) -> None:
    resp = httpx.get(cp.url + "/metrics", trust_env=False)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    assert "gossamer_xds_streams" in resp.text
    # `gossamer control-plane` runs with its GC policy (controlplane/gcpause.py): young
    # collections happen all the time, and each pause is measured.
    assert 'gossamer_gc_pause_seconds_count{generation="0"}' in resp.text


def _org_pki(tmp: Path) -> tuple[Any, list[str]]:
    """An organisation's root and an intermediate for the mesh, as an operator has them."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from gossamer.ca import pki

    now = datetime.now(UTC)
    root = pki.generate_root("corp.example", now)
    key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.KeyUsage(digital_signature=False, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          key_cert_sign=True, crl_sign=True, encipher_only=False,
                          decipher_only=False)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Corp mesh CA")]))
            .issuer_name(root.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                root.key.public_key()), critical=False)
            .sign(root.key, hashes.SHA256()))
    files = {"int.pem": cert.public_bytes(serialization.Encoding.PEM),
             "int.key": key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()),
             "chain.pem": root.cert_pem().encode()}
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    args = ["--ca-cert", str(tmp / "int.pem"), "--ca-key", str(tmp / "int.key"),
            "--ca-chain", str(tmp / "chain.pem")]
    return (root, cert), args


def test_plugin_intermediate_ca_chains_to_the_organisations_root(tmp_path: Path) -> None:
    import grpc
    from cryptography import x509

    from gossamer.ca import api as ca_api
    from gossamer.ca import pki
    from gossamer.contract.names import CONTROL_PLANE_NAME
    from gossamer.contract.spiffe import SpiffeId

    (root, intermediate), args = _org_pki(tmp_path)
    plane = ControlPlaneProcess(tmp_path / "state", tuple(args))
    plane.start()
    try:
        info = httpx.get(plane.url + "/api/v1/ca", headers=plane.auth, trust_env=False).json()
        bundle = info["bundle_pem"]
        roots = x509.load_pem_x509_certificates(bundle.encode())
        assert [r.fingerprint(r.signature_hash_algorithm) for r in roots] == [  # type: ignore[arg-type]
            root.cert.fingerprint(root.cert.signature_hash_algorithm)]
        key = pki.generate_workload_key()
        identity = SpiffeId("gossamer.local", "default", "billing")
        creds = grpc.ssl_channel_credentials(root_certificates=bundle.encode())
        with grpc.secure_channel(f"127.0.0.1:{plane.xds_port}", creds, options=[
                ("grpc.ssl_target_name_override", CONTROL_PLANE_NAME)]) as channel:
            call = channel.unary_unary(ca_api.CREATE_CERTIFICATE)
            req = ca_api.CertificateRequest(csr_pem=pki.make_csr(key, identity).decode())
            raw = call(req.encode(), metadata=(("authorization", f"Bearer {plane.admin_token}"),),
                       timeout=10)
        chain = x509.load_pem_x509_certificates(
            ca_api.CertificateResponse.model_validate_json(raw).cert_chain_pem.encode())
        assert chain[0].issuer == intermediate.subject  # signed by the plug-in intermediate
        assert chain[1] == intermediate                 # which travels with the leaf
        chain[0].verify_directly_issued_by(intermediate)
        intermediate.verify_directly_issued_by(root.cert)
    finally:
        plane.stop()


def test_control_plane_on_a_postgresql_store(
        tmp_path: Path, postgres_server: PostgresServer, postgres_url: str) -> None:
    state = tmp_path / "state"
    plane = ControlPlaneProcess(state, extra=("--store", postgres_url))
    plane.start()
    try:
        out = gossamer(plane, "apply", "-f", "-", stdin=SERVICE)
        assert out.stdout.strip() == "service/catalog created", out.stderr
    finally:
        plane.stop()
    assert (state / "admin-token").exists()
    assert not (state / "gossamer.db").exists()  # the store is the database
    database = conninfo_to_dict(postgres_url)["dbname"]
    kinds = postgres_server.execute("SELECT DISTINCT kind FROM gossamer_resources", database)
    assert {"Service", "_CA"} <= {k for (k,) in kinds}
    plane.start()  # a restarted control plane finds its state there
    try:
        got = json.loads(gossamer(plane, "get", "service", "catalog", "-o", "json").stdout)
        assert got["metadata"]["name"] == "catalog"
    finally:
        plane.stop()


def test_control_plane_refuses_a_newer_store_schema(
        tmp_path: Path, postgres_server: PostgresServer, postgres_url: str) -> None:
    database = conninfo_to_dict(postgres_url)["dbname"]
    postgres_server.execute("CREATE TABLE gossamer_schema (version integer PRIMARY KEY);"
                            " INSERT INTO gossamer_schema VALUES (999)", database)
    done = subprocess.run(
        [sys.executable, "-m", "gossamer", "control-plane", "--state-dir", str(tmp_path),
         "--store", postgres_url, "--api-port", str(free_port()),
         "--xds-port", str(free_port())],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert done.stderr.startswith("error: store: the database has store schema version 999")


def test_get_services_shows_virtual_ips_and_the_mesh_is_cluster_wide(
        cp: ControlPlaneProcess) -> None:
    """Issue 21: the VIRTUAL IP column; `get`/`delete mesh` need no namespace."""
    assert gossamer(cp, "apply", "-f", "-", stdin=SERVICE).returncode == 0
    deadline = time.monotonic() + 15
    table = ""
    while time.monotonic() < deadline and "240.240.0.1" not in table:
        table = gossamer(cp, "get", "services").stdout
        time.sleep(0.1)
    header, row = table.splitlines()[:2]
    assert header.split() == ["NAMESPACE", "KIND", "NAME", "VIRTUAL", "IP", "REVISION",
                              "STATUS"]
    assert row.split()[:4] == ["default", "Service", "catalog", "240.240.0.1"]
    mesh = ("apiVersion: mesh.gossamer.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\n"
            "spec: {outboundTrafficPolicy: {mode: REGISTRY_ONLY}}\n")
    assert gossamer(cp, "apply", "-f", "-", stdin=mesh).stdout.strip() == "mesh/default created"
    got = json.loads(gossamer(cp, "get", "mesh", "default", "-o", "json").stdout)
    assert got["metadata"]["namespace"] == "gossamer-system"
    assert got["spec"]["outboundTrafficPolicy"]["mode"] == "REGISTRY_ONLY"
    assert gossamer(cp, "delete", "mesh", "default").stdout.strip() == "mesh/default deleted"


def test_export_then_import_moves_every_resource_to_another_store(
        cp: ControlPlaneProcess, tmp_path: Path, postgres_url: str) -> None:
    applied = gossamer(cp, "apply", "-f", "-", stdin=SERVICE + "---\n" + ROUTE)
    assert applied.returncode == 0, applied.stderr
    workload = {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Workload",
                "metadata": {"name": "catalog-0", "labels": {"app": "catalog"}},
                "spec": {"service": "catalog", "address": "198.18.0.5", "port": 15006,
                         "appPort": 8080}}
    assert httpx.post(cp.url + "/api/v1/apply", json=workload, headers=cp.auth,
                      trust_env=False, timeout=30).is_success
    exported = gossamer(cp, "export")
    assert exported.returncode == 0, exported.stderr
    assert exported.stderr.strip() == "exported 2 resource(s)"  # no Workload by default
    docs = list(yaml.safe_load_all(exported.stdout))
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("Service", "catalog"), ("HTTPRoute", "catalog")]
    assert all("status" not in d and "resourceVersion" not in d["metadata"] for d in docs)
    with_workloads = gossamer(cp, "export", "--workloads")
    assert "kind: Workload" in with_workloads.stdout

    other = ControlPlaneProcess(tmp_path / "restored", extra=("--store", postgres_url))
    other.start()
    try:
        imported = gossamer(other, "import", "-f", "-", stdin=exported.stdout)
        assert imported.returncode == 0, imported.stderr
        assert imported.stdout.strip() == "imported 2 resource(s): 2 created"
        again = gossamer(other, "export")
        assert list(yaml.safe_load_all(again.stdout)) == docs
    finally:
        other.stop()


def test_the_cli_uses_the_first_replica_that_answers(cp: ControlPlaneProcess) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "GOSSAMER_SERVER": f"{dead},{cp.url}",
           "GOSSAMER_TOKEN": cp.admin_token}
    applied = subprocess.run([sys.executable, "-m", "gossamer", "apply", "-f", "-"],
                             input=SERVICE, capture_output=True, text=True, env=env,
                             timeout=60, check=False)
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.strip() == "service/catalog created"
    checked = subprocess.run([sys.executable, "-m", "gossamer", "check"], capture_output=True,
                             text=True, env=env, timeout=60, check=False)
    assert "control plane: ok" in checked.stdout, checked.stderr
    assert ", leader)" in checked.stdout  # one replica (SQLite): it leads


def test_the_agent_client_moves_past_a_dead_replica(cp: ControlPlaneProcess) -> None:
    import asyncio

    from gossamer.agent.client import ControlPlaneClient

    dead = f"http://127.0.0.1:{free_port()}"

    async def run() -> tuple[dict[str, Any], list[tuple[str, int]], dict[str, Any]]:
        client = ControlPlaneClient(f"{dead},{cp.url}", cp.admin_token)
        try:
            info = await client.wait_up(timeout=30)
            endpoints = await client.xds_endpoints(info)
            return info, endpoints, await client.apply(yaml.safe_load(SERVICE))
        finally:
            await client.close()
    info, endpoints, applied = asyncio.run(run())
    assert info["xds"]["port"] == cp.xds_port
    assert applied["result"] == "created"
    # The dead replica's xDS address is guessed from its URL (its host, the live one's
    # port): here that is the live replica's address, listed once.
    assert endpoints == [("127.0.0.1", cp.xds_port)]
