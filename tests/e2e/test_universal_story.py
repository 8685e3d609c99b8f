"""The acceptance story of the mesh across hosts (issue 21), on five namespace hosts.

    a  the control plane (API over TLS on its bridge address, advertised as `a`)
    b  `client`: an unmodified app (curl, urllib, a gRPC and a raw TCP client)
    c  `catalog-c` (catalog v1, HTTP) and `greeter-c` (gRPC)
    d  `catalog-d` (catalog v2, HTTP) and `ledger-d` (raw TCP)
    e  `intruder`: a mesh workload of another identity

Every agent joined with only the control plane's URL, a join token file and the CA
bundle. The callers' and catalog's agents run with `--capture`: no HTTP_PROXY, no
special port; apps call Services by name (mesh DNS, virtual IPs). Every test asserts
exact outcomes: statuses, which instance served each request, the identity the
server saw. The failure tests come last, in file order (they take hosts away).

Where the rest of the story is tested: DNS forwarding, the outbound policy and the
rules after `kill -9` of an agent in test_capture.py; every observability command,
the dashboard and Prometheus across hosts in test_universal_observability.py (here:
`check`, `stat`, `edges`, `proxy-config` and `identity` for the captured sidecars).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.universe import API_PORT, GOSSAMER, XDS_PORT, Universe, wait
from tests.hosts import Host, HostNetwork

pytestmark = pytest.mark.slow
MESH, GATEWAY_API = "mesh.gossamer.dev/v1alpha1", "gateway.networking.k8s.io/v1"
TD = "gossamer.local"
CLIENT_ID = f"spiffe://{TD}/ns/default/sa/client"
CATALOG_ID = f"spiffe://{TD}/ns/default/sa/catalog"
PY = sys.executable
INBOUND = {"catalog-c": 15006, "catalog-d": 15006, "greeter-c": 15007, "ledger-d": 15008}
CATALOG = "outbound|80||catalog.default"

GRPC_SERVER = """
import os, sys
from concurrent import futures
import grpc
def say(req, ctx):
    xfcc = dict(ctx.invocation_metadata()).get("x-forwarded-client-cert", "")
    return (os.environ["GOSSAMER_WORKLOAD"] + " " + req[::-1].decode() + " " + xfcc).encode()
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
handler = grpc.unary_unary_rpc_method_handler(say)
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo",
                                                                      {"Say": handler}),))
server.add_insecure_port("127.0.0.1:" + sys.argv[1])
server.start()
server.wait_for_termination()
"""
GRPC_CLIENT = """
import sys
import grpc
with grpc.insecure_channel(sys.argv[1]) as ch:  # plain DNS resolution of the target
    say = ch.unary_unary("/test.Echo/Say")
    print(say(b"gossamer", timeout=10).decode())
"""
TCP_CLIENT = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as s:
        s.sendall(sys.argv[3].encode())
        s.settimeout(5)
        print(s.recv(100).decode() or "EOF")
except OSError as exc:
    print("ERR", type(exc).__name__)
"""
# Bounded in count and time; one line of JSON per request: status, serving workload,
# the headers the server saw (the ones this test reads).
LOAD = """
import json, sys, time, urllib.error, urllib.request
url, count, pause, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
headers = json.loads(sys.argv[5])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
deadline = time.monotonic() + limit
for _ in range(count):
    if time.monotonic() > deadline:
        break
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=20) as r:
            body = json.loads(r.read())
            seen = {k: body["headers"].get(k) for k in ("x-forwarded-client-cert", "x-route")}
            row = [r.status, body["workload"], seen]
    except urllib.error.HTTPError as e:
        row = [e.code, None, e.read().decode(errors="replace")[:200]]
    except OSError as e:
        row = [0, None, repr(e)]
    print(json.dumps(row), flush=True)
    time.sleep(pause)
"""


