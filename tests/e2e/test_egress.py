"""Egress to destinations outside the mesh, on namespace hosts (tests/hosts.py; issue 17).

Host `a` runs the control plane; host `b` a meshed app in capture mode (an
unmodified `curl`, no HTTP_PROXY); host `x` is "the outside": not in the mesh, it
runs an HTTPS server with its own CA (cryptography-made) on 8443 and a plain HTTP
server on 80. Then:

- the app calls `http://api.payments.example/...`: mesh DNS answers a virtual IP,
  capture hands the call to the sidecar, which originates TLS to x with the CA,
  the SNI and the name check of the ExternalService; the server saw TLS and SNI;
- under `REGISTRY_ONLY` another external host (x's plain server, by its name) is
  refused with the 502 naming the policy, `explain` says why, and the
  ExternalService still passes.
"""

from __future__ import annotations

import datetime
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.universe import GOSSAMER, wait
from tests.hosts import HostNetwork

pytestmark = pytest.mark.slow
API = "mesh.gossamer.dev/v1alpha1"
API_PORT, XDS_PORT, AUDIT_PROXY_PORT, GATEWAY_ADMIN = 15080, 15010, 15002, 15000
HOST = "api.payments.example"
TLS_SERVER = """
import json, ssl, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
cert, key, seen = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
def note(kind, value):
    with open(seen, "a") as f:
        f.write(json.dumps([kind, value]) + "\\n")
ctx.sni_callback = lambda sock, name, _: note("sni", name)
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        note("request", [self.path, self.headers.get("host"), self.client_address[0]])
        body = sys.argv[4].encode() + b": charged " + self.path.encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
httpd = ThreadingHTTPServer(("0.0.0.0", 8443), H)
httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
httpd.serve_forever()
"""
PLAIN_SERVER = """
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = b"plain outside"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("0.0.0.0", 80), H).serve_forever()
"""


def _pki(root: Path, host: str, *more: str) -> str:
    """An external server's CA (returned, PEM) and its certificate for `host` and
    `more` (files server.pem and server.key in `root`)."""
    root.mkdir(exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "payments test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in (host, *more)]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    (root / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (root / "server.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return ca.public_bytes(serialization.Encoding.PEM).decode()


class Egress:
    def __init__(self, net: HostNetwork, root: Path) -> None:
        self.net, self.root = net, root
        self.state, self.logs = root / "state", root / "logs"
        self.workdir = root

    @property
    def url(self) -> str:
        return f"https://{self.net['a'].address}:{API_PORT}"

    def api(self) -> httpx.Client:
        import ssl
        token = (self.state / "admin-token").read_text().strip()
        return httpx.Client(base_url=self.url, trust_env=False, timeout=10,
                            verify=ssl.create_default_context(
                                cafile=self.state / "ca-bundle.pem"),
                            headers={"Authorization": f"Bearer {token}"})

    def apply(self, *docs: dict[str, Any]) -> None:
        with self.api() as api:
            for doc in docs:
                resp = api.post("/api/v1/apply", json=doc)
                assert resp.status_code == 200, resp.text

    def curl(self, url: str, host: str = "b", *args: str) -> tuple[int, str]:
        """`curl URL` on a host: (status, body); status 0: no answer."""
        done = self.net[host].run(["curl", "-sS", "--max-time", "10", *args, "-o", "-", "-w",
                                   "\n%{http_code}", url], timeout=30)
        body, _, code = done.stdout.rpartition("\n")
        return int(code or 0), body

    def seen_by_server(self, name: str = "x") -> list[list[Any]]:
        seen = self.root / name / "seen.jsonl"
        if not seen.exists():
            return []
        return [json.loads(line) for line in seen.read_text().splitlines()]

    def token_file(self, service: str) -> Path:
        with self.api() as api:
            token = api.post("/api/v1/tokens", json={"scope": "join", "service": service})
        path = self.root / f"{service}.token"
        path.write_text(token.json()["token"] + "\n")
        return path

    def agent(self, host: str, service: str, *args: str) -> None:
        """`gossamer proxy` for `service` on `host` (no app: `args` says what it runs)."""
        self.net[host].popen([
            *GOSSAMER, "proxy", "--service", service, "--name", f"{service}-0",
            "--control-plane", f"https://a:{API_PORT}", "--token-file",
            str(self.token_file(service)), "--ca-file", str(self.state / "ca-bundle.pem"),
            "--app-port", "0", "--address", self.net[host].address, "--drain-seconds", "0.5",
            "--workdir", str(self.workdir / host), *args], log=self.logs / f"{host}.log")


    def egress_gateway(self, host: str, name: str) -> None:
        """`gossamer gateway --egress` for Service `name` on `host` (replica NAME-0)."""
        self.net[host].popen([
            *GOSSAMER, "gateway", "--egress", "--name", name, "--replica", f"{name}-0",
            "--control-plane", f"https://a:{API_PORT}", "--token-file",
            str(self.token_file(name)), "--ca-file", str(self.state / "ca-bundle.pem"),
            "--address", self.net[host].address, "--drain-seconds", "0.5",
            "--admin-port", str(GATEWAY_ADMIN),
            "--workdir", str(self.workdir / host)], log=self.logs / f"{host}.log")


def _external(name: str, host: str, ca_pem: str, address: str,
              **more: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "ExternalService", "metadata": {"name": name},
            "spec": {"hosts": [host], "endpoints": [address],
                     "ports": [{"port": 80, "protocol": "HTTP", "targetPort": 8443}],
                     "tls": {"mode": "ORIGINATE", "caBundle": {"pem": ca_pem},
                             "subjectAltNames": [host]}, **more}}


def _outside_server(world: Egress, host: str, name: str, label: str, *more: str) -> str:
    """An HTTPS server with its own CA on `host`:8443 for names `name` and `more`,
    answering "`label`: charged PATH"; its CA PEM."""
    root = world.root / host
    ca_pem = _pki(root, name, *more)
    world.net[host].popen([sys.executable, str(world.root / "tls_server.py"),
                           str(root / "server.pem"), str(root / "server.key"),
                           str(root / "seen.jsonl"), label],
                          log=world.logs / f"{host}-tls.log")
    return ca_pem


LEDGER = "ledger.bank.example"
RAW_HOST = "raw.payments.example"
WILD_HOST = "pay.wild.example"
RAW_CLIENT = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10) as s:
    s.sendall(b"GET /raw HTTP/1.1\\r\\nHost: " + sys.argv[3].encode()
              + b"\\r\\nConnection: close\\r\\n\\r\\n")
    out = b""
    while chunk := s.recv(4096):
        out += chunk
