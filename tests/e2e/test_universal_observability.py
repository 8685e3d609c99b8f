"""Observability across hosts (tests/e2e/universe.py: the control plane on host a, web on
b, catalog on c). Every command and the dashboard's API, run from the root namespace
over TLS, show the sidecars on b and c, which the control plane reaches through their
`gossamer_admin` mTLS listeners; a real Prometheus scrapes every host; `gossamer_admin`
admits only the control plane's identity and only the allowed admin paths, and Envoy's
own admin is not reachable off-host.

The tests share one mesh and run in file order: the golden-metrics counts are exact
because nothing else sends traffic before them.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from gossamer.ca import pki
from gossamer.contract.spiffe import SpiffeId, control_plane_id
from gossamer.envoy.admin import PeerTls, fetch, get_json
from gossamer.envoy.errors import AdminError
from gossamer.proxyadmin.access import client_context
from gossamer.store import open_store
from tests.e2e.prometheus import query, running_prometheus, wait_for
from tests.e2e.universe import API_PORT, GOSSAMER, INBOUND_PORT, Universe, universe, wait
from tests.hosts import Host, HostNetwork

pytestmark = pytest.mark.slow
REQUESTS = 12
TD = "gossamer.local"
WEB_ID, CATALOG_ID = f"{TD}/ns/default/sa/web", f"{TD}/ns/default/sa/catalog"
REFUSED = b"gossamer: this admin path is not served off-host\n"
# Requests from an app on host b through its sidecar (HTTP_PROXY, explicit mode).
SEND = """
import json, sys, urllib.error, urllib.request
proxy, url, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
headers = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
codes = []
for _ in range(count):
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=10) as r:
            codes.append(r.status)
    except urllib.error.HTTPError as e:
        codes.append(e.code)
