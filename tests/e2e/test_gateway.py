"""Ingress through a Gateway, across namespace hosts (tests/hosts.py).

On the universe of tests/e2e/universe.py (control plane on a, web on b, catalog on
c) a fourth host d runs `catalog2`, host g runs `gossamer gateway --name edge` and
host o, outside the mesh (no agent, no token), calls it by hostname over HTTPS:
- each of two hostnames gets its own certificate (SNI);
- JWT is checked at the edge: 401 without a token, 200 with one;
- an HTTPRoute splits 50/50 between catalog and catalog2;
- an AuthorizationPolicy lets only the gateway's identity call them: web, meshed
  but not the gateway, gets 403;
- a Gateway with bad listeners is accepted with the conditions that say why.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tests.e2e.universe import (
    API_PORT,
    APP_PORT,
    GOSSAMER,
    INBOUND_PORT,
    Universe,
    universe,
    wait,
)
from tests.gateway_docs import (
    GW,
    gateway,
    http_route,
    parent,
    self_signed,
    service,
    tls_secret,
)
from tests.hosts import HostNetwork

pytestmark = pytest.mark.slow
HTTPS, TCP = 8443, 9000
REQUESTS = 200
# A TLS server of its own (the app behind a passthrough listener): it answers the
# first bytes it reads with "tls:" and them.
TLS_APP = r"""
import os, socket, ssl, sys, threading
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
def serve(conn):
    try:
        with ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"tls:" + tls.recv(100))
    except (OSError, ssl.SSLError):
        conn.close()
server = socket.create_server(("127.0.0.1", int(os.environ["PORT"])))
while True:
    threading.Thread(target=serve, args=(server.accept()[0],), daemon=True).start()
