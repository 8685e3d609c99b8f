"""`gossamer up --isolate` and `gossamer demo --isolate` (root): every instance in its own
network namespace with capture, the control plane on the bridge; nothing left behind
after a stop, and after a crash of `up` the next run with its state directory removes
what the crashed one left."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import pytest

from gossamer.local import netns
from tests import hosts

pytestmark = pytest.mark.slow
GOSSAMER = [sys.executable, "-m", "gossamer"]
RECORD = "isolated-hosts.json"
ONE_SERVICE = """
apiVersion: local.gossamer.dev/v1alpha1
kind: Process
metadata: {name: inventory}
spec:
  service: inventory
  command: ["{python}", "-m", "gossamer.demo.app", "--name", "inventory", "--port", "{port}"]
  probePath: /healthz
"""


@pytest.fixture(autouse=True)
def _root() -> None:
    hosts.require()


def _start(args: list[str], state: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOSSAMER_")}
    return subprocess.Popen([*GOSSAMER, *args, "--isolate", "--state-dir", str(state)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)


def _read_until(out: IO[str], marker: str, seen: list[str], timeout: float = 240) -> None:
    """Lines of `up` until one holds `marker` (bounded: `timeout`, or the end)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = out.readline()
        if not line:
            break
        seen.append(line.rstrip("\n"))
        if marker in line:
            return
    raise AssertionError(f"no {marker!r} from up:\n" + "\n".join(seen[-60:]))


def _left(record: dict[str, Any]) -> list[str]:
    return ([n for n in record["netns"] if netns.exists_netns(n)]
            + [n for n in record["netns"] if (netns.NETNS_DIR / n).exists()]
            + [link for link in record["links"] if netns.exists_link(link)]
            + [d for d in [record["workroot"]] if Path(d).exists()])


def _dead(pid: int, timeout: float = 30.0) -> bool:
    """Whether `pid` has exited within `timeout`: gone, or a zombie (killed; reaping it
    is its new parent's part, init's here, and a busy machine's may lag)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.2)
    return False


def _stop(proc: subprocess.Popen[str], state: Path | None = None) -> None:
    """Kill `up` if it still runs; with `state`, also remove what a killed one left
    (its control plane runs in a session of its own, its instances in namespaces),
    as the next `up` would: a failed test leaves nothing running."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    if state is not None:
        netns.IsolatedHosts.clean_stale(state / RECORD)


def test_the_demo_runs_isolated_and_leaves_nothing(tmp_path: Path) -> None:
    state, lines = tmp_path / "demo", []
    proc = _start(["demo", "--duration", "15", "--rate", "5"], state)
    record: dict[str, Any] = {}
    try:
        assert proc.stdout is not None
        _read_until(proc.stdout, "every instance is up and meshed", lines)
        record = json.loads((state / RECORD).read_text())
        assert len(record["netns"]) == 6  # frontend, catalog x3, inventory, loadgen
        _read_until(proc.stdout, "[load] done", lines)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
        lines += rest.splitlines()
    finally:
        _stop(proc)
    try:
        _ran_and_left_nothing(proc, state, record, lines)
    finally:
        _stop(proc, state)  # after the checks: what a failed demo left goes too


def _ran_and_left_nothing(proc: subprocess.Popen[str], state: Path, record: dict[str, Any],
                          lines: list[str]) -> None:
    assert proc.returncode == 0, "\n".join(lines)
    # Each instance on its own address of the bridge's subnet.
    addresses = re.findall(r"inbound http://(198\.1[89]\.\d+\.\d+):\d+", "\n".join(lines))
    assert len(set(addresses)) == 5
    # Every request of the load generator succeeded (frontend -> catalog -> inventory).
    [sent] = [int(m) for m in re.findall(r"\[load\] done: (\d+) requests", "\n".join(lines))]
    windows = [dict(part.split(": ") for part in line.split("s: ", 1)[1].split(", "))
               for line in lines if line.startswith("[load] last")]
    assert sent >= 50
    assert windows, lines
    for window in windows:  # only successes, each with catalog's answer in it
        assert set(window) == {"ok", "catalog v1"}, window
        assert window["ok"] == window["catalog v1"]
    assert sum(int(w["ok"]) for w in windows) >= 40
    assert "gossamer: stopped" in lines
    assert _left(record) == []
    assert not (state / RECORD).exists()


def test_the_next_up_removes_what_a_crashed_one_left(tmp_path: Path) -> None:
    (tmp_path / "app.yaml").write_text(ONE_SERVICE)
    state, lines = tmp_path / "up", []
    first = _start(["up", "-f", str(tmp_path / "app.yaml")], state)
    try:
        _crash_then_up_again(tmp_path, state, first, lines)
    finally:
        _stop(first, state)


def _crash_then_up_again(tmp_path: Path, state: Path, first: subprocess.Popen[str],
                         lines: list[str]) -> None:
    try:
        assert first.stdout is not None
        _read_until(first.stdout, "every instance is up and meshed", lines)
        record = json.loads((state / RECORD).read_text())
        os.killpg(first.pid, signal.SIGKILL)  # `up` alone: its children live on
        first.wait(timeout=30)
        [(control_plane, _)] = record["processes"]
        assert Path(f"/proc/{control_plane}").exists()
        assert _left(record) != []
    finally:
        _stop(first)
    second = _start(["up", "-f", str(tmp_path / "app.yaml")], state)
    try:
        assert second.stdout is not None
        _read_until(second.stdout, "every instance is up and meshed", lines)
        assert "gossamer: removed the namespaces a previous run left" in "\n".join(lines)
        assert _left(record) == []
        assert _dead(control_plane)  # SIGKILLed by the second run (asynchronous)
        second.send_signal(signal.SIGINT)
        second.communicate(timeout=120)
        assert second.returncode == 0
        assert not (state / RECORD).exists()  # (before _stop's own cleaning)
    finally:
        _stop(second, state)


def test_without_root_isolate_fails_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                           *GOSSAMER, "demo", "--isolate", "--state-dir",
                           str(tmp_path / "state")],
                          capture_output=True, text=True, timeout=60, cwd="/")
    assert (done.returncode, done.stderr.splitlines()) == (1, [
        "error: --isolate: network namespaces and iptables rules need root (run as root, "
        "or without --isolate)"])
    assert not (tmp_path / "state").exists()
