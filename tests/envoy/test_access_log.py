"""Access logs: one JSON line per request on both sides, with mesh labels and Envoy's
reason for failing a request; a Telemetry turns them on and can keep errors only."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.envoy.harness import API, MiniMesh, Sidecar, get, wait_for

pytestmark = pytest.mark.slow


def telemetry(name: str, namespace: str = "default", target: str | None = None,
              **access_log: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessLog": access_log}
    if target:
        spec["targetRef"] = {"kind": "Service", "name": target}
    return {"apiVersion": API, "kind": "Telemetry",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def entries(side: Sidecar) -> list[dict[str, Any]]:
    path = Path(str(side.node.access_log))
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


async def logged(side: Sidecar, count: int) -> list[dict[str, Any]]:
    """The first `count` entries, once Envoy has flushed them (every 500 ms in tests)."""
    async def enough() -> bool:
        return len(entries(side)) >= count
    await wait_for(enough, f"{count} access log entries of {side.workload}", timeout=10)
    return entries(side)


async def _mesh(mini: MiniMesh, tmp_path: Path, make_backend: Any,
                *docs: dict[str, Any]) -> tuple[Sidecar, Sidecar]:
    mini.access_log_dir = tmp_path
    await mini.apply(*docs)
    [server] = await mini.serve("echo", [make_backend("A")])
    client = await mini.client()
    await mini.wait_synced()
    return client, server


async def test_both_sides_log_a_request_with_mesh_labels(mini: MiniMesh, tmp_path: Path,
                                                         make_backend: Any) -> None:
    client, server = await _mesh(mini, tmp_path, make_backend,
                                 telemetry("mesh", "gossamer-system", enabled=True))
    resp = await get(client, "http://echo/items?x=1", headers={"x-request-id": "req-1"})
    assert resp.status_code == 200
    [out] = await logged(client, 1)
    assert out["direction"] == "outbound"
    assert (out["source_namespace"], out["source_service"], out["source_workload"]) == (
        "default", "client", "client-0")
    assert (out["method"], out["path"], out["authority"]) == ("GET", "/items?x=1", "echo")
    assert (out["status"], out["response_flags"], out["request_id"]) == (200, "-", "req-1")
    assert out["upstream_cluster"] == "outbound|80||echo.default"
    assert out["upstream_host"] == f"127.0.0.1:{server.inbound}"
    assert out["response_code_details"] == "via_upstream"
    assert isinstance(out["duration_ms"], int)
    [inb] = await logged(server, 1)
    assert inb["direction"] == "inbound"
    assert (inb["destination_namespace"], inb["destination_service"],
            inb["destination_workload"]) == ("default", "echo", "echo-0")
    assert (inb["status"], inb["request_id"], inb["route_name"]) == (200, "req-1", "local-app")

    # No healthy instance left: the caller's sidecar answers 503 itself, flag UH.
    await mini.set_health("echo-0", "Unhealthy")
    await mini.wait_synced()
    assert (await get(client)).status_code == 503
    failed = (await logged(client, 2))[1]
    assert (failed["status"], failed["response_flags"]) == (503, "UH")
    assert failed["response_code_details"] == "no_healthy_upstream"


async def test_rbac_denial_logs_its_reason(mini: MiniMesh, tmp_path: Path,
                                           make_backend: Any) -> None:
    deny = {"apiVersion": API, "kind": "AuthorizationPolicy", "metadata": {"name": "no-admin"},
            "spec": {"targetRef": {"kind": "Service", "name": "echo"}, "action": "DENY",
                     "rules": [{"to": [{"operation": {"paths": ["/admin/*"]}}]}]}}
    client, server = await _mesh(mini, tmp_path, make_backend,
                                 telemetry("ns", enabled=True), deny)
    assert (await get(client, "http://echo/admin/x")).status_code == 403
    [inb] = await logged(server, 1)
    assert inb["status"] == 403
    assert inb["response_code_details"].startswith("rbac_access_denied_matched_policy[")
    assert "default/no-admin" in inb["response_code_details"]


async def test_errors_only_and_the_most_specific_telemetry_wins(
        mini: MiniMesh, tmp_path: Path, make_backend: Any) -> None:
    client, server = await _mesh(
        mini, tmp_path, make_backend,
        telemetry("mesh", "gossamer-system", enabled=True),
        telemetry("echo-errors", target="echo", errorsOnly=True))
    statuses = []
    for status in ("200", "200", "404", "200", "418"):
        resp = await get(client, headers={"x-test-status": status})
        statuses.append(resp.status_code)
    assert statuses == [200, 200, 404, 200, 418]
    # The caller logs every request (mesh-wide Telemetry), the callee only its errors.
    assert [e["status"] for e in await logged(client, 5)] == statuses
    assert [e["status"] for e in await logged(server, 2)] == [404, 418]
    await asyncio.sleep(1.0)  # two more flushes: no successful request shows up late
    assert [e["status"] for e in entries(server)] == [404, 418]