"""


ADMIN = 15000  # each gateway replica's Envoy admin, on its host's loopback
READY = 15020  # its readiness for a kubelet, on its host's address (--ready-port)


def start_gateway(u: Universe, host: Any, replica: str, root: Path) -> Any:
    return host.popen([*GOSSAMER, "gateway", "--name", "edge", "--replica", replica,
                       "--control-plane", f"https://a:{API_PORT}", "--token-file",
                       str(u.join_token("edge")), "--ca-file", str(u.bundle_file),
                       "--admin-port", str(ADMIN), "--ready-port", str(READY),
                       "--drain-seconds", "5",
                       "--workdir", str(root / replica)], log=u.logs / f"{replica}.log")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(key: ec.EllipticCurvePrivateKey, claims: dict[str, Any]) -> str:
    header = _b64(json.dumps({"alg": "ES256", "typ": "JWT", "kid": "k1"}).encode())
    payload = _b64(json.dumps(claims).encode())
    r, s = decode_dss_signature(key.sign(f"{header}.{payload}".encode(),
                                         ec.ECDSA(hashes.SHA256())))
    return f"{header}.{payload}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def _jwks(key: ec.EllipticCurvePrivateKey) -> str:
    nums = key.public_key().public_numbers()
    return json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256",
                                 "use": "sig", "x": _b64(nums.x.to_bytes(32, "big")),
                                 "y": _b64(nums.y.to_bytes(32, "big"))}]})


# Run on the outside host: N requests over HTTPS to HOST (resolved to the gateway's
# address, SNI HOST, verified with CA), each line: status, body's service, the
# certificate's common name.
CALL = r"""
import json, socket, ssl, sys, http.client
host, address, cafile, n, token = sys.argv[1:6]
n, port = int(n), int(sys.argv[6])
ctx = ssl.create_default_context(cafile=cafile)
out = []
for i in range(n):
    conn = http.client.HTTPSConnection(address, port, context=ctx, timeout=10)
    conn.sock = ctx.wrap_socket(socket.create_connection((address, port), timeout=10),
                                server_hostname=host)
    headers = {"Host": host, **({"Authorization": "Bearer " + token} if token else {})}
    conn.request("GET", f"/items?i={i}", headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    cn = dict(x[0] for x in conn.sock.getpeercert()["subject"])["commonName"]
    try:
        service = json.loads(body).get("service")
    except ValueError:
        service = body.decode(errors="replace")[:200]
    out.append([resp.status, service, cn])
    conn.close()
print(json.dumps(out))
"""


@pytest.fixture(name="edge", scope="module")
def edge_fixture(module_netns_hosts: HostNetwork,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("gateway")
    # A stats window longer than the module: edge counts only grow (test_observe_*).
    for u in universe(module_netns_hosts, root, control_plane_args=("--stats-window", "1800")):
        yield from _edge(u, root)


def _edge(u: Universe, root: Path) -> Iterator[dict[str, Any]]:
    net = u.net
    d, g, o = net.add("d"), net.add("g"), net.add("o")
    certs = {h: self_signed(h) for h in ("a.example.com", "b.example.com")}
    key = ec.generate_private_key(ec.SECP256R1())
    docs = [service("catalog2"),
            tls_secret("cert-a", *certs["a.example.com"]),
            tls_secret("cert-b", *certs["b.example.com"]),
            gateway(listeners=[
                {"name": "a", "port": HTTPS, "protocol": "HTTPS", "hostname": "a.example.com",
                 "tls": {"certificateRefs": [{"name": "cert-a"}]}},
                {"name": "b", "port": HTTPS, "protocol": "HTTPS", "hostname": "b.example.com",
                 "tls": {"certificateRefs": [{"name": "cert-b"}]}},
                {"name": "pass", "port": HTTPS, "protocol": "TLS",
                 "hostname": "pass.example.com", "tls": {"mode": "Passthrough"}},
                {"name": "raw", "port": TCP, "protocol": "TCP"}]),
            service("echo", "tcp", 7000), service("vault", "tcp", 7443),
            {"apiVersion": f"{GW}/v1alpha2", "kind": "TCPRoute", "metadata": {"name": "raw"},
             "spec": {"parentRefs": [parent("raw")],
                      "rules": [{"backendRefs": [{"name": "echo", "port": 7000}]}]}},
            {"apiVersion": f"{GW}/v1alpha2", "kind": "TLSRoute", "metadata": {"name": "pass"},
             "spec": {"parentRefs": [parent("pass")], "hostnames": ["pass.example.com"],
                      "rules": [{"backendRefs": [{"name": "vault", "port": 7443}]}]}},
            http_route("shop", [parent("a"), parent("b")], [],
                       [("catalog", 50), ("catalog2", 50)]),
            {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "RequestAuthentication",
             "metadata": {"name": "edge-jwt"},
             "spec": {"targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                    "name": "edge"},
                      "jwtRules": [{"issuer": "https://idp.example", "jwks": _jwks(key)}]}},
            {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "AuthorizationPolicy",
             "metadata": {"name": "only-the-gateway"},
             "spec": {"action": "ALLOW", "rules": [{"from": [{"source": {"principals": [
                 "spiffe://gossamer.local/ns/default/sa/edge"]}}]}]}}]
    with u.api() as api:
        for doc in docs:
            resp = api.post("/api/v1/apply", json=doc)
            assert resp.is_success, resp.text
    pass_cert, pass_key = self_signed("pass.example.com")
    (root / "pass.pem").write_bytes(pass_cert)
    (root / "pass.key").write_bytes(pass_key)
    # One at a time, each healthy before the next: agents starting at once on a loaded
    # machine were seen to miss Envoy's 30 s readiness deadline.
    for name, protocol, port, app in (
            ("catalog2", "http", APP_PORT, ["-m", "gossamer.demo.app", "--name", "catalog2"]),
            ("echo", "tcp", 7000, ["-m", "gossamer.demo.tcpecho"]),
            ("vault", "tcp", 7443, ["-c", TLS_APP, str(root / "pass.pem"),
                                    str(root / "pass.key")])):
        d.popen([*GOSSAMER, "proxy", "--service", name, "--name", f"{name}-0", "--protocol",
                 protocol, "--control-plane", f"https://a:{API_PORT}", "--token-file",
                 str(u.join_token(name)), "--ca-file", str(u.bundle_file), "--app-port",
                 str(port), "--inbound-port", str(INBOUND_PORT if name == "catalog2" else
                                                  port + 10),
                 *(["--probe-path", "/healthz"] if protocol == "http" else []),
                 "--drain-seconds", "0.5", "--workdir", str(root / name), "--",
                 sys.executable, *app], log=u.logs / f"{name}.log")
        wait(f"{name} is not healthy", lambda n=name: _healthy(u, f"{n}-0"), 90, u.logs)
    start_gateway(u, g, "edge-0", root)

    def ready() -> bool:
        with u.api() as api:
            gw = api.get("/api/v1/resources/Gateway/default/edge").json()
            docs = api.get("/api/v1/resources/Workload").json()
        healthy = {w["metadata"]["name"] for w in docs if w["spec"]["health"] == "Healthy"}
        programmed = [c for c in gw.get("status", {}).get("conditions", [])
                      if c["type"] == "Programmed"]
        return {"catalog2-0", "echo-0", "vault-0"} <= healthy and bool(programmed) and \
            programmed[0]["status"] == "True"
    wait("the gateway is not programmed", ready, 120, u.logs)
    for host, (cert, _) in certs.items():
        (root / f"{host}.pem").write_bytes(cert)
    yield {"u": u, "o": o, "g": g, "root": root, "key": key}


def _healthy(u: Universe, workload: str) -> bool:
    with u.api() as api:
        docs = api.get("/api/v1/resources/Workload").json()
    return any(d["metadata"]["name"] == workload and d["spec"]["health"] == "Healthy"
               for d in docs)


def _call(edge: dict[str, Any], host: str, n: int, token: str = "") -> list[list[Any]]:
    out = edge["o"].run([sys.executable, "-c", CALL, host, edge["g"].address,
                         str(edge["root"] / f"{host}.pem"), str(n), token or "", str(HTTPS)],
                        check=True, timeout=120)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _token(edge: dict[str, Any]) -> str:
    return _jwt(edge["key"], {"iss": "https://idp.example", "sub": "alice",
                              "exp": int(time.time()) + 3600})


def test_each_hostname_gets_its_certificate_and_a_token_is_required(
        edge: dict[str, Any]) -> None:
    token = _token(edge)
    for host in ("a.example.com", "b.example.com"):
        [(status, service, cn)] = _call(edge, host, 1, token)
        assert (status, cn) == (200, host), (status, service)
        [(status, body, cn)] = _call(edge, host, 1)
        assert (status, cn) == (401, host), body


def test_the_gateway_splits_50_50(edge: dict[str, Any]) -> None:
    answers = _call(edge, "a.example.com", REQUESTS, _token(edge))
    assert {status for status, _, _ in answers} == {200}
    v2 = sum(1 for _, service, _ in answers if service == "catalog2")
    # Binomial(200, 0.5): the standard deviation is ~7; 60..140 is more than 5 of them
    # either side, so a correct split fails this about once in 10^6 runs.
    assert 60 <= v2 <= 140, v2
    assert {service for _, service, _ in answers} == {"catalog", "catalog2"}


def test_only_the_gateway_may_call_the_app(edge: dict[str, Any]) -> None:
    u = edge["u"]
    outbound = int(u.proxy("web-0")["metadata"]["outbound_port"])
    out = u.net["b"].run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-x",
                          f"http://127.0.0.1:{outbound}", "http://catalog/items"],
                         check=True, timeout=60)
    assert out.stdout == "403"


def test_an_unknown_host_gets_a_clear_404(edge: dict[str, Any]) -> None:
    g = edge["g"]
    out = edge["o"].run(["curl", "-sk", "--resolve", f"a.example.com:{HTTPS}:{g.address}",
                         "-H", "Host: elsewhere.example.com",
                         "-H", f"Authorization: Bearer {_token(edge)}",
                         f"https://a.example.com:{HTTPS}/"], check=True, timeout=60)
    assert "gossamer: gateway default/edge has no route for this host" in out.stdout


def test_a_conflicting_gateway_is_accepted_with_its_conditions(edge: dict[str, Any]) -> None:
    u = edge["u"]
    bad = gateway("clash", listeners=[
        {"name": "web", "port": 9080, "protocol": "HTTP"},
        {"name": "raw", "port": 9080, "protocol": "TCP"},
        {"name": "udp", "port": 9081, "protocol": "UDP"},
        {"name": "s", "port": 9443, "protocol": "HTTPS",
         "tls": {"certificateRefs": [{"name": "missing"}]}}])
    with u.api() as api:
        assert api.post("/api/v1/apply", json=bad).is_success

        def listeners() -> dict[str, dict[str, tuple[str, str]]] | None:
            doc = api.get("/api/v1/resources/Gateway/default/clash").json()
            found = doc.get("status", {}).get("listeners")
            return {lst["name"]: {c["type"]: (c["status"], c["reason"])
                                  for c in lst["conditions"]} for lst in found} if found else None
        status = wait("no listener status", listeners, 30)
    assert status["web"]["Conflicted"] == ("False", "NoConflicts")
    assert status["raw"]["Conflicted"] == ("True", "ProtocolConflict")
    assert status["udp"]["Accepted"] == ("False", "UnsupportedProtocol")
    assert status["s"]["ResolvedRefs"] == ("False", "InvalidCertificateRef")
    assert status["web"]["Programmed"] == ("True", "Programmed")


TLS_CALL = r"""
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[3])
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10) as raw:
    with ctx.wrap_socket(raw, server_hostname="pass.example.com") as tls:
        tls.sendall(b"hello")
        print(tls.recv(100).decode())
