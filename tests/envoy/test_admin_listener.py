"""A sidecar's off-host listeners, with a real agent, its Envoy and the real control plane.

`gossamer proxy --admin-tls-port P --prometheus-port Q` (on loopback here, where both
are off unless asked): the control plane reads the allowed admin paths through
`gossamer_admin` with its own client certificate, and the API's config dump and
certificates come that way; a client without the control plane's identity (no
certificate, or a workload certificate of another identity) gets no answer, a path
outside the allow-list gets 403 from the listener (Envoy's admin never sees it), and
the control plane refuses a sidecar that presents another identity.
`gossamer_prometheus` serves GET /stats/prometheus and nothing else.
The whole story across hosts is tests/e2e/test_universal_observability.py.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest

from gossamer.ca import pki
from gossamer.ca.tokens import Scope
from gossamer.contract.spiffe import SpiffeId
from gossamer.controlplane.server import ControlPlane, ControlPlaneOptions
from gossamer.envoy.admin import PeerTls, fetch, get_json
from gossamer.envoy.errors import AdminError
from gossamer.proxyadmin.access import client_context
from gossamer.proxyadmin.target import AdminTarget
from gossamer.testing.envoy import free_port

pytestmark = pytest.mark.slow
NODE = "echo-0.default"
ECHO_ID = "spiffe://gossamer.local/ns/default/sa/echo"
WEB = {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Service", "metadata": {"name": "web"},
       "spec": {"ports": [{"port": 80}]}}


@dataclass
class Sidecar:
    cp: ControlPlane
    admin_port: int
    tls_port: int
    prometheus_port: int
    join_token: str

    @property
    def meta(self) -> dict[str, Any]:
        status = self.cp.registry.get(NODE)
        assert status is not None
        return dict(status.node.metadata)

    def target(self) -> AdminTarget:
        found = self.cp.sidecar_admin.target(self.meta)
        assert found is not None
        return found

    async def stat(self, name: str) -> int:
        doc = await get_json("127.0.0.1", self.admin_port, f"/stats?format=json&filter=^{name}$",
                             timeout=5)
        return sum(int(s.get("value", 0)) for s in doc["stats"] if s.get("name") == name)


@pytest.fixture
async def sidecar(tmp_path: Path) -> AsyncIterator[Sidecar]:
    cp = ControlPlane(ControlPlaneOptions(state_dir=None, xds_port=0, api_port=0,
                                          debounce=0.01))
    await cp.start()
    agent = None
    try:
        assert cp.ca is not None
        assert cp.tokens is not None
        bundle = tmp_path / "bundle.pem"
        bundle.write_text(cp.ca.bundle_pem())
        token, _ = await cp.tokens.create(Scope.JOIN, namespace="default", account="echo")
        async with httpx.AsyncClient(trust_env=False) as http:
            applied = await http.post(
                f"http://127.0.0.1:{cp.api_port}/api/v1/apply", json=WEB,
                headers={"Authorization": f"Bearer {cp.admin_token}"})
            assert applied.status_code == 200, applied.text
        admin, tls_port, prom_port = free_port(), free_port(), free_port()
        agent = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gossamer", "proxy", "--service", "echo", "--name", "echo-0",
            "--app-port", "0", "--address", "127.0.0.1", "--admin-port", str(admin),
            "--admin-tls-port", str(tls_port), "--prometheus-port", str(prom_port),
            "--server", f"http://127.0.0.1:{cp.api_port}", "--ca-file", str(bundle),
            "--drain-seconds", "0.5", "--workdir", str(tmp_path / "work"),
            env={**os.environ, "GOSSAMER_TOKEN": token},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not ((s := cp.registry.get(NODE)) and s.connected):
            assert time.monotonic() < deadline, (tmp_path / "work" / "envoy.log").read_text()
            assert agent.returncode is None, "the agent exited"
            await asyncio.sleep(0.1)
        sidecar = Sidecar(cp, admin, tls_port, prom_port, token)
        while True:  # the listeners are up once the server is LIVE
            try:
                if (await fetch("127.0.0.1", admin, "GET", "/ready", timeout=2))[0] == 200:
                    break
            except AdminError:
                pass
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        yield sidecar
    finally:
        if agent is not None and agent.returncode is None:
            agent.terminate()
            try:
                await asyncio.wait_for(agent.wait(), 30)
            except TimeoutError:
                agent.kill()
                await agent.wait()
        await cp.stop()


def _undated(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Envoy's /certs without `days_until_expiration`, which Envoy computes when it is
    read: a 24 h certificate read in the second it was issued has 1 day left, and 0 a
    second later, so two reads of one certificate may differ there alone."""
    return [{kind: [{k: v for k, v in cert.items() if k != "days_until_expiration"}
                    for cert in certs]
             for kind, certs in entry.items()} for entry in entries]


