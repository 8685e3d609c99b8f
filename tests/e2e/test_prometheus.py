"""A real Prometheus, configured by `gossamer prometheus-config`, scrapes the demo."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import Mesh, running_mesh
from tests.e2e.prometheus import query, running_prometheus, wait_for
from tests.e2e.test_golden_metrics import gossamer

pytestmark = pytest.mark.slow

EDGE = "outbound|80||catalog-v1.default"
RPS, SECONDS = 5, 12  # the paced load: 60 requests over 12 s


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    yield from running_mesh(tmp_path_factory, "prometheus")


@pytest.fixture
def prometheus(demo: Mesh, tmp_path: Path) -> Iterator[str]:
    targets = tmp_path / "sidecars.json"
    out = gossamer(demo, "prometheus-config", "--scrape-interval", "1s",
                   "--file-sd", str(targets))
    assert out.returncode == 0, out.stderr
    with running_prometheus(out.stdout, tmp_path) as url:
        yield url


def test_config_lists_control_plane_and_every_sidecar(demo: Mesh, tmp_path: Path) -> None:
    out = gossamer(demo, "prometheus-config")
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load(out.stdout)
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert jobs["gossamer-control-plane"]["static_configs"][0]["targets"] == [
        demo.run.server.removeprefix("http://")]
    sidecars = jobs["gossamer-sidecars"]["static_configs"]
    assert {t["targets"][0] for t in sidecars} == {
        f"127.0.0.1:{i.admin_port}" for i in demo.run.instances}


def test_prometheus_sees_the_demo_edge_request_rate(demo: Mesh, prometheus: str) -> None:
    up = 'up{job=~"gossamer-.*"}'
    wait_for(prometheus, up, lambda r: len(r) == len(demo.run.instances) + 1
              and all(s["value"][1] == "1" for s in r))
    # The sidecar's stats config tags the whole cluster name (agent/stats.py).
    series = f'envoy_cluster_upstream_rq_total{{envoy_cluster_name="{EDGE}",service="frontend"}}'
    # Envoy creates a cluster's traffic counters on first use: absent until the load.
    wait_for(prometheus, 'envoy_server_live{service="frontend"}', lambda r: len(r) == 1)
    sent: list[float] = []  # wall-clock send times, Prometheus's clock
    with demo.client_via("frontend") as client:
        start = time.monotonic()
        for i in range(RPS * SECONDS):
            time.sleep(max(0.0, start + i / RPS - time.monotonic()))
            failing = i % 6 == 5  # 10 of the 60 answer 500
            sent.append(time.time())
            resp = client.get("http://catalog/items" + ("?status=500" if failing else ""))
            assert resp.status_code == (500 if failing else 200)
    # The last requests reach Prometheus on its next 1 s scrape.
    total = wait_for(prometheus, f"sum({series})",
                      lambda r: r and float(r[0]["value"][1]) >= RPS * SECONDS)
    assert float(total[0]["value"][1]) == RPS * SECONDS
    # The rate is compared with what the client really sent in the same window: on a
    # stalled machine the paced loop catches up in a burst, so a window can hold
    # more (or fewer) than RPS requests a second. The window starts a third into
    # the load, after the counter exists, and so holds about 40 requests.
    at = float(total[0]["value"][0])
    window = math.ceil(at - sent[len(sent) // 3])
    in_window = sum(1 for t in sent if at - window < t <= at)
    [rate] = query(prometheus, f"sum(rate({series}[{window}s]))", at=at)
    assert float(rate["value"][1]) == pytest.approx(in_window / window, rel=0.3)
    failed = query(prometheus, 'sum(envoy_cluster_upstream_rq_xx{envoy_response_code_class="5",'
                                f'envoy_cluster_name="{EDGE}",service="frontend"}})')
    assert float(failed[0]["value"][1]) == RPS * SECONDS / 6
    cp = query(prometheus, "gossamer_connected_proxies")
    assert float(cp[0]["value"][1]) == len(demo.run.instances)
