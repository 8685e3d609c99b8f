"""`gossamer up` runs a replica of each Gateway in its file: the demo with its ingress
gateway, called from outside the mesh (no proxy) on the Gateway's port."""

from __future__ import annotations

import time
from collections.abc import Iterator
from importlib import resources as pkg

import httpx
import pytest

from gossamer.testing.envoy import free_port
from tests.e2e.conftest import Mesh, running_mesh

pytestmark = pytest.mark.slow
@pytest.fixture(scope="module")
def port() -> int:
    """The gateway's port, picked when the module starts (one picked at collection can
    be taken by then)."""
    return free_port()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, port: int) -> Iterator[Mesh]:
    files = pkg.files("gossamer.demo")
    ingress = files.joinpath("ingress.yaml").read_text().replace("port: 18080",
                                                                  f"port: {port}")
    text = files.joinpath("demo.yaml").read_text() + "\n---\n" + ingress
    yield from running_mesh(tmp_path_factory, "gateway-local", text=text)


def test_up_runs_the_gateway_and_it_reaches_the_demo(demo: Mesh, port: int) -> None:
    assert [i.workload for i in demo.run.instances if not i.outbound_port] == [
        "demo-ingress-0"]
    resp = httpx.get(f"http://127.0.0.1:{port}/", timeout=10, trust_env=False)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["service"] == "frontend"
    assert body["upstreams"]["http://catalog/items"]["status"] == 200
    status = demo.api.get("/api/v1/resources/Gateway/default/demo-ingress").json()["status"]
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Accepted": "True", "Programmed": "True"}


def egress_app_text(outside_port: int) -> str:
    """The egress app, its outside server on `outside_port` (chosen when the fixture
    starts: a port picked at collection was taken by the time the test ran, once)."""
    return EGRESS_APP.replace("OUTSIDE_PORT", str(outside_port))


EGRESS_APP = """
apiVersion: local.gossamer.dev/v1alpha1
kind: Process
metadata: {name: shop}
spec:
  service: shop
  command: ["{python}", "-m", "gossamer.demo.app", "--name", "shop", "--port", "{port}"]
  probePath: /healthz
---
apiVersion: local.gossamer.dev/v1alpha1
kind: Process
metadata: {name: outside}
spec:
  service: outside
  inbound: false
  command: ["{python}", "-m", "http.server", "--bind", "127.0.0.1", "OUTSIDE_PORT"]
---
apiVersion: mesh.gossamer.dev/v1alpha1
kind: ExternalService
metadata: {name: ledger}
spec:
  hosts: [ledger.bank.example]
  endpoints: [127.0.0.1]
  ports: [{port: 80, protocol: HTTP, targetPort: OUTSIDE_PORT}]
  egress: {via: egress}
"""


@pytest.fixture(scope="module")
def egress_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    yield from running_mesh(tmp_path_factory, "egress-local",
                            text=egress_app_text(free_port()))


def test_up_runs_the_egress_gateway_its_external_services_name(egress_app: Mesh) -> None:
    [gateway] = [i for i in egress_app.run.instances if i.service == "egress"]
    assert gateway.workload == "egress-0"
    workload = egress_app.api.get("/api/v1/resources/Workload/default/egress-0").json()
    assert workload["spec"]["health"] == "Healthy"
    [shop] = [i for i in egress_app.run.instances if i.service == "shop"]
    # The call leaves through the gateway: its upstream_rq counts it.
    with httpx.Client(proxy=f"http://127.0.0.1:{shop.outbound_port}", trust_env=False,
                      timeout=10) as http:
        for _ in range(40):  # the outside server (a pure client to up) starts last
            resp = http.get("http://ledger.bank.example/")
            if resp.status_code == 200:
                break
            time.sleep(0.5)
    assert resp.status_code == 200, resp.text
    assert "Directory listing" in resp.text  # the outside server's answer
    stats = httpx.get(f"http://127.0.0.1:{gateway.admin_port}/stats?filter=external.80",
                      trust_env=False, timeout=10).text
    assert "external|80||ledger.default.upstream_rq_2xx: 1" in stats, stats