async def test_the_control_plane_reads_the_admin_over_mutual_tls(sidecar: Sidecar) -> None:
    meta = sidecar.meta
    assert (meta["admin_tls_address"], meta["admin_tls_port"]) == ("127.0.0.1",
                                                                    sidecar.tls_port)
    assert (meta["prometheus_address"], meta["prometheus_port"]) == ("127.0.0.1",
                                                                      sidecar.prometheus_port)
    target = sidecar.target()
    assert (target.host, target.port) == ("127.0.0.1", sidecar.tls_port)
    assert target.tls is not None
    assert target.tls.spiffe_id == ECHO_ID
    info = await get_json(target.host, target.port, "/server_info", timeout=5, tls=target.tls)
    assert info["state"] == "LIVE"
    certs = await get_json(target.host, target.port, "/certs", timeout=5, tls=target.tls)
    assert any(san.get("uri") == ECHO_ID for entry in certs["certificates"]
               for cert in entry.get("cert_chain", ()) for san in cert["subject_alt_names"])
    for path in ("/ready", "/clusters", "/stats?filter=server.live", "/config_dump?include_eds"):
        status, _ = await fetch(target.host, target.port, "GET", path, timeout=10,
                                tls=target.tls)
        assert (path, status) == (path, 200)

    # The scraper goes the same way.
    scraper = sidecar.cp.telemetry
    failures = scraper.failures  # its own rounds may have run before the listener was up
    await scraper.scrape_once()
    assert scraper.failures == failures
    assert len(scraper._samples[NODE]) >= 1

    # And the API, for the CLI: certificates, and the config dump without the join token.
    api = httpx.AsyncClient(base_url=f"http://127.0.0.1:{sidecar.cp.api_port}", timeout=30,
                            trust_env=False,
                            headers={"Authorization": f"Bearer {sidecar.cp.admin_token}"})
    async with api:
        served = (await api.get(f"/api/v1/proxies/{NODE}/certs")).json()
        assert _undated(served["certificates"]) == _undated(certs["certificates"])
        clusters = (await api.get(f"/api/v1/proxies/{NODE}/config_dump",
                                  params={"section": "clusters"})).json()
        assert list(clusters) == ["dynamic_active_clusters"]
        [web] = clusters["dynamic_active_clusters"]
        assert web["cluster"]["name"] == "outbound|80||web.default"
        dump = await api.get(f"/api/v1/proxies/{NODE}/config_dump")
        assert dump.status_code == 200
        assert sidecar.join_token not in dump.text
        ads = dump.json()["bootstrap"]["dynamic_resources"]["ads_config"]
        assert ads["grpc_services"][0]["initial_metadata"] == [
            {"key": "authorization", "value": "[redacted]"}]
        bad = await api.get(f"/api/v1/proxies/{NODE}/config_dump", params={"section": "x"})
        assert bad.status_code == 422
        missing = await api.get("/api/v1/proxies/nobody.default/certs")
        assert (missing.status_code, missing.json()["error"]) == (
            404, "proxy 'nobody.default' is not connected")


