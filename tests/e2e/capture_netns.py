"""LOCAL stand-in for the shared namespace-hosts fixture (tests/hosts.py, issue 21):
network namespaces on one bridge, for tests/e2e/test_capture.py. The lead swaps it
for the shared fixture when merging; it follows the same conventions.

Every name carries a per-run prefix. The bridge gets 198.18.N.1 (the test process,
in the root namespace, reaches the hosts there); each namespace gets 198.18.N.(i+2),
`lo` up and a default route to 198.18.N.254, which no host holds, so virtual IPs
reach the nat OUTPUT chain instead of failing with "Network is unreachable".
`/etc/netns/<ns>/resolv.conf` names the host's resolver. ip_forward is left alone,
so nothing routes anywhere else. `close` kills what runs in the namespaces (by PID),
deletes the namespaces, links, the bridge and the /etc/netns entries, also after a
failure.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

SKIP_REASON = "needs root, `ip` and `iptables` (network namespaces and nat rules)"


def can_run() -> bool:
    return os.geteuid() == 0 and all(shutil.which(t) for t in ("ip", "iptables-save"))


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


class LocalNetns:
    def __init__(self, hosts: Sequence[str]) -> None:
        self.prefix = f"gc{secrets.token_hex(2)}"  # interface names stay under 15 chars
        self.subnet = f"198.18.{random.randint(100, 199)}"
        self.gateway = f"{self.subnet}.1"
        self.hosts = {h: (f"{self.prefix}-{h}", f"{self.subnet}.{i + 2}")
                      for i, h in enumerate(hosts)}
        self.bridge = f"{self.prefix}br"
        self._children: list[subprocess.Popen[bytes]] = []
        self.workroot = Path(f"/tmp/{self.prefix}-work")

    def ns(self, host: str) -> str:
        return self.hosts[host][0]

    def address(self, host: str) -> str:
        return self.hosts[host][1]

    def up(self, resolver: str) -> None:
        self.workroot.mkdir(mode=0o755)
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, (ns, address) in enumerate(self.hosts.values()):
            _ip("netns", "add", ns)
            outside, inside = f"{self.prefix}h{i}", f"{self.prefix}n{i}"
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside, "netns", ns)
            _ip("link", "set", outside, "master", self.bridge, "up")
            for args in (("link", "set", "lo", "up"), ("link", "set", inside, "up"),
                         ("addr", "add", f"{address}/24", "dev", inside),
                         ("route", "add", "default", "via", f"{self.subnet}.254")):
                _ip("-n", ns, *args)
            etc = Path("/etc/netns") / ns
            etc.mkdir(parents=True)
            (etc / "resolv.conf").write_text(f"nameserver {resolver}\n")

    def run(self, host: str, args: Sequence[str], timeout: float = 30.0,
            **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.ns(host), *args], text=True,
                              capture_output=True, timeout=timeout, check=False,
                              **kwargs)  # type: ignore[call-overload]

    def spawn(self, host: str | None, args: Sequence[str], log: IO[bytes],
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """A process in the host's namespace (None: the root namespace)."""
        prefix = [] if host is None else ["ip", "netns", "exec", self.ns(host)]
        proc = subprocess.Popen([*prefix, *args], stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        self._children.append(proc)
        return proc

    def nat_rules(self, host: str) -> list[str]:
        out = self.run(host, ["iptables-save", "-t", "nat"]).stdout
        return [line for line in out.splitlines() if "GOSSAMER" in line]

    def _pids(self, ns: str) -> list[int]:
        done = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                              timeout=10, check=False)
        return [int(p) for p in done.stdout.split()]

    def close(self) -> None:
        for proc in self._children:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        for proc in self._children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        for ns, _ in self.hosts.values():
            for _ in range(3):  # what is left inside, by PID (Envoys as their own uid too)
                pids = self._pids(ns)
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                if not pids:
                    break
                time.sleep(0.2)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
            shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)
        for i in range(len(self.hosts)):
            subprocess.run(["ip", "link", "del", f"{self.prefix}h{i}"], capture_output=True,
                           check=False)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
        shutil.rmtree(self.workroot, ignore_errors=True)