def service(name: str, port: int, protocol: str, selector: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": MESH, "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": selector, "ports": [{"port": port, "protocol": protocol}]}}


def catalog_route(route_header: str) -> dict[str, Any]:
    """x-version: v1 or v2 picks an instance's version; the rest goes to catalog (both
    instances) with an `x-route` header added on the way."""
    def to(version: str) -> dict[str, Any]:
        return {"matches": [{"headers": [{"name": "x-version", "value": version}]}],
                "backendRefs": [{"name": f"catalog-{version}"}]}
    return {"apiVersion": GATEWAY_API, "kind": "HTTPRoute", "metadata": {"name": "catalog"},
            "spec": {"parentRefs": [{"kind": "Service", "name": "catalog", "port": 80}],
                     "rules": [to("v1"), to("v2"), {
                         "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {
                             "set": [{"name": "x-route", "value": route_header}]}}],
                         "backendRefs": [{"name": "catalog"}]}]}}


POLICIES: list[dict[str, Any]] = [
    # Every sidecar is sent every Service: the intruder's calls reach catalog's hosts
    # and are refused (and counted) there, not by its own sidecar (translate/reach.py).
    {"apiVersion": MESH, "kind": "Mesh", "metadata": {"name": "default"},
     "spec": {"reachability": "all"}},
    service("catalog", 80, "http", {"app": "catalog"}),
    service("catalog-v1", 80, "http", {"app": "catalog", "version": "v1"}),
    service("catalog-v2", 80, "http", {"app": "catalog", "version": "v2"}),
    service("greeter", 9090, "grpc", {"app": "greeter"}),
    service("ledger", 5432, "tcp", {"app": "ledger"}),
    {"apiVersion": MESH, "kind": "PeerAuthentication",
     "metadata": {"name": "strict", "namespace": "gossamer-system"},
     "spec": {"mtls": {"mode": "STRICT"}}},
    catalog_route("story"),
    {"apiVersion": MESH, "kind": "FaultPolicy", "metadata": {"name": "catalog-chaos"},
     "spec": {"targetRef": {"kind": "Service", "name": "catalog"},
              "abort": {"httpStatus": 418, "percent": 100},
              "match": {"headers": [{"name": "x-chaos", "value": "on"}]}}},
    {"apiVersion": MESH, "kind": "AuthorizationPolicy", "metadata": {"name": "catalog-callers"},
     "spec": {"targetRef": {"kind": "Service", "name": "catalog"}, "action": "ALLOW",
              "rules": [{"from": [{"source": {"principals": [CLIENT_ID, CATALOG_ID]}}]}]}},
    # As a user would: retry what a lost instance fails with on the next one, eject it.
    {"apiVersion": MESH, "kind": "ResiliencePolicy", "metadata": {"name": "catalog"},
     "spec": {"targetRef": {"kind": "Service", "name": "catalog"},
              "timeouts": {"request": "15s", "perTry": "2s", "connect": "1s"},
              "retries": {"attempts": 3,
                          "retryOn": ["connect-failure", "gateway-error", "reset"]},
              "outlierDetection": {"consecutiveGatewayErrors": 1, "interval": "1s",
                                   "baseEjectionTime": "30s", "maxEjectionPercent": 50}}},
]


