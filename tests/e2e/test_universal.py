"""The mesh across hosts (network namespaces on one bridge, tests/hosts.py).

Host `a` runs the control plane on its bridge address, API over TLS, advertising
itself by name (`a`, in every host's hosts file). Hosts `b` and `c` join with only
what a new host has: the control plane's URL, a join token in a file, and the CA
bundle (c) or its fingerprint (b). b's app calls `catalog` through its sidecar
(explicit mode: HTTP_PROXY) and c's app answers it, over mutual TLS between the
hosts. The CLI runs in the root namespace, over TLS, with the bundle."""

from __future__ import annotations

import json
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gossamer.ca import fingerprint
from tests.e2e.universe import API_PORT, APP_PORT, GOSSAMER, INBOUND_PORT, Universe, universe
from tests.hosts import HostNetwork

pytestmark = pytest.mark.slow


@pytest.fixture(name="universe", scope="module")
def universe_fixture(module_netns_hosts: HostNetwork,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[Universe]:
    yield from universe(module_netns_hosts, tmp_path_factory.mktemp("universal"))


CALL = """
import json, sys, urllib.request
out = []
for i in range(int(sys.argv[1])):
    with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[2]}/?i={i}", timeout=10) as r:
        out.append([r.status, json.loads(r.read())])
print(json.dumps(out))
"""


def test_a_call_crosses_hosts_over_mutual_tls(universe: Universe) -> None:
    u, requests = universe, 20
    b, c = u.net["b"], u.net["c"]
    with u.api() as api:
        workloads = {d["metadata"]["name"]: d["spec"]
                     for d in api.get("/api/v1/resources/Workload").json()}
    # Each agent detected its host's address, registered it, and Envoy listens there.
    assert (workloads["web-0"]["address"], workloads["catalog-0"]["address"]) == (
        b.address, c.address)
    admin = _admin_port(u, "web-0")
    clusters = b.run(["curl", "-s", f"http://127.0.0.1:{admin}/clusters"], check=True).stdout
    assert f"outbound|80||catalog.default::{c.address}:{INBOUND_PORT}::" in clusters
    # Envoy's admin stays on the host's loopback: not reachable at its address.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((b.address, admin), timeout=10).close()

    out = b.run([sys.executable, "-c", CALL, str(requests), str(APP_PORT)], check=True)
    answers = json.loads(out.stdout)
    assert [status for status, _ in answers] == [200] * requests
    for _, body in answers:
        upstream = body["upstreams"]["http://catalog/items"]
        assert upstream["status"] == 200
        assert upstream["body"]["workload"] == "catalog-0"
        # c's sidecar verified b's certificate and says whose it was.
        xfcc = upstream["body"]["headers"]["x-forwarded-client-cert"]
        assert "URI=spiffe://gossamer.local/ns/default/sa/web" in xfcc
        assert "By=spiffe://gossamer.local/ns/default/sa/catalog" in xfcc
    served = re.findall(r'"GET /items HTTP/1\.1" 200', (u.logs / "c.log").read_text())
    assert len(served) == requests


def _admin_port(u: Universe, workload: str) -> int:
    return int(u.proxy(workload)["metadata"]["admin_port"])


def test_the_cli_checks_the_mesh_over_tls_from_the_root(universe: Universe) -> None:
    u = universe
    env = u.cli_env()
    out = u.cli("check")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "proxy catalog-0.default: connected, in sync" in lines
    assert "proxy web-0.default: connected, in sync" in lines
    untrusted = u.cli("check", env={**env, "GOSSAMER_CA_FILE": ""})
    assert untrusted.returncode == 1
    assert len(untrusted.stderr.splitlines()) == 1
    assert "failed TLS verification" in untrusted.stderr


PLAIN = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10) as s:
    s.sendall(b"GET /api/v1/ca HTTP/1.1\\r\\nHost: a\\r\\nAuthorization: Bearer x\\r\\n\\r\\n")
    try:
        print(repr(s.recv(100)))
    except ConnectionResetError:
        print(repr(b""))
"""


def test_no_plaintext_api_from_another_host(universe: Universe) -> None:
    u, b = universe, universe.net["b"]
    answer = b.run([sys.executable, "-c", PLAIN, u.a.address, str(API_PORT)], check=True)
    assert not answer.stdout.startswith("b'HTTP"), answer.stdout
    # The same port over TLS, verified by the name the control plane advertises.
    fetch = ("import httpx, ssl, sys; print(httpx.get(sys.argv[1], verify="
             "ssl.create_default_context(cafile=sys.argv[2])).status_code)")
    tls = b.run([sys.executable, "-c", fetch, f"https://a:{API_PORT}/healthz",
                 str(u.bundle_file)], check=True)
    assert tls.stdout.strip() == "200"


def test_a_wrong_fingerprint_is_refused_in_one_line(universe: Universe, tmp_path: Path) -> None:
    u, b = universe, universe.net["b"]
    wrong = "sha256:" + "ab" * 32
    out = b.run([*GOSSAMER, "proxy", "--service", "web", "--app-port", "0", "--control-plane",
                 f"https://a:{API_PORT}", "--token-file", str(u.join_token("web")),
                 "--ca-fingerprint", wrong, "--workdir", str(tmp_path)],
                env={"GOSSAMER_CONNECT_TIMEOUT": "10"})
    assert out.returncode == 1
    actual = fingerprint.show(fingerprint.of_bundle(u.bundle_file.read_text())[0])
    assert out.stderr.splitlines() == [
        f"error: the control plane at https://a:{API_PORT} is not the pinned one: its CA "
        f"bundle ({actual}) does not hold --ca-fingerprint {wrong}"]
