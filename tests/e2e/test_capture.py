"""Transparent capture with real traffic, on network namespace hosts (issue 21).

Host A runs an unmodified client under `gossamer proxy --capture` (no HTTP_PROXY,
its resolv.conf pointing at the host's resolver); host B runs catalog, captured
too; host C runs db (TCP), greeter (gRPC) and a plain TCP server outside the mesh.
The control plane runs in the root namespace on the bridge (tests/hosts.py: the
hosts' resolver is the root's bridge address, where a test responder answers). Then, by name only:
HTTP, raw TCP and gRPC reach their Services over mutual TLS; the outbound policy
passes or refuses a non-mesh destination, live; DNS outside the mesh is forwarded;
a plaintext client cannot reach catalog's app port around its sidecar; the rules
survive a `kill -9` of the agent as exactly one set, and a stop removes them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from gossamer.testing.envoy import free_port
from tests.dnswire import Responder
from tests.hosts import HostNetwork

pytestmark = pytest.mark.slow
API = "mesh.gossamer.dev/v1alpha1"
PY = sys.executable
UPSTREAM_DNS_ANSWER = "198.18.77.77"
T = TypeVar("T")

ECHO_SERVER = """
import json, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = json.dumps({"server": os.environ["NAME"], "path": self.path,
                           "host": self.headers.get("host"),
                           "xfcc": self.headers.get("x-forwarded-client-cert", "")}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
"""
GRPC_SERVER = """
import sys, time
from concurrent import futures
import grpc
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
say = grpc.unary_unary_rpc_method_handler(lambda req, ctx: req[::-1])
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", {"Say": say}),))
server.add_insecure_port("127.0.0.1:" + sys.argv[1])
server.start()
server.wait_for_termination()
"""
PLAIN_SERVER = """
import socket, sys, threading
def serve(conn):
    with conn:
        while data := conn.recv(4096):
            conn.sendall(b"plain:" + data)
with socket.create_server((sys.argv[1], int(sys.argv[2]))) as s:
    while True:
        conn, _ = s.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""
TCP_PROBE = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as s:
        s.sendall(b"hi")
        s.settimeout(5)
        print(s.recv(100).decode() or "EOF")
except OSError as exc:
    print("ERR", type(exc).__name__)
"""
GRPC_PROBE = """
import sys
import grpc
with grpc.insecure_channel(sys.argv[1]) as ch:
    say = ch.unary_unary("/test.Echo/Say")
    print(say(b"gossamer", timeout=10).decode())
"""


def eventually(probe: Callable[[], T], good: Callable[[T], bool], what: str,
               timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    last = probe()
    while not good(last):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: last result {last!r}")
        time.sleep(0.3)
        last = probe()
    return last


class World:
    """The hosts, the control plane and the agents of this module."""

    def __init__(self, net: HostNetwork, resolver: Responder) -> None:
        self.net = net
        self.resolver = resolver
        self.work = net.workroot  # searchable by Envoy's uid, down to every workdir
        self.api_port, self.xds_port = free_port(), free_port()
        # Beyond loopback the API is served over TLS, verified with the mesh's bundle.
        self.server = f"https://{net.root_address}:{self.api_port}"
        self.agents: dict[str, tuple[list[str], dict[str, str], str]] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.admin_ports: dict[str, int] = {}
        self.token = ""

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.server, trust_env=False, timeout=10,
                            verify=ssl.create_default_context(
                                cafile=str(self.work / "cp" / "ca-bundle.pem")),
                            headers={"Authorization": f"Bearer {self.token}"})

    def start_control_plane(self) -> None:
        self.net.popen([PY, "-m", "gossamer", "control-plane", "--host",
                        self.net.root_address, "--api-port", str(self.api_port),
                        "--xds-port", str(self.xds_port), "--state-dir",
                        str(self.work / "cp")], log=self.work / "control-plane.log")
        eventually(lambda: (self.work / "cp" / "admin-token").exists()
                   and (self.work / "cp" / "ca-bundle.pem").exists(), bool,
                   "the control plane's admin token and CA bundle")
        self.token = (self.work / "cp" / "admin-token").read_text().strip()

        def up() -> bool:
            try:
                return self.api().get("/healthz").status_code == 200
            except httpx.HTTPError:
                return False
        eventually(up, bool, "the control plane")
        with self.api() as api:
            (self.work / "ca.pem").write_text(api.get("/api/v1/ca").json()["bundle_pem"])

    def apply(self, *docs: dict[str, Any]) -> None:
        with self.api() as api:
            for doc in docs:
                resp = api.post("/api/v1/apply", json=doc)
                assert resp.status_code == 200, resp.text

    def join_token(self, service: str) -> str:
        with self.api() as api:
            out = api.post("/api/v1/tokens", json={"scope": "join", "service": service,
                                                   "namespace": "default"})
            assert out.status_code == 200, out.text
            return str(out.json()["token"])

    def agent(self, name: str, host: str, service: str, app_port: int, command: list[str],
              *extra: str, env: dict[str, str] | None = None) -> None:
        admin = free_port()
        self.admin_ports[name] = admin
        argv = [PY, "-m", "gossamer", "proxy", "--service", service, "--name", name,
                "--app-port", str(app_port), "--server", self.server,
                "--ca-file", str(self.work / "ca.pem"), "--admin-port", str(admin),
                "--outbound-port", str(free_port()), "--workdir", str(self.work / name),
                "--drain-seconds", "0.5", "--address", self.net[host].address, *extra,
                "--", *command]
        self.agents[name] = (argv, {"GOSSAMER_TOKEN": self.join_token(service),
                                    **(env or {})}, host)
        self.start_agent(name)

    def start_agent(self, name: str) -> None:
        argv, env, host = self.agents[name]
        self.procs[name] = self.net[host].popen(argv, log=self.work / f"{name}.log", env=env)

    def synced(self, count: int) -> None:
        def proxies() -> list[dict[str, Any]]:
            with self.api() as api:
                return list(api.get("/api/v1/proxies").json())
        eventually(proxies, lambda ps: sum(1 for p in ps if p["connected"] and p["synced"])
                   >= count, f"{count} proxies in sync", timeout=60)

    def healthy(self, service: str) -> None:
        def workloads() -> list[dict[str, Any]]:
            with self.api() as api:
                return list(api.get("/api/v1/resources/Workload").json())
        eventually(workloads, lambda ws: any(w["spec"]["service"] == service
                                             and w["spec"]["health"] == "Healthy"
                                             for w in ws), f"{service} healthy", timeout=60)

    def vip(self, service: str) -> str:
        """Waits for it: the control plane allocates it after the apply."""
        def status() -> dict[str, Any]:
            with self.api() as api:
                doc = api.get(f"/api/v1/resources/Service/default/{service}").json()
                return dict(doc.get("status") or {})
        return str(eventually(status, lambda s: bool(s.get("virtualIP")),
                              f"{service}'s virtual IP")["virtualIP"])

    def probe(self, host: str, script: str, *args: str) -> str:
        done = self.net[host].run([PY, "-c", script, *args])
        return (done.stdout.strip() or done.stderr.strip()[-300:])

    def curl(self, host: str, url: str) -> str:
        return self.net[host].run(["curl", "-sS", "--max-time", "10", url]).stdout

    def envoy_stat(self, name: str, stat: str) -> int:
        port = self.admin_ports[name]
        out = self.net[self.agents[name][2]].run(
            ["curl", "-s", f"http://127.0.0.1:{port}/stats?filter={stat}"]).stdout
        for line in out.splitlines():
            key, _, value = line.partition(": ")
            if key == stat:
                return int(value)
        return 0


def service(name: str, port: int, protocol: str) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Service", "metadata": {"name": name},
            "spec": {"ports": [{"port": port, "protocol": protocol}]}}


@pytest.fixture(scope="module")
def world(module_netns_hosts: HostNetwork) -> Iterator[World]:
    net = module_netns_hosts
    for name in ("a", "b", "c"):
        net.add(name)
    with contextlib.closing(Responder(net.root_address, 53, UPSTREAM_DNS_ANSWER)) as resolver:
        w = World(net, resolver)
        for name, text in (("echo_server.py", ECHO_SERVER), ("grpc_server.py", GRPC_SERVER),
                           ("plain_server.py", PLAIN_SERVER)):
            (w.work / name).write_text(text)
        w.start_control_plane()
        w.apply(service("catalog", 80, "http"), service("db", 5432, "tcp"),
                service("greeter", 9090, "grpc"),
                {"apiVersion": API, "kind": "PeerAuthentication",
                 "metadata": {"name": "strict", "namespace": "gossamer-system"},
                 "spec": {"mtls": {"mode": "STRICT"}}})
        w.agent("catalog-0", "b", "catalog", 8080, [PY, str(w.work / "echo_server.py")],
                "--capture", "--inbound-port", "15006", env={"NAME": "catalog"})
        w.agent("db-0", "c", "db", 9000, [PY, "-m", "gossamer.demo.tcpecho", "--port", "9000"],
                "--protocol", "tcp", "--inbound-port", "15010")
        w.agent("greeter-0", "c", "greeter", 9091, [PY, str(w.work / "grpc_server.py"), "9091"],
                "--protocol", "grpc", "--inbound-port", "15011")
        w.agent("client-0", "a", "client", 0, ["sleep", "3600"], "--capture")
        net["c"].popen([PY, str(w.work / "plain_server.py"), net["c"].address, "7777"],
                       log=w.work / "plain.log")
        w.synced(4)
        for svc in ("catalog", "db", "greeter"):
            w.healthy(svc)
        yield w


def test_an_app_calls_a_service_by_name_over_mutual_tls(world: World) -> None:
    out = eventually(lambda: world.curl("a", "http://catalog/items"), lambda o: "server" in o,
                     "curl http://catalog/items from host A")
    seen = json.loads(out)
    assert (seen["server"], seen["path"], seen["host"]) == ("catalog", "/items", "catalog")
    # catalog's app saw the caller's verified identity: the hop was mutual TLS.
    assert "URI=spiffe://gossamer.local/ns/default/sa/client" in seen["xfcc"]
    by_vip = json.loads(world.curl("a", f"http://{world.vip('catalog')}/by-ip"))
    assert (by_vip["server"], by_vip["path"]) == ("catalog", "/by-ip")


def _via_catalog(parent: str, *filters: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": parent},
            "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": parent}],
                     "rules": [{"backendRefs": [{"name": "catalog", "port": 80}],
                                "filters": list(filters)}]}}


def test_the_address_an_app_calls_decides_the_routes_not_its_host_header(
        world: World) -> None:
    """GAMMA's MeshFrontendHostname: echo-v2's route sets a response header, echo-v1's
    does not (both send to catalog). A request to echo-v2's virtual IP with `Host:
    echo-v1` follows echo-v2's route, and the other way round."""
    world.apply(service("echo-v1", 80, "http"), service("echo-v2", 80, "http"),
                _via_catalog("echo-v1"),
                _via_catalog("echo-v2", {"type": "ResponseHeaderModifier",
                                         "responseHeaderModifier": {
                                             "set": [{"name": "X-Header-Set", "value": "set"}]}}))

    def get(url: str, host: str | None = None) -> tuple[int, dict[str, str]]:
        argv = ["curl", "-sS", "-o", "/dev/null", "-D", "-", "--max-time", "10", url]
        out = world.net["a"].run([*argv, *(["-H", f"Host: {host}"] if host else [])]).stdout
        lines = out.replace("\r", "").splitlines() or ["HTTP/1.1 000"]
        headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
        return int(lines[0].split()[1]), headers

    v1, v2 = world.vip("echo-v1"), world.vip("echo-v2")
    eventually(lambda: get("http://echo-v2/"), lambda r: r[1].get("x-header-set") == "set",
               "echo-v2's route in effect")
    eventually(lambda: get("http://echo-v1/"), lambda r: r[0] == 200, "echo-v1's route")
    status, headers = get(f"http://{v2}/", host="echo-v1")
    assert (status, headers.get("x-header-set")) == (200, "set")
    status, headers = get(f"http://{v1}/", host="echo-v2")
    assert (status, headers.get("x-header-set")) == (200, None)
    # By name, the name and the address agree.
    assert get("http://echo-v2/")[1].get("x-header-set") == "set"
    assert get("http://echo-v1/")[1].get("x-header-set") is None


def test_a_raw_tcp_client_and_a_grpc_client_reach_services_by_name(world: World) -> None:
    assert eventually(lambda: world.probe("a", TCP_PROBE, "db", "5432"),
                      lambda o: o.startswith("echo:"), "TCP to db:5432") == "echo:hi"
    assert eventually(lambda: world.probe("a", GRPC_PROBE, "greeter:9090"),
                      lambda o: o == "remassog", "gRPC to greeter:9090") == "remassog"


def test_mesh_names_resolve_to_virtual_ips_and_other_names_are_forwarded(world: World) -> None:
    a = world.net["a"]
    hosts = a.run(["getent", "ahostsv4", "catalog.default.svc.cluster.local"])
    assert world.vip("catalog") in hosts.stdout
    other = a.run(["getent", "ahostsv4", "www.example.org"])
    assert UPSTREAM_DNS_ANSWER in other.stdout
    assert "www.example.org" in world.resolver.asked


def test_the_outbound_policy_passes_or_refuses_non_mesh_destinations_live(world: World) -> None:
    plain = (world.net["c"].address, "7777")
    assert world.probe("a", TCP_PROBE, *plain) == "plain:hi"  # ALLOW_ANY, the default
    mesh = {"apiVersion": API, "kind": "Mesh", "metadata": {"name": "default"},
            "spec": {"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}}
    world.apply(mesh)
    refused = eventually(lambda: world.probe("a", TCP_PROBE, *plain),
                         lambda o: o != "plain:hi", "REGISTRY_ONLY to take effect")
    assert refused in ("EOF", "ERR ConnectionResetError"), refused
    assert world.envoy_stat("client-0", "tcp.registry_only_refused.downstream_cx_total") >= 1
    # mesh Services are still reachable
    assert world.probe("a", TCP_PROBE, "db", "5432") == "echo:hi"
    mesh["spec"] = {"outboundTrafficPolicy": {"mode": "ALLOW_ANY"}}
    world.apply(mesh)
    eventually(lambda: world.probe("a", TCP_PROBE, *plain), lambda o: o == "plain:hi",
               "ALLOW_ANY again")


def test_a_plaintext_client_cannot_reach_the_app_port_around_the_sidecar(world: World) -> None:
    # The app listens on every address of host B...
    inside = world.net["b"].run(["curl", "-sS", "--max-time", "5", "http://127.0.0.1:8080/x"])
    assert json.loads(inside.stdout)["server"] == "catalog"
    # ...but from another host its port is the inbound listener, which is STRICT mTLS.
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{world.net['b'].address}:8080/x", timeout=5, trust_env=False)


def test_a_killed_agent_restarted_leaves_exactly_one_set_of_rules(world: World) -> None:
    rules = world.net["b"].nat_rules()
    assert "-A OUTPUT -j GOSSAMER_OUTPUT" in rules
    assert len(rules) == len(set(rules))
    proc = world.procs["catalog-0"]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert world.net["b"].nat_rules() == rules  # left behind by the kill
    world.start_agent("catalog-0")
    world.synced(4)
    world.healthy("catalog")
    assert world.net["b"].nat_rules() == rules  # replaced, not stacked
    out = eventually(lambda: world.curl("a", "http://catalog/again"), lambda o: "server" in o,
                     "catalog after the restart")
    assert json.loads(out)["path"] == "/again"


def test_a_stopped_agent_removes_every_rule(world: World) -> None:
    assert world.net["a"].nat_rules()
    proc = world.procs["client-0"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert world.net["a"].nat_rules() == []
    assert not Path(f"/proc/{proc.pid}").exists()
