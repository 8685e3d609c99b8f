"""The namespace-host fixture (tests/hosts.py): hosts reach each other and the root
reaches them over the bridge, and nothing of them is left after a failed test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests import hosts
from tests.hosts import NETNS_DIR, HostNetwork, host_network

ROOT = Path(__file__).resolve().parents[2]

# Answers each connection with the peer's address, for `count` connections.
PEER_SERVER = textwrap.dedent("""
    import socket, sys
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], 8000))
    s.listen()
    print("listening", flush=True)
    for _ in range(int(sys.argv[2])):
        conn, peer = s.accept()
        conn.sendall(peer[0].encode())
        conn.close()
""")
PEER_CLIENT = textwrap.dedent("""
    import socket, sys, time
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection((sys.argv[1], 8000), timeout=5) as c:
                print(c.recv(100).decode())
                break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
""")


def _ip_forward() -> str:
    return Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()


def test_hosts_reach_each_other_and_the_root_reaches_them(netns_hosts: HostNetwork) -> None:
    forward = _ip_forward()
    a, b = netns_hosts.add("a"), netns_hosts.add("b")
    assert (a.address, b.address) != (netns_hosts.root_address,) * 2
    server = a.popen([sys.executable, "-c", PEER_SERVER, a.address, "2"])
    from_b = b.run([sys.executable, "-c", PEER_CLIENT, a.address], check=True)
    assert from_b.stdout.strip() == b.address
    from_root = subprocess.run([sys.executable, "-c", PEER_CLIENT, a.address],
                               capture_output=True, text=True, timeout=30, check=True)
    assert from_root.stdout.strip() == netns_hosts.root_address
    assert server.wait(timeout=10) == 0

    # lo up, a default route to an address no host holds, names of the network's
    # hosts in its hosts file, its own resolver; the root's forwarding untouched.
    assert "UP" in b.run(["ip", "-o", "link", "show", "lo"], check=True).stdout
    route = b.run(["ip", "route", "get", "192.0.2.1"], check=True).stdout
    assert f"via {netns_hosts.gateway} dev eth0" in route
    assert b.run(["getent", "hosts", "a"], check=True).stdout.split()[0] == a.address
    resolv = b.run(["cat", "/etc/resolv.conf"], check=True).stdout
    assert f"nameserver {netns_hosts.root_address}" in resolv
    assert _ip_forward() == forward


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state


def _left_over(uid: str, netns: str, links: list[str], pids: list[int]) -> list[str]:
    """What of a closed network still exists (waiting briefly for orphans' reaping)."""
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [f"process {p}" for p in pids if _alive(p)]
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    left += [f"netns {netns}"] if netns in names else []
    left += [f"link {link}" for link in links if Path("/sys/class/net", link).exists()]
    left += [f"dir {NETNS_DIR / netns}"] if (NETNS_DIR / netns).exists() else []
    rules = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True).stdout
    left += ["iptables rule"] if f"gossamer-hosts-{uid}" in rules else []
    return left


def test_a_test_that_raises_leaves_nothing_behind() -> None:
    seen: dict[str, Any] = {}
    started: list[subprocess.Popen[bytes]] = []

    def failing_test() -> None:
        with host_network(grace=2) as net:
            a = net.add("a")
            started.append(a.popen(["sleep", "600"]))
            # A daemon the network did not start itself: found by `ip netns pids`.
            daemon = int(a.run(["sh", "-c", "sleep 600 >/dev/null 2>&1 & echo $!"],
                               check=True).stdout)
            assert _alive(daemon)
            assert started[0].poll() is None
            seen.update(uid=net.uid, netns=a.netns, links=[net.bridge, a.veth],
                        pids=[started[0].pid, daemon])
            raise RuntimeError("the test failed")

    with pytest.raises(RuntimeError, match="the test failed"):
        failing_test()
    assert started[0].poll() is not None
    assert _left_over(**seen) == []


INNER_TEST = """
import json, os, sys
from tests.hosts import HostNetwork

def test_inner(netns_hosts: HostNetwork) -> None:
    a = netns_hosts.add("a")
    proc = a.popen(["sleep", "600"])
    with open(os.environ["SEEN"], "w") as out:
        json.dump({"uid": netns_hosts.uid, "netns": a.netns,
                   "links": [netns_hosts.bridge, a.veth], "pids": [proc.pid]}, out)
    raise AssertionError("the inner test failed")
"""


@pytest.mark.slow
def test_the_fixture_cleans_up_after_a_failed_test(tmp_path: Path) -> None:
    """The fixture itself, as pytest runs it: an inner test that fails."""
    from tests.hosts import require

    require()
    (tmp_path / "test_inner.py").write_text(INNER_TEST)
    (tmp_path / "conftest.py").write_text("from tests.hosts import netns_hosts  # noqa\n")
    seen_file = tmp_path / "seen.json"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", os.devnull,
         "--rootdir", str(tmp_path), str(tmp_path / "test_inner.py")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "SEEN": str(seen_file)})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "the inner test failed" in done.stdout
    assert "1 failed" in done.stdout
    assert "error" not in done.stdout.splitlines()[-1], done.stdout + done.stderr
    assert _left_over(**json.loads(seen_file.read_text())) == []


def test_without_root_or_tools_the_reason_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert hosts.missing() == "namespace hosts need root (network namespaces, a bridge, veths)"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(hosts.shutil, "which", lambda tool: None if tool == "iptables" else tool)
    assert hosts.missing() == "namespace hosts need `iptables` (Debian package iptables)"
    with pytest.raises(pytest.skip.Exception, match="need `iptables`"):
        hosts.require()
