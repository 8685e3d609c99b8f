"""`gossamer up` runs a replica of each Gateway in its file: the demo with its ingress
gateway, called from outside the mesh (no proxy) on the Gateway's port."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources as pkg

import httpx
import pytest

from gossamer.testing.envoy import free_port
from tests.e2e.conftest import Mesh, running_mesh

pytestmark = pytest.mark.slow
PORT = free_port()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    files = pkg.files("gossamer.demo")
    ingress = files.joinpath("ingress.yaml").read_text().replace("port: 18080",
                                                                  f"port: {PORT}")
    text = files.joinpath("demo.yaml").read_text() + "\n---\n" + ingress
    yield from running_mesh(tmp_path_factory, "gateway-local", text=text)


def test_up_runs_the_gateway_and_it_reaches_the_demo(demo: Mesh) -> None:
    assert [i.workload for i in demo.run.instances if not i.outbound_port] == [
        "demo-ingress-0"]
    resp = httpx.get(f"http://127.0.0.1:{PORT}/", timeout=10, trust_env=False)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["service"] == "frontend"
    assert body["upstreams"]["http://catalog/items"]["status"] == 200
    status = demo.api.get("/api/v1/resources/Gateway/default/demo-ingress").json()["status"]
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Accepted": "True", "Programmed": "True"}