"""
TCP_CALL = r"""
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10) as conn:
    conn.sendall(b"hello")
    print(conn.recv(100).decode())
"""


def test_tls_passthrough_reaches_the_app_that_terminates_it(edge: dict[str, Any]) -> None:
    """The certificate the client verifies is the app's own (the gateway has none for
    pass.example.com): the gateway only routed the bytes by SNI."""
    out = edge["o"].run([sys.executable, "-c", TLS_CALL, edge["g"].address, str(HTTPS),
                         str(edge["root"] / "pass.pem")], check=True, timeout=60)
    assert out.stdout.strip() == "tls:hello"


def test_a_tcp_listener_forwards_connections(edge: dict[str, Any]) -> None:
    out = edge["o"].run([sys.executable, "-c", TCP_CALL, edge["g"].address, str(TCP)],
                        check=True, timeout=60)
    assert out.stdout.strip() == "echo:hello"


def test_two_replicas_serve_and_a_stopped_one_drains_its_requests(
        edge: dict[str, Any]) -> None:
    """A second replica (its own host and node id) gets the same config; stopped while
    a slow request is in flight, it finishes that request before it exits."""
    u, root = edge["u"], edge["root"]
    g2 = u.net.add("g2")
    proc = start_gateway(u, g2, "edge-1", root)

    def both() -> bool:
        with u.api() as api:
            gw = api.get("/api/v1/resources/Gateway/default/edge").json()
        [programmed] = [c for c in gw["status"]["conditions"] if c["type"] == "Programmed"]
        return programmed["message"].startswith("2 of 2")
    wait("the second replica is not in sync", both, 90, u.logs)
    # Its readiness as a kubelet would probe it: from another host, to its address, and
    # again until it answers (the agent opens the probe port once its Envoy is ready,
    # a moment after the control plane counts the replica in sync).
    def ready() -> bool:
        probe = edge["o"].run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                               f"http://{g2.address}:{READY}/healthz/ready"], timeout=30)
        return probe.stdout == "200"
    wait("the second replica's readiness probe never answered 200", ready, 30, u.logs)
    token = _token(edge)
    answer: list[subprocess.CompletedProcess[str]] = []
    slow = threading.Thread(target=lambda: answer.append(edge["o"].run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert",
         str(root / "a.example.com.pem"), "--resolve", f"a.example.com:{HTTPS}:{g2.address}",
         "-H", f"Authorization: Bearer {token}",
         f"https://a.example.com:{HTTPS}/items?delay_ms=2000"], timeout=60)))
    slow.start()

    def in_flight() -> bool:
        stats = g2.run(["curl", "-s", f"http://127.0.0.1:{ADMIN}/stats?filter="
                        "downstream_cx_active"], timeout=10).stdout
        return f"http.gateway_{HTTPS}.downstream_cx_active: 1" in stats
    wait("the slow request never reached the replica", in_flight, 30, u.logs)
    proc.terminate()
    slow.join(timeout=60)
    assert [a.stdout for a in answer] == ["200"]
    assert proc.wait(timeout=60) == 0
    # The other replica still serves.
    [(status, _, _)] = _call(edge, "a.example.com", 1, token)
    assert status == 200


def test_the_app_sees_the_outside_client_in_x_forwarded_for(edge: dict[str, Any]) -> None:
    g, o = edge["g"], edge["o"]
    out = o.run(["curl", "-s", "--cacert", str(edge["root"] / "a.example.com.pem"),
                 "--resolve", f"a.example.com:{HTTPS}:{g.address}",
                 "-H", f"Authorization: Bearer {_token(edge)}",
                 f"https://a.example.com:{HTTPS}/items"], check=True, timeout=60)
    assert json.loads(out.stdout)["headers"]["x-forwarded-for"] == o.address


def _gateway_edges(u: Universe) -> dict[str, tuple[int, int]]:
    """Destination -> (requests, 2xx) of the edges whose caller is the gateway `edge`."""
    with u.api() as api:
        items = api.get("/api/v1/stats?kind=edge").json()["items"]
    out: dict[str, tuple[int, int]] = {}
    for e in items:
        if e["source"].get("gateway") == "edge" and not e["routed"]:
            before = out.get(e["destination"], (0, 0))
            out[e["destination"]] = (before[0] + e["requests"],
                                     before[1] + e["responses"]["2xx"])
    return out


def _total(edges: dict[str, tuple[int, int]]) -> tuple[int, int]:
    return (sum(r for r, _ in edges.values()), sum(ok for _, ok in edges.values()))


def _stable_edges(u: Universe) -> dict[str, tuple[int, int]]:
    """The gateway's edges once it has been scraped (twice: it is a workload of the
    stats) and two reads a scrape interval (5 s) apart agree."""
    def settled() -> list[dict[str, tuple[int, int]]] | None:  # a list: {} is falsy
        with u.api() as api:
            seen = api.get("/api/v1/stats?kind=workload&name=edge-0").json()["items"]
        first = _gateway_edges(u)
        time.sleep(6)
        second = _gateway_edges(u)
        return [second] if seen and first == second else None
    [edges] = wait("the gateway's edges did not settle", settled, 120, u.logs)
    return edges


def test_observe_the_gateway_is_the_caller_of_the_services_it_routes_to(
        edge: dict[str, Any]) -> None:
    """Golden metrics: every request the gateway sent on is an edge gateway -> backend;
    those refused at the edge (401, no token) never left it."""
    u = edge["u"]
    base = _stable_edges(u)
    answers = _call(edge, "a.example.com", 20, _token(edge))
    assert [s for s, _, _ in answers] == [200] * 20
    assert {s for s, _, _ in _call(edge, "a.example.com", 5)} == {401}
    want = (_total(base)[0] + 20, _total(base)[1] + 20)
    wait("the edges did not count the requests",
         lambda: _total(_gateway_edges(u)) == want, 60, u.logs)
    now = _stable_edges(u)
    assert _total(now) == want
    # Only the HTTP route's backends moved (the module's TCP and TLS tests made edges
    # to echo and vault before the baseline).
    assert {d for d in now if now[d] != base.get(d)} == {"catalog.default", "catalog2.default"}
    by_service = {svc: sum(1 for _, s, _ in answers if s == svc) for svc in ("catalog",
                                                                               "catalog2")}
    for svc, n in by_service.items():
        assert now[f"{svc}.default"][0] - base.get(f"{svc}.default", (0, 0))[0] == n
    with u.api() as api:
        graph = api.get("/api/v1/graph").json()
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert nodes["edge.default"]["kind"] == "gateway"
    assert {e["id"] for e in graph["edges"]} >= {"edge.default->catalog.default",
                                                 "edge.default->catalog2.default"}

    out = u.cli("edges", "catalog", "-o", "json")
    assert out.returncode == 0, out.stderr
    [row] = [e for e in json.loads(out.stdout)["items"] if e["source"].get("gateway")]
    assert row["source"] == {"namespace": "default", "service": "edge", "gateway": "edge",
                             "workload": "edge-0"}


EDGE_ID = "gossamer.local/ns/default/sa/edge"


def test_observe_tap_shows_the_gateway_as_the_caller(edge: dict[str, Any]) -> None:
    """A Service tapped: the requests the gateway sent it name the gateway's identity."""
    u = edge["u"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GOSSAMER_")}
    tap = subprocess.Popen([*GOSSAMER, "tap", "catalog", "--json", "--max", "3", "--seconds",
                            "60", "--path", "/items"], env={**clean, **u.cli_env()},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        token, deadline = _token(edge), time.monotonic() + 60
        for _ in range(20):  # bounded: 20 rounds of 4 requests, 60 s
            if tap.poll() is not None or time.monotonic() > deadline:
                break
            assert {s for s, _, _ in _call(edge, "a.example.com", 4, token)} == {200}
            time.sleep(0.5)
        out, err = tap.communicate(timeout=60)
    finally:
        if tap.poll() is None:
            tap.kill()
            tap.communicate()
    assert tap.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["source"], e["method"], e["status"]) for e in events] == [
        (EDGE_ID, "GET", 200)] * 3
    assert all(e["path"].startswith("/items?i=") for e in events), events