print(json.dumps(codes))
"""


@pytest.fixture(name="u", scope="module")
def universe_fixture(module_netns_hosts: HostNetwork,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[Universe]:
    # Stats read every second and kept for the whole module: the counts are exact.
    yield from universe(module_netns_hosts, tmp_path_factory.mktemp("observe"),
                        ("--stats-interval", "1", "--stats-window", "1800"))


def _send(u: Universe, path: str, count: int, headers: dict[str, str] | None = None
          ) -> list[int]:
    """`count` requests from web's app on host b to catalog, through web's sidecar."""
    outbound = int(u.proxy("web-0")["metadata"]["outbound_port"])
    out = u.net["b"].run([sys.executable, "-c", SEND, f"http://127.0.0.1:{outbound}",
                          f"http://catalog{path}", str(count), json.dumps(headers or {})],
                         check=True, timeout=120)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, out.stderr
    return out.stdout


def _stats(u: Universe, kind: str) -> list[dict[str, Any]]:
    return json.loads(_ok(u.cli("stat", kind, "-o", "json")))["items"]  # type: ignore[no-any-return]


def test_every_sidecar_reports_where_the_control_plane_reaches_it(u: Universe) -> None:
    for workload, host in (("web-0", u.net["b"]), ("catalog-0", u.net["c"])):
        meta = u.proxy(workload)["metadata"]
        assert {k: meta[k] for k in ("inbound_address", "admin_tls_address", "admin_tls_port",
                                     "prometheus_address", "prometheus_port")} == {
            "inbound_address": host.address, "admin_tls_address": host.address,
            "admin_tls_port": 15091, "prometheus_address": host.address,
            "prometheus_port": 15090}
    lines = _ok(u.cli("check")).splitlines()
    assert "proxy catalog-0.default: connected, in sync" in lines
    assert "proxy web-0.default: connected, in sync" in lines


def test_stat_edges_and_top_show_traffic_between_hosts(u: Universe) -> None:
    # Both sidecars are read across hosts (two samples each) before any traffic.
    wait("the control plane does not read both sidecars' stats",
         lambda: {r["name"] for r in _stats(u, "workload")} == {"catalog-0", "web-0"}, 60,
         u.logs)
    assert _send(u, "/items", REQUESTS) == [200] * REQUESTS

    def counted() -> list[dict[str, Any]] | None:
        rows = _stats(u, "workload")
        return rows if [r["requests"] for r in rows] == [REQUESTS, 0] else None
    catalog, web = wait("catalog-0 did not serve the requests", counted, 60, u.logs)
    assert (catalog["name"], catalog["service"], catalog["responses"]["2xx"],
            catalog["success_rate"]) == ("catalog-0", "catalog", REQUESTS, 1.0)
    assert (web["name"], web["service"], web["requests"]) == ("web-0", "web", 0)
    [service] = [r for r in _stats(u, "service") if r["name"] == "catalog"]
    assert (service["requests"], service["workloads"]) == (REQUESTS, 1)

    [edge] = json.loads(_ok(u.cli("edges", "catalog", "-o", "json")))["items"]
    assert edge["source"] == {"namespace": "default", "service": "web", "workload": "web-0"}
    assert (edge["destination"], edge["requests"], edge["responses"]["2xx"]) == (
        "catalog.default", REQUESTS, REQUESTS)
    table = _ok(u.cli("edges", "catalog")).splitlines()
    assert table[1].split()[:3] == ["web-0.default", "web", "catalog.default"]
    top = _ok(u.cli("top", "--edges", "--once")).splitlines()
    row = top[2].split()
    assert (row[0], row[1], row[7], row[8]) == ("web-0.default", "catalog.default",
                                                str(REQUESTS), f"2xx={REQUESTS}")

    # The dashboard reads the same API: both hosts' sidecars, and the edge between them.
    with u.api() as api:
        graph = api.get("/api/v1/graph").json()
        proxies = api.get("/api/v1/proxies").json()
        page = api.get("/dashboard/")
    assert [(e["id"], e["requests"]) for e in graph["edges"]] == [
        ("web.default->catalog.default", REQUESTS)]
    assert {n["id"]: n["requests"] for n in graph["nodes"]} == {
        "catalog.default": REQUESTS, "web.default": 0}
    assert sorted((p["node_id"], p["metadata"]["inbound_address"], p["connected"])
                  for p in proxies) == [
        ("catalog-0.default", u.net["c"].address, True),
        ("web-0.default", u.net["b"].address, True)]
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]


def _drive(u: Universe, proc: subprocess.Popen[str], path: str) -> tuple[str, str]:
    """Requests to `path` until the streaming command ends (bounded: 60 s, 20 rounds)."""
    deadline = time.monotonic() + 60
    for _ in range(20):
        if proc.poll() is not None or time.monotonic() > deadline:
            break
        assert _send(u, path, 3) == [200] * 3
        time.sleep(0.5)
    try:
        return proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _stream(u: Universe, *args: str) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GOSSAMER_")}
    return subprocess.Popen([*GOSSAMER, *args], env={**clean, **u.cli_env()},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_tap_and_top_stream_requests_served_on_another_host(u: Universe) -> None:
    tap = _stream(u, "tap", "catalog", "--json", "--max", "3", "--seconds", "60",
                  "--path", "/tapped")
    out, err = _drive(u, tap, "/tapped")
    assert tap.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["source"], e["destination"], e["method"], e["path"], e["status"])
            for e in events] == [(WEB_ID, "catalog-0.default", "GET", "/tapped", 200)] * 3

    top = _stream(u, "top", "catalog", "--once", "--seconds", "60", "--max", "3")
    out, err = _drive(u, top, "/topped")
    assert top.returncode == 0, err
    rows = [line.split() for line in out.splitlines()[2:]]
    assert [r[:5] for r in rows] == [["web.default", "catalog", "GET", "/topped", "3"]]


def test_proxy_config_and_identity_of_sidecars_on_other_hosts(u: Universe) -> None:
    c = u.net["c"]
    endpoints = json.loads(_ok(u.cli("proxy-config", "web-0", "endpoints")))
    found = {e["endpoint_config"]["cluster_name"]: [
        (h["endpoint"]["address"]["socket_address"]["address"],
         h["endpoint"]["address"]["socket_address"]["port_value"])
        for group in e["endpoint_config"].get("endpoints", []) for h in group["lb_endpoints"]]
        for e in endpoints["dynamic_endpoint_configs"]}
    assert found["outbound|80||catalog.default"] == [(c.address, INBOUND_PORT)]
    listeners = json.loads(_ok(u.cli("proxy-config", "catalog-0", "listeners")))
    [inbound] = [x["active_state"]["listener"] for x in listeners["dynamic_listeners"]
                 if x["name"] == "inbound"]
    assert inbound["address"]["socket_address"] == {"address": c.address,
                                                   "port_value": INBOUND_PORT}
    everything = _ok(u.cli("proxy-config", "catalog-0"))
    assert (u.state.parent / "catalog.token").read_text().strip() not in everything
    assert '"value": "[redacted]"' in everything

    with u.api() as api:
        issued = {e["spiffe_id"]: e["serial"] for e in api.get("/api/v1/ca").json()["issued"]}
    for workload, spiffe in (("web-0", WEB_ID), ("catalog-0", CATALOG_ID)):
        lines = dict(x.split(":", 1) for x in _ok(u.cli("identity", workload)).splitlines())
        assert lines["spiffe id"].strip() == f"spiffe://{spiffe}"
        assert int(lines["serial"], 16) == int(issued[f"spiffe://{spiffe}"], 16)
    missing = u.cli("proxy-config", "nobody", "routes")
    assert (missing.returncode, missing.stderr.strip()) == (
        1, "error: no connected proxy for workload default/nobody")


def test_explain_failures_reported_by_sidecars_on_both_hosts(u: Universe) -> None:
    chaos = {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "FaultPolicy",
             "metadata": {"name": "catalog-chaos"},
             "spec": {"targetRef": {"kind": "Service", "name": "catalog"},
                      "abort": {"httpStatus": 503, "percent": 100},
                      "match": {"headers": [{"name": "x-chaos", "value": "on"}]}}}
    with u.api() as api:
        assert api.post("/api/v1/apply", json=chaos).is_success
    try:
        wait("the fault does not apply", lambda: _send(u, "/chaos", 1, {"x-chaos": "on"})
             == [503], 60, u.logs)
        fault = json.loads(_ok(u.cli("explain", "--path", "/chaos", "--json")))
        assert fault["policy"] == "FaultPolicy default/catalog-chaos"
        assert fault["failed_at"] == "the caller's sidecar (web-0)"
        assert "aborts 100% of requests carrying x-chaos" in fault["cause"]
    finally:
        with u.api() as api:
            api.delete("/api/v1/resources/FaultPolicy/default/catalog-chaos")

    assert _send(u, "/broken?status=500", 1) == [500]
    broken = json.loads(_ok(u.cli("explain", "--path", "/broken", "--json")))
    assert broken["failed_at"] == "the app (catalog-0)"
    assert "answered 500 itself" in broken["cause"]
    # Both ends logged it: web's sidecar on host b, catalog's on host c.
    assert sorted((h["direction"], h["reporter"]["workload"]) for h in broken["hops"]) == [
        ("inbound", "catalog-0"), ("outbound", "web-0")]


def test_prometheus_scrapes_every_host(u: Universe, tmp_path: Path) -> None:
    config = _ok(u.cli("prometheus-config", "--scrape-interval", "1s"))
    jobs = {j["job_name"]: j for j in yaml.safe_load(config)["scrape_configs"]}
    control_plane = jobs["gossamer-control-plane"]
    assert (control_plane["scheme"], control_plane["tls_config"],
            control_plane["static_configs"]) == (
        "https", {"ca_file": str(u.bundle_file)}, [{"targets": [f"{u.a.address}:{API_PORT}"]}])
    assert sorted((t["targets"], t["labels"]["workload"])
                  for t in jobs["gossamer-sidecars"]["static_configs"]) == sorted([
        ([f"{u.net['c'].address}:15090"], "catalog-0"),
        ([f"{u.net['b'].address}:15090"], "web-0")])
    with running_prometheus(config, tmp_path) as prometheus:
        up = wait_for(prometheus, 'up{job=~"gossamer-.*"}',
                      lambda r: len(r) == 3 and all(s["value"][1] == "1" for s in r), 60)
        assert sorted(s["metric"]["instance"] for s in up) == sorted([
            f"{u.a.address}:{API_PORT}", f"{u.net['b'].address}:15090",
            f"{u.net['c'].address}:15090"])
        sent = ('envoy_cluster_upstream_rq_total{envoy_cluster_name="outbound|80||'
                'catalog.default",workload="web-0"}')
        before = float(wait_for(prometheus, sent, lambda r: len(r) == 1)[0]["value"][1])
        assert _send(u, "/scraped", 5) == [200] * 5
        wait_for(prometheus, sent, lambda r: float(r[0]["value"][1]) == before + 5)
        [proxies] = query(prometheus, "gossamer_connected_proxies")
        assert proxies["value"][1] == "2"


def _mint(u: Universe, identity: SpiffeId) -> ssl.SSLContext:
    """A client context holding a certificate of `identity` from the mesh CA: the test
    reads the CA's key from the control plane's store, as only the control plane may."""
    async def signer() -> pki.CaKeyPair:
        store = open_store(str(u.state / "gossamer.db"))
        try:
            stored = await store.get("_CA", "gossamer-system", "ca")
        finally:
            await store.close()
        assert stored is not None
        root = stored.body["roots"][stored.body["signer_index"]]
        return pki.load_keypair(root["cert_pem"], root["key_pem"], root["chain_pem"])
    key = pki.generate_workload_key()
    issued = pki.sign_workload_csr(asyncio.run(signer()), pki.make_csr(key, identity), identity,
                                   datetime.now(UTC), timedelta(hours=1), timedelta(hours=1))
    return client_context(issued.chain_pem.encode(), key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()), u.bundle_file.read_text())


def _get(host: Host, path: str, tls: PeerTls | None, method: str = "GET",
         port: int = 15091) -> tuple[int, bytes]:
    return asyncio.run(fetch(host.address, port, method, path, timeout=10, tls=tls))


def test_the_admin_listener_admits_only_the_control_planes_identity(u: Universe) -> None:
    c = u.net["c"]
    catalog = f"spiffe://{CATALOG_ID}"
    as_control_plane = PeerTls(_mint(u, control_plane_id(TD)), catalog)
    assert _get(c, "/ready", as_control_plane) == (200, b"LIVE\n")

    anonymous = ssl.create_default_context(cafile=u.bundle_file)
    anonymous.check_hostname = False
    for who in (PeerTls(anonymous, catalog),  # no client certificate
                PeerTls(_mint(u, SpiffeId(TD, "default", "web")), catalog)):  # a workload's
        with pytest.raises(AdminError):
            _get(c, "/ready", who)
    listener = f"listener.{c.address}_15091.ssl"
    stats = asyncio.run(get_json(c.address, 15091, f"/stats?format=json&filter=^{listener}",
                                 timeout=10, tls=as_control_plane))
    counts = {s["name"]: s.get("value") for s in stats["stats"]}
    assert (counts[f"{listener}.fail_verify_no_cert"], counts[f"{listener}.fail_verify_san"]) \
        == (1, 1)

    # The control plane's identity, outside the allow-list: refused by the listener.
    for method, path in (("POST", "/quitquitquit"), ("GET", "/runtime"),
                         ("POST", "/logging?level=trace"), ("GET", "/stats/../runtime")):
        assert _get(c, path, as_control_plane, method) == (403, REFUSED)
    # Prometheus's listener serves its one path.
    assert _get(c, "/stats/prometheus", None, port=15090)[0] == 200
    assert _get(c, "/config_dump", None, port=15090)[0] == 404
    # Envoy's own admin is on the host's loopback only.
    admin = int(u.proxy("catalog-0")["metadata"]["admin_port"])
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((c.address, admin), timeout=10).close()
    assert _send(u, "/items", 1) == [200]  # catalog's Envoy still serves