async def _refused(target: AdminTarget, tls: PeerTls) -> BaseException:
    """The error a request gets; fails the test if an HTTP status came back."""
    try:
        status, _ = await fetch(target.host, target.port, "GET", "/server_info", timeout=10,
                                tls=tls)
    except AdminError as exc:
        return exc
    raise AssertionError(f"answered HTTP {status}")


async def test_only_the_control_planes_identity_gets_in(sidecar: Sidecar,
                                                        tmp_path: Path) -> None:
    target = sidecar.target()
    assert target.tls is not None
    listener = f"listener.127.0.0.1_{sidecar.tls_port}.ssl"

    # No client certificate: the handshake is refused.
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.check_hostname = False
    anonymous.load_verify_locations(cadata=sidecar.cp.ca.bundle_pem())  # type: ignore[union-attr]
    refused = await _refused(target, PeerTls(anonymous, ECHO_ID))
    assert isinstance(refused.__cause__, ssl.SSLError | h11.RemoteProtocolError | OSError)
    # A workload certificate of the mesh, of another identity.
    other = SpiffeId("gossamer.local", "default", "web")
    key = pki.generate_workload_key()
    issued = sidecar.cp.ca.sign(pki.make_csr(key, other), other)  # type: ignore[union-attr]
    from cryptography.hazmat.primitives import serialization

    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    web = client_context(issued.chain_pem.encode(), key_pem,
                         sidecar.cp.ca.bundle_pem())  # type: ignore[union-attr]
    await _refused(target, PeerTls(web, ECHO_ID))
    assert await sidecar.stat(f"{listener}.fail_verify_no_cert") == 1
    assert await sidecar.stat(f"{listener}.fail_verify_san") == 1

    # The control plane's identity, on a path or method outside the allow-list: 403 from
    # the listener (Envoy's admin would answer each of these 200).
    for method, path in (("GET", "/runtime"), ("POST", "/logging?level=trace"),
                         ("POST", "/stats"), ("GET", "/stats/../runtime"),
                         ("GET", "/config_dump/../../runtime"), ("GET", "/tap")):
        status, body = await fetch(target.host, target.port, method, path, timeout=10,
                                   tls=target.tls)
        assert (method, path, status, body) == (
            method, path, 403, b"gossamer: this admin path is not served off-host\n")
    status, _ = await fetch(target.host, target.port, "GET", "/config_dump%2F..%2Fruntime",
                            timeout=10, tls=target.tls)
    assert status == 400  # escaped slashes are refused before any route
    assert await sidecar.stat("http.gossamer_admin.downstream_rq_4xx") == 7
    levels = await fetch("127.0.0.1", sidecar.admin_port, "POST", "/logging", timeout=5)
    assert levels[0] == 200
    assert b": trace" not in levels[1]

    # The control plane refuses a sidecar that is not the workload it expects.
    impostor = PeerTls(target.tls.context, "spiffe://gossamer.local/ns/default/sa/web")
    with pytest.raises(AdminError, match=f"presented {ECHO_ID}, not spiffe://gossamer.local/"
                                         "ns/default/sa/web"):
        await fetch(target.host, target.port, "GET", "/ready", timeout=10, tls=impostor)


async def test_the_prometheus_listener_serves_only_prometheus_stats(sidecar: Sidecar) -> None:
    port = sidecar.prometheus_port
    status, body = await fetch("127.0.0.1", port, "GET", "/stats/prometheus", timeout=10)
    assert status == 200
    assert b'envoy_server_live{source_namespace="default",source_service="echo"' in body
    for method, path in (("GET", "/stats"), ("GET", "/config_dump"), ("GET", "/server_info"),
                         ("POST", "/stats/prometheus"), ("GET", "/stats/prometheus/../certs"),
                         ("POST", "/quitquitquit")):
        status, body = await fetch("127.0.0.1", port, method, path, timeout=10)
        assert (method, path, status) == (method, path, 404)
    assert await sidecar.stat("http.gossamer_prometheus.downstream_rq_4xx") == 6
