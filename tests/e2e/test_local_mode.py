"""`gossamer demo` as a user runs it: load flows, a canary applies live, Ctrl-C
stops every process it started."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from gossamer.testing.envoy import free_port

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _lines(stream: object, out: queue.Queue[str]) -> None:
    for line in iter(stream.readline, ""):  # type: ignore[attr-defined]
        out.put(line.rstrip("\n"))


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and int(entry.name) != os.getpid():
            pids.append(int(entry.name))
    return pids


def _expect(lines: queue.Queue[str], pattern: str, timeout: float, seen: list[str]) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        seen.append(line)
        if re.search(pattern, line):
            return line
    raise AssertionError(f"no line matching {pattern!r} in {timeout}s; got: {seen[-20:]}")


def test_demo_canary_and_ctrl_c(tmp_path: Path) -> None:
    state = tmp_path / "demo-state"
    api, ingress = free_port(), free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gossamer", "demo", "--state-dir", str(state), "--rate", "20",
         "--duration", "120", "--api-port", str(api), "--xds-port", str(free_port()),
         "--ingress-port", str(ingress)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    seen: list[str] = []
    try:
        _expect(lines, r"Press Ctrl-C", 90, seen)
        assert any("gossamer apply -f examples/demo/canary-50-50.yaml" in s for s in seen)
        # The pure client is in the instances table too: its outbound port is its way out.
        assert any(re.match(r"^  loadgen-0 +service loadgen +inbound none \(client\) +"
                            r"outbound proxy http://127\.0\.0\.1:\d+ ", s) for s in seen), seen
        # The ingress gateway: the demo from outside the mesh (no proxy), as printed.
        assert any(f"curl http://127.0.0.1:{ingress}/" in s for s in seen), seen
        outside = httpx.get(f"http://127.0.0.1:{ingress}/", timeout=10, trust_env=False)
        assert outside.json()["service"] == "frontend"
        first = _expect(lines, r"^\[load\] last", 30, seen)
        assert re.search(r"catalog v1: \d+", first), first
        assert "catalog v2" not in first
        token = (state / "store" / "admin-token").read_text().strip()
        applied = subprocess.run(
            [sys.executable, "-m", "gossamer", "apply", "-f", "examples/demo/canary-50-50.yaml",
             "--server", f"http://127.0.0.1:{api}"], cwd=REPO, capture_output=True, text=True,
            timeout=30, check=False, env={**os.environ, "GOSSAMER_TOKEN": token})
        assert applied.stdout.strip() == "httproute/catalog configured", applied.stderr
        _expect(lines, r"^\[load\] last", 30, seen)  # the window the apply fell in
        after = _expect(lines, r"^\[load\] last", 30, seen)
        v1 = int(re.search(r"catalog v1: (\d+)", after).group(1))  # type: ignore[union-attr]
        v2 = int(re.search(r"catalog v2: (\d+)", after).group(1))  # type: ignore[union-attr]
        assert v1 > 10
        assert v2 > 10
        load_lines = [s for s in seen if s.startswith("[load]")]
        assert not [s for s in load_lines if "HTTP" in s or "error" in s], load_lines
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert code == 0
    logs = {p.name: p.read_text() for p in (state / "logs").glob("*.log")}
    assert len(logs) == 7  # the control plane, six instances (the gateway's included)
    assert not [n for n, text in logs.items() if "could not drain" in text]
    time.sleep(0.5)
    assert _processes_mentioning(str(state)) == []
    assert "gossamer: stopped" in "\n".join(seen) or _drain_has(lines, "gossamer: stopped")


def _drain_has(lines: queue.Queue[str], text: str) -> bool:
    found = False
    while not lines.empty():
        found |= text in lines.get_nowait()
    return found