def test_observe_tap_gateway_shows_the_edge_requests(edge: dict[str, Any]) -> None:
    """`tap gateway/edge`: requests as they arrive from outside, with the client's
    address, host, path, status and the route chosen (none for a refused token)."""
    u, o = edge["u"], edge["o"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GOSSAMER_")}
    tap = subprocess.Popen([*GOSSAMER, "tap", "gateway/edge", "--json", "--max", "4",
                            "--seconds", "60", "--path", "/items"],
                           env={**clean, **u.cli_env()},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        token, deadline = _token(edge), time.monotonic() + 60
        for _ in range(20):  # bounded: 20 rounds of 2 requests, 60 s
            if tap.poll() is not None or time.monotonic() > deadline:
                break
            assert [s for s, _, _ in _call(edge, "a.example.com", 1, token)] == [200]
            assert [s for s, _, _ in _call(edge, "a.example.com", 1)] == [401]
            time.sleep(0.5)
        out, err = tap.communicate(timeout=60)
    finally:
        if tap.poll() is None:
            tap.kill()
            tap.communicate()
    assert tap.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert len(events) == 4, out
    for e in events:
        assert e["source"].startswith(f"{o.address}:"), e
        assert e["destination"] == "edge-0.default"
        assert (e["authority"], e["method"]) == ("a.example.com", "GET")
        assert e["path"].startswith("/items?i="), e
    assert {(e["status"], e["route"]) for e in events} == {
        (200, "default/shop/rule0/match0"), (401, "-")}


def _explain(u: Universe, path: str, status: int) -> dict[str, Any] | None:
    out = u.cli("explain", "--path", path, "--json")
    if out.returncode != 0:
        return None
    found: dict[str, Any] = json.loads(out.stdout)
    return found if found["hops"] and found["hops"][0]["status"] == status else None


def _curl(edge: dict[str, Any], path: str, host: str = "a.example.com",
          token: str = "") -> str:
    g = edge["g"]
    out = edge["o"].run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert",
                         str(edge["root"] / "a.example.com.pem"), "--resolve",
                         f"a.example.com:{HTTPS}:{g.address}", "-H", f"Host: {host}",
                         *(["-H", f"Authorization: Bearer {token}"] if token else []),
                         f"https://a.example.com:{HTTPS}{path}"], check=True, timeout=60)
    return str(out.stdout)