class Story(Universe):
    """The hosts' agents (argv kept to restart them) and what the tests send."""

    agents: dict[str, tuple[Host, list[str]]]
    procs: dict[str, subprocess.Popen[bytes]]
    control_plane: subprocess.Popen[bytes]

    def start(self, name: str) -> None:
        host, argv = self.agents[name]
        self.procs[name] = host.popen(argv, log=self.logs / f"{name}.log")

    def stop(self, name: str) -> None:
        proc = self.procs[name]
        proc.terminate()
        proc.wait(timeout=60)

    def agent(self, host: Host, name: str, service: str, app_port: int, app: list[str],
              *extra: str) -> None:
        argv = [*GOSSAMER, "proxy", "--service", service, "--name", name,
                "--control-plane", f"https://a:{API_PORT}", "--token-file",
                str(self.join_token(service).rename(self.net.workroot / f"{name}.token")),
                "--ca-file", str(self.bundle_file),
                "--address", host.address, "--app-port", str(app_port),
                "--drain-seconds", "0.5", "--workdir", str(self.net.workroot / name),
                *extra, "--", *app]
        self.agents[name] = (host, argv)
        self.start(name)

    def start_control_plane(self) -> None:
        a = self.net["a"]
        self.control_plane = a.popen(
            [*GOSSAMER, "control-plane", "-v", "--state-dir", str(self.state), "--host", a.address,
             "--advertise-address", "a", "--api-port", str(API_PORT), "--xds-port",
             str(XDS_PORT), "--stats-interval", "1", "--stats-window", "1800"],
            log=self.logs / "control-plane.log")

        def up() -> bool:
            with self.api() as api:
                return api.get("/healthz").is_success
        wait("the control plane is not up", lambda: self.bundle_file.exists() and up(), 60,
             self.logs)

    def apply(self, *docs: dict[str, Any]) -> None:
        with self.api() as api:
            for doc in docs:
                resp = api.post("/api/v1/apply", json=doc)
                assert resp.is_success, resp.text

    def in_sync(self, count: int) -> None:
        def synced() -> bool:
            with self.api() as api:
                proxies = api.get("/api/v1/proxies").json()
            return len([p for p in proxies if p["connected"] and p["synced"]]) == count
        wait(f"{count} proxies connected and in sync", synced, 120, self.logs)

    def endpoints(self, caller: str, cluster: str = CATALOG) -> list[str]:
        """`cluster`'s endpoints in the caller's Envoy (EDS, read across hosts)."""
        with self.api() as api:
            dump = api.get(f"/api/v1/proxies/{caller}.default/config_dump",
                           params={"section": "endpoints"}).json()
        return sorted(
            f"{h['endpoint']['address']['socket_address']['address']}:"
            f"{h['endpoint']['address']['socket_address']['port_value']}"
            for e in dump["dynamic_endpoint_configs"]
            if e["endpoint_config"]["cluster_name"] == cluster
            for group in e["endpoint_config"].get("endpoints", [])
            for h in group["lb_endpoints"])

    def envoy_stat(self, workload: str, name: str) -> int:
        """A counter of the workload's Envoy, read on its own host's loopback admin."""
        host, _ = self.agents[workload]
        admin = int(self.proxy(workload)["metadata"]["admin_port"])
        pattern = urllib.parse.quote(f"^{re.escape(name)}$")
        out = host.run(["curl", "-sS", f"http://127.0.0.1:{admin}/stats?filter={pattern}"],
                       check=True).stdout
        return int(out.split(": ")[1]) if out.strip() else 0

    def load(self, host: str, count: int, path: str = "/items", pause: float = 0.0,
             headers: dict[str, str] | None = None, limit: float = 120.0) -> list[Any]:
        done = self.net[host].run([PY, "-c", LOAD, f"http://catalog{path}", str(count),
                                   str(pause), str(limit), json.dumps(headers or {})],
                                  check=True, timeout=limit + 60)
        return [json.loads(line) for line in done.stdout.splitlines()]

    @contextlib.contextmanager
    def steady_load(self, count: int, pause: float, limit: float) -> Iterator[list[Any]]:
        """Requests from b's app in the background; the rows fill in at the end."""
        out: list[Any] = []
        proc = subprocess.Popen(self.net["b"].argv([PY, "-c", LOAD, "http://catalog/items",
                                                    str(count), str(pause), str(limit), "{}"]),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            yield out
            stdout, stderr = proc.communicate(timeout=limit + 60)
            assert proc.returncode == 0, stderr
            out.extend(json.loads(line) for line in stdout.splitlines())
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


@pytest.fixture(name="story", scope="module")
def story_fixture(module_netns_hosts: HostNetwork) -> Iterator[Story]:
    net = module_netns_hosts
    _, b, c, d, e = (net.add(name) for name in "abcde")
    root = net.workroot
    story = Story(net, root / "state", root / "logs")
    story.logs.mkdir()
    story.agents, story.procs = {}, {}
    story.start_control_plane()
    story.apply(*POLICIES)
    (root / "greeter.py").write_text(GRPC_SERVER)
    catalog = [PY, "-m", "gossamer.demo.app", "--name", "catalog", "--port", "8080"]
    for host, version in ((c, "v1"), (d, "v2")):
        story.agent(host, f"catalog-{host.name}", "catalog", 8080, catalog, "--capture",
                    "--inbound-port", "15006", "--probe-path", "/healthz",
                    "-l", "app=catalog", "-l", f"version={version}")
    story.agent(c, "greeter-c", "greeter", 9091, [PY, str(root / "greeter.py"), "9091"],
                "--inbound-port", str(INBOUND["greeter-c"]), "-l", "app=greeter")
    story.agent(d, "ledger-d", "ledger", 9000, [PY, "-m", "gossamer.demo.tcpecho", "--port",
                                                "9000"],
                "--inbound-port", str(INBOUND["ledger-d"]), "-l", "app=ledger")
    story.agent(b, "client", "client", 0, ["sleep", "3600"], "--capture")
    story.agent(e, "intruder", "intruder", 0, ["sleep", "3600"], "--capture")
    story.in_sync(6)
    for cluster, endpoints in ((CATALOG, [f"{c.address}:15006", f"{d.address}:15006"]),
                               ("outbound|9090||greeter.default", [f"{c.address}:15007"]),
                               ("outbound|5432||ledger.default", [f"{d.address}:15008"])):
        wait(f"{cluster}'s instances in client's EDS",
             lambda cl=cluster, eps=endpoints: story.endpoints("client", cl) == eps, 60,
             story.logs)
    yield story
    for name in ("client", "intruder", "greeter-c", "ledger-d", "catalog-c", "catalog-d"):
        with contextlib.suppress(subprocess.TimeoutExpired):
            story.stop(name)
    story.control_plane.terminate()
    story.control_plane.wait(timeout=30)


def test_curl_by_name_reaches_both_hosts_over_mutual_tls(story: Story) -> None:
    b = story.net["b"]
    out = b.run(["curl", "-sS", "--max-time", "10", "http://catalog/items"], check=True)
    body = json.loads(out.stdout)
    assert (body["service"], body["path"], body["headers"]["host"]) == (
        "catalog", "/items", "catalog")
    assert f"URI={CLIENT_ID}" in body["headers"]["x-forwarded-client-cert"]
    # Round robin over the two hosts: every other request, exactly.
    rows = story.load("b", 20)
    assert Counter((status, who) for status, who, _ in rows) == {
        (200, "catalog-c"): 10, (200, "catalog-d"): 10}
    for _, _, seen in rows:
        assert seen["x-route"] == "story"  # the route's header modifier
        assert f"URI={CLIENT_ID}" in seen["x-forwarded-client-cert"]
        assert f"By={CATALOG_ID}" in seen["x-forwarded-client-cert"]


def test_routes_and_policies_apply_as_locally(story: Story) -> None:
    assert {(s, who) for s, who, _ in story.load("b", 6, headers={"x-version": "v1"})} == {
        (200, "catalog-c")}
    assert {(s, who) for s, who, _ in story.load("b", 6, headers={"x-version": "v2"})} == {
        (200, "catalog-d")}
    chaos = story.load("b", 4, headers={"x-chaos": "on"})
    assert [(s, who) for s, who, _ in chaos] == [(418, None)] * 4  # the FaultPolicy
    # By virtual IP too: the capture listener routes the VIP as it routes the name.
    with story.api() as api:
        vip = api.get("/api/v1/resources/Service/default/catalog").json()["status"]["virtualIP"]
    out = story.net["b"].run(["curl", "-sS", "--max-time", "10", f"http://{vip}/by-ip"],
                             check=True)
    assert json.loads(out.stdout)["headers"]["x-route"] == "story"


def test_a_grpc_client_and_a_raw_tcp_client_resolve_and_connect_by_name(story: Story) -> None:
    b = story.net["b"]
    for _ in range(3):
        out = b.run([PY, "-c", GRPC_CLIENT, "greeter:9090"], check=True).stdout.split()
        assert out[:2] == ["greeter-c", "remassog"]
        assert f"URI={CLIENT_ID}" in out[2]  # the server saw the caller's identity
    for word in ("one", "two"):
        assert b.run([PY, "-c", TCP_CLIENT, "ledger", "5432", word],
                     check=True).stdout.strip() == f"echo:{word}"


def test_plaintext_and_other_identities_are_refused_across_hosts(story: Story) -> None:
    a, c = story.net["a"], story.net["c"]
    # Host a runs no sidecar: plaintext to catalog's app port (captured to the inbound
    # listener) and to the inbound port itself both fail, STRICT mutual TLS.
    for port in (8080, INBOUND["catalog-c"]):
        out = a.run(["curl", "-sS", "--max-time", "5", f"http://{c.address}:{port}/items"])
        assert out.returncode != 0, out.stdout
        assert out.stdout == ""
    # A mesh workload of another identity is refused by the AuthorizationPolicy.
    assert [(s, who) for s, who, _ in story.load("e", 4)] == [(403, None)] * 4
    assert {s for s, _, _ in story.load("b", 4)} == {200}


def test_the_cli_shows_the_captured_sidecars_on_every_host(story: Story) -> None:
    out = story.cli("check")
    assert out.returncode == 0, out.stderr
    for node in ("client", "intruder", "catalog-c", "catalog-d", "greeter-c", "ledger-d"):
        assert f"proxy {node}.default: connected, in sync" in out.stdout.splitlines()
    # The catalog instances' stats, read by the control plane across hosts: 5 more
    # requests each (round robin) than before.
    def requests() -> dict[str, int]:
        done = story.cli("stat", "workload", "-o", "json")
        assert done.returncode == 0, done.stderr
        return {r["name"]: r["requests"] for r in json.loads(done.stdout)["items"]}
    wait("stat reads both catalog instances",
         lambda: {"catalog-c", "catalog-d"} <= set(requests()), 60, story.logs)
    time.sleep(2)  # a second sample, so the counts below are differences
    before = requests()
    assert _served(story.load("b", 10)) == {(200, "catalog-c"): 5, (200, "catalog-d"): 5}
    wait("stat counts the requests on both hosts", lambda: (
        (now := requests())["catalog-c"] == before["catalog-c"] + 5
        and now["catalog-d"] == before["catalog-d"] + 5), 60, story.logs)
    edges = story.cli("edges", "catalog", "-o", "json")
    assert edges.returncode == 0, edges.stderr
    items = json.loads(edges.stdout)["items"]
    # The intruder's calls, refused on catalog's hosts, and the header routes' calls.
    assert [(e["requests"], e["responses"]["4xx"]) for e in items
            if e["source"]["workload"] == "intruder"] == [(4, 4), (4, 4)]
    [routed] = [e for e in items if e["source"]["workload"] == "client" and e["routed"]]
    backends = {b["destination"]: b["requests"] for b in routed["backends"]}
    assert (backends["catalog-v1.default"], backends["catalog-v2.default"]) == (6, 6)
    ident = story.cli("identity", "catalog-d")
    assert ident.returncode == 0, ident.stderr
    assert f"spiffe://{TD}/ns/default/sa/catalog" in ident.stdout
    listeners = json.loads(story.cli("proxy-config", "client", "listeners").stdout)
    assert {"outbound_capture", "dns"} <= {x["name"] for x in listeners["dynamic_listeners"]}


def test_every_sidecar_reached_the_control_plane_without_waiting_on_dns(story: Story) -> None:
    """The agents name the control plane `a` (in each host's /etc/hosts only; the
    hosts' resolver never answers). Envoy resolves the xDS cluster's name itself: had
    it asked for AAAA first, that query would wait out c-ares' timeouts, 15-30 s
    before its first config, when the ICMP that ends it early is rate-limited."""
    for name in ("client", "intruder", "greeter-c", "ledger-d", "catalog-c", "catalog-d"):
        assert story.envoy_stat(name, "dns.cares.resolve_total") > 0, name
        assert story.envoy_stat(name, "dns.cares.timeouts") == 0, name


def _served(rows: list[Any]) -> Counter[tuple[int, str | None]]:
    return Counter((status, who) for status, who, _ in rows)


def _failed(rows: list[Any]) -> list[Any]:
    """The requests not answered 200, with what the client saw (for the message)."""
    return [(i, row) for i, row in enumerate(rows) if row[0] != 200]


def test_a_killed_workload_loses_no_request_and_leaves_eds(story: Story) -> None:
    c, d = story.net["c"], story.net["d"]
    pid = int((story.net.workroot / "catalog-d" / "app.pid").read_text())
    with story.steady_load(count=150, pause=0.05, limit=60) as rows:
        time.sleep(2)
        os.kill(pid, signal.SIGKILL)
        wait("catalog-d leaves client's EDS",
             lambda: story.endpoints("client") == [f"{c.address}:15006"], 60, story.logs)
    served = _served(rows)  # every request answered 200, by one instance or the other
    # d, until killed
    assert set(served) == {(200, "catalog-c"), (200, "catalog-d")}, (served, _failed(rows))
    assert len(rows) >= 50, len(rows)
    # The instance stays out while its app is down, and comes back with a new one.
    story.stop("catalog-d")
    story.start("catalog-d")
    wait("catalog-d back in client's EDS", lambda: story.endpoints("client") == [
        f"{c.address}:15006", f"{d.address}:15006"], 90, story.logs)
    wait("catalog-d serves again", lambda: ("catalog-d" in {who for _, who, _ in
                                                            story.load("b", 4)}), 60)


def test_a_host_cut_off_loses_no_request_and_leaves_eds_after_its_lease(story: Story) -> None:
    """The bound of docs/universal.md ("When a host fails"): the lease (15 s) runs from
    the last heartbeat (every 5 s), so the instance leaves 10-16 s after the cut, plus
    the push; asserted with wide margins (a shared CI machine). Not sooner than the
    lease: nothing but the lease removes a host that is merely unreachable."""
    c, d = story.net["c"], story.net["d"]
    both = [f"{c.address}:15006", f"{d.address}:15006"]
    admin = int(story.proxy("catalog-d")["metadata"]["admin_port"])
    retried = story.envoy_stat("client", f"cluster.{CATALOG}.upstream_rq_retry")
    ejected = story.envoy_stat("client", f"cluster.{CATALOG}.outlier_detection."
                                         "ejections_enforced_total")
    with story.steady_load(count=300, pause=0.05, limit=90) as rows:
        time.sleep(2)
        cut = time.monotonic()
        subprocess.run(["ip", "link", "set", d.veth, "down"], check=True, timeout=30)
        wait("catalog-d leaves client's EDS",
             lambda: story.endpoints("client") == [f"{c.address}:15006"], 90, story.logs)
        gone = time.monotonic() - cut
        # Cut off, d keeps its last config (c's instance included: d's sidecar cannot
        # hear of the change) and serves its own callers (c is out of reach: the retry
        # goes to d's own instance).
        clusters = d.run(["curl", "-sS", f"http://127.0.0.1:{admin}/clusters"],
                         check=True).stdout
        for address in both:
            assert f"{CATALOG}::{address}::cx_total" in clusters
        own = json.loads(d.run(["curl", "-sS", "--max-time", "15", "http://catalog/x"],
                               check=True).stdout)
        assert own["workload"] == "catalog-d"
        subprocess.run(["ip", "link", "set", d.veth, "up"], check=True, timeout=30)
        back = time.monotonic()
        wait("catalog-d back in client's EDS", lambda: story.endpoints("client") == both,
             90, story.logs)
        returned = time.monotonic() - back
    served = _served(rows)
    assert set(served) == {(200, "catalog-c"), (200, "catalog-d")}, (served, _failed(rows))
    assert len(rows) >= 100, len(rows)
    # What kept every request whole: retries on c, and d's ejection until EDS caught up.
    assert story.envoy_stat("client", f"cluster.{CATALOG}.upstream_rq_retry") > retried
    assert story.envoy_stat("client", f"cluster.{CATALOG}.outlier_detection."
                                      "ejections_enforced_total") > ejected
    print(f"catalog-d left EDS {gone:.1f} s after its link went down, "
          f"came back {returned:.1f} s after it came up")
    assert 8 < gone < 45
    assert returned < 45


def test_sidecars_keep_serving_without_the_control_plane_and_resync(story: Story) -> None:
    story.control_plane.terminate()
    assert story.control_plane.wait(timeout=60) == 0
    rows = story.load("b", 20)
    assert _served(rows) == {(200, "catalog-c"): 10, (200, "catalog-d"): 10}
    assert {seen["x-route"] for _, _, seen in rows} == {"story"}
    story.start_control_plane()
    story.in_sync(6)
    story.apply(catalog_route("resynced"))

    def routed() -> bool:
        return {seen["x-route"] for _, _, seen in story.load("b", 2)} == {"resynced"}
    wait("the change after the control plane's return reaches b", routed, 60, story.logs)