print(out.decode(errors="replace"))
"""
RAW_LEDGER = "raw.bank.example"
EGRESS_SERVICE = {"apiVersion": API, "kind": "Service", "metadata": {"name": "egress"},
                  "spec": {"ports": [{"port": 80, "protocol": "http"}]}}
# On the egress gateway: shop may reach the ledger; nothing else may.
ONLY_SHOP_TO_LEDGER = {
    "apiVersion": API, "kind": "AuthorizationPolicy", "metadata": {"name": "egress-ledger"},
    "spec": {"targetRef": {"kind": "Service", "name": "egress"}, "action": "ALLOW",
             "rules": [{"from": [{"source": {"principals": ["gossamer.local/ns/default/sa/shop"]}}],
                        "to": [{"operation": {"hosts": [LEDGER]}}]}]}}
# A TCP connection names no host: its rules at the gateway see only the caller.
ONLY_SHOP_TCP = {
    "apiVersion": API, "kind": "AuthorizationPolicy", "metadata": {"name": "egress-raw"},
    "spec": {"targetRef": {"kind": "Service", "name": "egress"}, "action": "ALLOW",
             "rules": [{"from": [{"source": {"principals": [
                 "gossamer.local/ns/default/sa/shop"]}}]}]}}


@pytest.fixture(scope="module")
def egress(module_netns_hosts: HostNetwork, tmp_path_factory: pytest.TempPathFactory,
           ) -> Iterator[Egress]:
    """a: control plane; b: shop (captured); c: audit (explicit mode); g: the egress
    gateway; x and y: outside. Only g has a route to y."""
    net = module_netns_hosts
    a, b, c, g, x, y = (net.add(h) for h in ("a", "b", "c", "g", "x", "y"))
    world = Egress(net, tmp_path_factory.mktemp("egress"))
    world.logs.mkdir()
    (world.root / "tls_server.py").write_text(TLS_SERVER)
    (world.root / "plain_server.py").write_text(PLAIN_SERVER)
    payments_ca = _outside_server(world, "x", HOST, "payments", WILD_HOST)
    ledger_ca = _outside_server(world, "y", LEDGER, "ledger")
    x.popen([sys.executable, str(world.root / "plain_server.py")],
            log=world.logs / "x-plain.log")
    for meshed in (b, c):  # no route from the app hosts to y: only the gateway reaches it
        meshed.run(["ip", "route", "add", "prohibit", f"{y.address}/32"], check=True)
    a.popen([*GOSSAMER, "control-plane", "--state-dir", str(world.state), "--host", a.address,
             "--advertise-address", "a", "--api-port", str(API_PORT), "--xds-port",
             str(XDS_PORT)], log=world.logs / "control-plane.log")

    def up() -> bool:
        with world.api() as api:
            return api.get("/healthz").is_success
    wait("the control plane is not up",
         lambda: (world.state / "ca-bundle.pem").exists() and up(), 60, world.logs)
    raw = _external("payments-raw", RAW_HOST, payments_ca, x.address)
    raw["spec"]["ports"] = [{"port": 9000, "protocol": "TCP", "targetPort": 8443}]
    raw["spec"]["tls"] |= {"sni": HOST, "subjectAltNames": [HOST]}
    wild = {"apiVersion": API, "kind": "ExternalService", "metadata": {"name": "wild"},
            "spec": {"hosts": ["*.wild.example"],
                     "ports": [{"port": 80, "protocol": "HTTP", "targetPort": 8443}],
                     "tls": {"mode": "ORIGINATE", "caBundle": {"pem": payments_ca}}}}
    raw_ledger = _external("ledger-raw", RAW_LEDGER, ledger_ca, y.address,
                           egress={"via": "egress"})
    raw_ledger["spec"]["ports"] = [{"port": 9000, "protocol": "TCP", "targetPort": 8443}]
    raw_ledger["spec"]["tls"] |= {"sni": LEDGER, "subjectAltNames": [LEDGER]}
    # The app finds a wildcard host with its own resolver (here its hosts file).
    for meshed in (b, c):
        hosts_file = Path("/etc/netns") / meshed.netns / "hosts"
        meshed.write_etc("hosts", hosts_file.read_text() + f"{x.address} {WILD_HOST}\n")
    world.apply(_external("payments", HOST, payments_ca, x.address), raw, wild,
                _external("ledger", LEDGER, ledger_ca, y.address, egress={"via": "egress"}),
                raw_ledger, EGRESS_SERVICE, ONLY_SHOP_TO_LEDGER)
    # Envoy runs as its own uid under capture: its workdir must be reachable by it.
    world.workdir = Path(tempfile.mkdtemp(prefix="gossamer-egress-", dir="/tmp"))
    world.workdir.chmod(0o755)
    world.agent("b", "shop", "--capture", "--", "sleep", "3600")
    world.agent("c", "audit", "--outbound-port", str(AUDIT_PROXY_PORT))
    world.egress_gateway("g", "egress")

    def ready() -> bool:
        with world.api() as api:
            proxies = api.get("/api/v1/proxies").json()
            gateway = api.get("/api/v1/resources/Workload/default/egress-0")
        return (sum(1 for p in proxies if p["connected"] and p["synced"]) == 3
                and gateway.is_success and gateway.json()["spec"]["health"] == "Healthy")
    try:
        wait("the sidecars and the gateway are not in sync and healthy", ready, 90, world.logs)
        yield world
    finally:
        for host in (b, c, g):
            for proc in [p for p in net.started if host.netns in p.args]:
                proc.terminate()  # the agents remove their capture rules and drain
                proc.wait(timeout=30)
        shutil.rmtree(world.workdir, ignore_errors=True)


def test_the_app_calls_an_external_host_in_plain_http_and_the_sidecar_speaks_tls(
        egress: Egress) -> None:
    _, body = wait("the external service through the sidecar",
                        lambda: (r := egress.curl(f"http://{HOST}/charge"))[0] == 200 and r,
                        60, egress.logs)
    assert body == "payments: charged /charge"
    seen = egress.seen_by_server()
    # x's server speaks only TLS: the request reached it over TLS, named by SNI.
    assert ["sni", HOST] in seen
    assert ["request", ["/charge", HOST, egress.net["b"].address]] in seen
    # The app resolved the host through mesh DNS: a virtual IP, not x's address.
    with egress.api() as api:
        vip = api.get("/api/v1/resources/ExternalService/default/payments").json()[
            "status"]["virtualIP"]
    hosts = egress.net["b"].run(["getent", "ahostsv4", HOST]).stdout
    assert vip in hosts
    assert egress.net["x"].address not in hosts


def test_registry_only_refuses_other_external_hosts_and_explain_says_why(
        egress: Egress) -> None:
    assert egress.curl("http://x/") == (200, "plain outside")  # ALLOW_ANY, the default
    mesh = {"apiVersion": API, "kind": "Mesh", "metadata": {"name": "default"},
            "spec": {"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}}
    egress.apply(mesh)
    try:
        _, body = wait("REGISTRY_ONLY to refuse x",
                            lambda: (r := egress.curl("http://x/"))[0] == 502 and r,
                            60, egress.logs)
        assert "REGISTRY_ONLY" in body
        assert "neither a mesh Service nor an ExternalService" in body
        # The ExternalService is in the registry: it still passes.
        assert egress.curl(f"http://{HOST}/again") == (200, "payments: charged /again")
        assert egress.curl(f"http://{WILD_HOST}/ro") == (200, "payments: charged /ro")

        def explained() -> dict[str, Any] | None:
            with egress.api() as api:
                resp = api.get("/api/v1/explain", params={"service": "shop", "status": 502})
            return resp.json() if resp.status_code == 200 else None
        why = wait("explain to know the refusal", explained, 30, egress.logs)
        assert "neither a mesh Service nor an ExternalService" in why["cause"], why
        assert why["policy"] == "Mesh gossamer-system/default", why
    finally:
        mesh["spec"] = {"outboundTrafficPolicy": {"mode": "ALLOW_ANY"}}
        egress.apply(mesh)


def test_through_the_egress_gateway_authz_decides_who_reaches_the_outside(
        egress: Egress) -> None:
    # shop, captured on b, calls the ledger by name: allowed by the gateway's policy.
    _, body = wait("the ledger through the egress gateway",
                   lambda: (r := egress.curl(f"http://{LEDGER}/post"))[0] == 200 and r,
                   60, egress.logs)
    assert body == "ledger: charged /post"
    requests = [v for k, v in egress.seen_by_server("y") if k == "request"]
    assert requests
    # y saw the gateway only, never the app's host.
    assert {addr for _, _, addr in requests} == {egress.net["g"].address}
    assert ["sni", LEDGER] in egress.seen_by_server("y")
    # b has no route to y: a direct connection fails (its sidecar passes it through
    # under ALLOW_ANY, and the connect is refused by the missing route).
    direct = egress.curl(f"https://{egress.net['y'].address}:8443/direct", "b", "-k")
    assert direct[0] == 0, direct
    # audit (c, explicit mode) is no workload the policy allows: 403 at the gateway.
    status, denied = egress.curl(f"http://{LEDGER}/post", "c", "--proxy",
                                 f"http://127.0.0.1:{AUDIT_PROXY_PORT}")
    assert status == 403, denied
    assert "denied by mesh authorization policy" in denied

    def explained() -> dict[str, Any] | None:
        with egress.api() as api:
            resp = api.get("/api/v1/explain", params={"service": "audit", "status": 403})
        return resp.json() if resp.status_code == 200 else None
    # Both ends of the hop report (the gateway's inbound entry may come a little later).
    why = wait("explain to know the gateway's refusal",
               lambda: (e := explained()) and len(e["hops"]) >= 2 and e, 30, egress.logs)
    assert why["policy"] == "AuthorizationPolicy default/egress-ledger", why
    assert "egress-0" in why["failed_at"], why
    assert not any(path == "/post" and addr != egress.net["g"].address
                   for path, _, addr in requests)


def test_a_tcp_port_is_captured_by_virtual_ip_and_the_sidecar_originates_tls(
        egress: Egress) -> None:
    # The app speaks plain bytes (an HTTP request by hand) to raw.payments.example:9000;
    # the sidecar wraps them in TLS to x:8443 (SNI and names of api.payments.example).
    def call() -> str:
        done = egress.net["b"].run([sys.executable, "-c", RAW_CLIENT, RAW_HOST, "9000", HOST])
        return done.stdout
    out = wait("the raw TCP call through the sidecar", lambda: "charged /raw" in (o := call())
               and o, 60, egress.logs)
    assert out.startswith("HTTP/1.")
    assert "payments: charged /raw" in out
    assert ["request", ["/raw", HOST, egress.net["b"].address]] in egress.seen_by_server("x")


def test_a_wildcard_host_reaches_where_the_app_connected_with_its_name_in_tls(
        egress: Egress) -> None:
    _, body = wait("the wildcard external service through the sidecar",
                   lambda: (r := egress.curl(f"http://{WILD_HOST}/wild"))[0] == 200 and r,
                   60, egress.logs)
    assert body == "payments: charged /wild"
    seen = egress.seen_by_server("x")
    assert ["sni", WILD_HOST] in seen  # auto SNI from the request's host
    assert ["request", ["/wild", WILD_HOST, egress.net["b"].address]] in seen


def test_a_tcp_port_through_the_egress_gateway_reaches_the_outside_for_allowed_callers(
        egress: Egress) -> None:
    """shop's plain bytes to raw.bank.example:9000 go over mTLS to the gateway (the
    port named by SNI), which originates TLS to y: the only host with a route to it.
    Until an AuthorizationPolicy admits shop over TCP, the gateway closes it."""
    def call() -> str:
        return egress.net["b"].run([sys.executable, "-c", RAW_CLIENT, RAW_LEDGER, "9000",
                                    LEDGER]).stdout
    # ONLY_SHOP_TO_LEDGER's one rule names a host: it admits no TCP connection.
    wait("the gateway to refuse raw TCP", lambda: "charged" not in call(), 30, egress.logs)
    assert "charged" not in call()
    egress.apply(ONLY_SHOP_TCP)
    try:
        out = wait("raw TCP through the egress gateway",
                   lambda: "charged /raw" in (o := call()) and o, 60, egress.logs)
        assert "ledger: charged /raw" in out
        requests = [v for k, v in egress.seen_by_server("y") if k == "request"]
        assert ["/raw", LEDGER, egress.net["g"].address] in requests
    finally:
        with egress.api() as api:
            api.delete("/api/v1/resources/AuthorizationPolicy/default/egress-raw")


def test_a_rate_limit_on_an_external_service_applies_once_at_the_egress_gateway(
        egress: Egress) -> None:
    """The ledger goes through the gateway: its RateLimitPolicy's bucket is the
    gateway's, so the limit holds across callers (local buckets are per Envoy)."""
    limit = {"apiVersion": API, "kind": "RateLimitPolicy", "metadata": {"name": "ledger"},
             "spec": {"targetRef": {"kind": "ExternalService", "name": "ledger"},
                      "local": {"requests": 3, "per": "1h"}}}
    def gateway_admin(path: str) -> str:
        return egress.net["g"].run(["curl", "-sS", "--max-time", "5",
                                    f"http://127.0.0.1:{GATEWAY_ADMIN}{path}"]).stdout

    def limited_and_drained() -> bool:
        """The gateway's routes are inline in its listener: connections the callers'
        sidecars opened before stay on the old listener until it has drained."""
        draining = gateway_admin("/stats?filter=listener_manager.total_.*draining").split()
        return ("token_bucket" in gateway_admin("/config_dump?resource=dynamic_listeners")
                and len(draining) >= 4 and all(v == "0" for v in draining[1::2]))
    egress.apply(limit)
    try:
        wait("the gateway to take the limit", limited_and_drained, 60, egress.logs)
        before = len([v for k, v in egress.seen_by_server("y") if k == "request"])
        codes = [egress.curl(f"http://{LEDGER}/limited")[0] for _ in range(4)]
        assert codes == [200, 200, 200, 429], codes
        after = [v for k, v in egress.seen_by_server("y") if k == "request"]
        assert len(after) - before == 3
    finally:
        with egress.api() as api:
            api.delete("/api/v1/resources/RateLimitPolicy/default/ledger")


def test_in_explicit_mode_a_wildcard_host_is_resolved_by_the_sidecar(egress: Egress) -> None:
    """audit (c) sends to its outbound listener (HTTP_PROXY): no original destination,
    so its sidecar resolves the request's host (c's hosts file) and connects on
    targetPort, originating TLS with the host's name."""
    _, body = wait(
        "the wildcard host through the explicit-mode sidecar",
        lambda: (r := egress.curl(f"http://{WILD_HOST}/explicit", "c", "--proxy",
                                  f"http://127.0.0.1:{AUDIT_PROXY_PORT}"))[0] == 200 and r,
        60, egress.logs)
    assert body == "payments: charged /explicit"
    seen = egress.seen_by_server("x")
    assert ["request", ["/explicit", WILD_HOST, egress.net["c"].address]] in seen
    assert ["sni", WILD_HOST] in seen
