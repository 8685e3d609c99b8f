"""Sidecar metrics: Prometheus output carries mesh labels; stats the mesh does not use are gone."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.envoy.harness import MiniMesh, Sidecar, get, proxy_client, wait_for

pytestmark = pytest.mark.slow

_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Sample = tuple[str, dict[str, str], float]


async def prometheus(side: Sidecar) -> list[Sample]:
    text = await side.envoy.aadmin_get("/stats/prometheus")
    out = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m and not line.startswith("#"):
            out.append((m[1], dict(_LABEL.findall(m[2] or "")), float(m[3])))
    return out


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [v for n, ls, v in samples if n == name and labels.items() <= ls.items()]
    assert len(found) == 1, (name, labels, [s for s in samples if s[0] == name])
    return found[0]


async def test_prometheus_stats_carry_mesh_labels(mini: MiniMesh, make_backend: Any) -> None:
    [server] = await mini.serve("echo", [make_backend("A")])
    client = await mini.client()
    await mini.wait_synced()
    async with proxy_client(client) as http:
        codes = [(await get(client, http=http)).status_code for _ in range(7)]
        codes += [(await get(client, http=http, headers={"x-test-status": "404"})).status_code
                  for _ in range(3)]
    assert codes == [200] * 7 + [404] * 3

    edge = {"source_namespace": "default", "source_service": "client",
            "source_workload": "client-0", "destination_service": "echo",
            "destination_namespace": "default", "destination_port": "80",
            "envoy_cluster_name": "outbound|80||echo.default"}
    samples = await prometheus(client)
    assert value(samples, "envoy_cluster_upstream_rq", **edge, envoy_response_code="200") == 7
    assert value(samples, "envoy_cluster_upstream_rq", **edge, envoy_response_code="404") == 3
    assert value(samples, "envoy_cluster_upstream_rq_xx", **edge,
                 envoy_response_code_class="4") == 3
    assert value(samples, "envoy_cluster_upstream_rq_total", **edge) == 10
    # Histograms reach the admin endpoint at the next stats flush (every 5s).
    async def timed() -> bool:
        return value(await prometheus(client), "envoy_cluster_upstream_rq_time_count",
                     **edge) == 10
    await wait_for(timed, "upstream_rq_time to count all 10 requests", timeout=15)
    assert value(samples, "envoy_http_downstream_rq_xx", source_workload="client-0",
                 envoy_http_conn_manager_prefix="outbound",
                 envoy_response_code_class="2") == 7

    callee = await prometheus(server)
    assert value(callee, "envoy_http_downstream_rq_xx", source_service="echo",
                 source_workload="echo-0", envoy_http_conn_manager_prefix="inbound",
                 envoy_response_code_class="4") == 3
    # The inbound cluster is no outbound edge: no destination labels.
    inbound = [ls for n, ls, _ in callee if n == "envoy_cluster_upstream_rq_total"
               and ls.get("envoy_cluster_name") == "inbound|" + str(server.node.app_port)]
    assert inbound
    assert all("destination_service" not in ls for ls in inbound)


async def test_stats_outside_the_mesh_list_are_not_kept(mini: MiniMesh,
                                                        make_backend: Any) -> None:
    await mini.serve("echo", [make_backend("A")])
    client = await mini.client()
    await mini.wait_synced()
    assert (await get(client)).status_code == 200
    names = set((await client.stats()).keys())
    cluster = "cluster.outbound|80||echo.default"
    # Kept: what the mesh and its tests read.
    for kept in (f"{cluster}.upstream_rq_total", f"{cluster}.upstream_rq_200",
                 f"{cluster}.upstream_rq_2xx", f"{cluster}.upstream_cx_total",
                 f"{cluster}.update_success", f"{cluster}.membership_healthy",
                 "http.outbound.downstream_rq_2xx", "cluster_manager.cds.update_success",
                 "listener_manager.lds.update_success", "server.state"):
        assert kept in names, kept
    # Dropped: Envoy counts them, nothing in the mesh reads them.
    for dropped in (f"{cluster}.upstream_rq_active", f"{cluster}.lb_healthy_panic",
                    "http.outbound.no_route", "http.outbound.rq_total",
                    "runtime.load_success", "http.admin.downstream_rq_2xx"):
        assert dropped not in names, dropped
    assert not any(n.startswith("vhost.") for n in names)
    assert not any(n.startswith("listener.") and ".worker_" in n for n in names)
