"""`gossamer proxy` as a user runs it, against the real control plane.

The app here is a small Python server that records, when it starts, whether
its sidecar was already LIVE, and when it gets SIGTERM. The control plane
runs without security here (the agent then uses a plaintext bootstrap); the
secured agent path runs in every tests/e2e mesh.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gossamer.controlplane.server import ControlPlane, ControlPlaneOptions
from gossamer.testing.envoy import free_port

pytestmark = pytest.mark.slow

APP = textwrap.dedent("""
    import os, signal, sys, time, urllib.request
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    out = open(sys.argv[1], "a", buffering=1)
    admin = os.environ["ADMIN"]
    ready = urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready").read().decode().strip()
    out.write(f"started envoy={ready}\\n")
    def term(*_):
        out.write(f"term {time.time()}\\n")
        sys.exit(0)
    signal.signal(signal.SIGTERM, term)
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.send_header("content-length", "2")
            self.end_headers(); self.wfile.write(b"ok")
        def log_message(self, *a): pass
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
""")


@pytest.fixture
async def cp() -> AsyncIterator[ControlPlane]:
    plane = ControlPlane(ControlPlaneOptions(state_dir=None, xds_port=0, api_port=0,
                                                 secure=False))
    await plane.start()
    try:
        yield plane
    finally:
        await plane.stop()


async def _workload(cp: ControlPlane, name: str) -> dict[str, Any] | None:
    async with httpx.AsyncClient(trust_env=False) as http:
        resp = await http.get(f"http://127.0.0.1:{cp.api_port}/api/v1/resources/Workload/"
                              f"default/{name}")
    return resp.json() if resp.status_code == 200 else None


async def _until(check: Any, what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out += [int(t) for t in text]
    return out


async def test_agent_lifecycle(cp: ControlPlane, tmp_path: Path) -> None:
    app_port, admin = free_port(), free_port()
    record = tmp_path / "app.txt"
    script = tmp_path / "app.py"
    script.write_text(APP)
    env = dict(os.environ, ADMIN=str(admin))
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gossamer", "proxy", "--service", "echo", "--name", "echo-a",
        "--app-port", str(app_port), "--admin-port", str(admin), "--probe-path", "/",
        "--server", f"http://127.0.0.1:{cp.api_port}", "--drain-seconds", "1",
        "--workdir", str(tmp_path / "work"), "--", sys.executable, str(script), str(record),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        healthy = await _until(
            lambda: _healthy(cp, "echo-a"), "the workload to become Healthy")
        assert healthy["spec"]["appPort"] == app_port
        # The app started only once Envoy had its first config.
        assert record.read_text().splitlines()[0] == "started envoy=LIVE"

        # Envoy dies: the agent restarts it, and it gets its config again.
        envoy_pid = next(p for p in _children(agent.pid)
                         if "envoy" in Path(f"/proc/{p}/cmdline").read_text())
        os.kill(envoy_pid, signal.SIGKILL)
        await _until(lambda: _ready(admin, exclude_pid=envoy_pid, agent_pid=agent.pid),
                     "Envoy to be restarted and LIVE")

        # Shutdown: deregistered before the app is told to stop.
        children = _children(agent.pid)
        assert len(children) == 2  # the restarted Envoy and the app
        agent.send_signal(signal.SIGTERM)
        gone_at = (await _until(lambda: _gone(cp, "echo-a"), "deregistration"))
        code = await asyncio.wait_for(agent.wait(), 30)
        assert code == 0
        term_at = float(record.read_text().splitlines()[-1].split()[1])
        assert gone_at < term_at
        assert not [p for p in children if Path(f"/proc/{p}").exists()]
    finally:
        if agent.returncode is None:
            agent.kill()
            await agent.wait()


async def _healthy(cp: ControlPlane, name: str) -> dict[str, Any] | None:
    doc = await _workload(cp, name)
    return doc if doc and doc["spec"]["health"] == "Healthy" else None


async def _gone(cp: ControlPlane, name: str) -> float | None:
    return time.time() if await _workload(cp, name) is None else None


async def _ready(admin: int, exclude_pid: int, agent_pid: int) -> bool:
    pids = _children(agent_pid)
    if exclude_pid in pids:
        return False
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=1) as http:
            resp = await http.get(f"http://127.0.0.1:{admin}/ready")
        return resp.status_code == 200
    except httpx.HTTPError:
        return False


async def test_failing_probe_marks_workload_unhealthy(cp: ControlPlane, tmp_path: Path) -> None:
    app_port = free_port()  # nothing listens here: every probe fails
    async with httpx.AsyncClient(trust_env=False) as http:
        resp = await http.post(f"http://127.0.0.1:{cp.api_port}/api/v1/apply", json={
            "apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Service",
            "metadata": {"name": "dead"}, "spec": {"ports": [{"port": 80}]}})
        assert resp.status_code == 200, resp.text
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gossamer", "proxy", "--service", "dead", "--name", "dead-a",
        "--app-port", str(app_port), "--server", f"http://127.0.0.1:{cp.api_port}",
        "--drain-seconds", "0", "--workdir", str(tmp_path / "work"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async def unhealthy() -> bool:
            doc = await _workload(cp, "dead-a")
            return bool(doc and doc["spec"]["health"] == "Unhealthy")

        await _until(unhealthy, "the probe to mark the workload Unhealthy")
        assert cp.reconciler.index.endpoints[("default", "dead")] == ()
    finally:
        agent.send_signal(signal.SIGTERM)
        await asyncio.wait_for(agent.wait(), 30)
    assert await _workload(cp, "dead-a") is None


async def test_unreachable_control_plane_is_one_clear_error(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gossamer", "proxy", "--service", "x", "--app-port", "1",
        "--server", f"http://127.0.0.1:{free_port()}", "--workdir", str(tmp_path),
        env=dict(os.environ, GOSSAMER_CONNECT_TIMEOUT="1"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: cannot reach the control plane")