def test_observe_explain_names_the_gateways_refusals(edge: dict[str, Any]) -> None:
    """404 for an unknown host and 401 without a token: the gateway's own decisions."""
    u = edge["u"]
    assert _curl(edge, "/explain-host", "elsewhere.example.com", _token(edge)) == "404"
    assert _curl(edge, "/explain-token") == "401"
    host = wait("no explanation of the 404", lambda: _explain(u, "/explain-host", 404), 60)
    assert (host["failed_at"], host["policy"]) == ("the gateway (edge-0)",
                                                   "Gateway default/edge")
    assert "has no route for host elsewhere.example.com" in host["cause"]
    token = wait("no explanation of the 401", lambda: _explain(u, "/explain-token", 401), 60)
    assert (token["failed_at"], token["policy"]) == ("the gateway (edge-0)",
                                                     "RequestAuthentication default/edge-jwt")
    assert "JWT was refused at the edge" in token["cause"]


def test_observe_explain_names_the_gateway_denied_at_the_callee(edge: dict[str, Any]) -> None:
    u = edge["u"]
    deny = {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "no-forbidden"},
            "spec": {"action": "DENY", "rules": [{"to": [{"operation": {
                "paths": ["/forbidden"]}}]}]}}
    with u.api() as api:
        assert api.post("/api/v1/apply", json=deny).is_success
    try:
        token = _token(edge)
        wait("the DENY does not apply", lambda: _curl(edge, "/forbidden", token=token)
             == "403", 60, u.logs)
        why = wait("no explanation of the 403", lambda: _explain(u, "/forbidden", 403), 60)
    finally:
        with u.api() as api:
            api.delete("/api/v1/resources/AuthorizationPolicy/default/no-forbidden")
    assert why["policy"] == "AuthorizationPolicy default/no-forbidden"
    assert f"denies spiffe://{EDGE_ID}" in why["cause"]
    assert why["failed_at"].startswith("the callee's sidecar (catalog")
    assert why["summary"].startswith("a client of Gateway default/edge (via edge-0) -> ")
