"""Network namespaces on one bridge: the hosts of `gossamer up --isolate` (and of the
tests' namespace hosts, tests/hosts.py, which use these helpers).

Layout: a bridge holding the first address of a free /24 of 198.18.0.0/15 (the
range reserved for network benchmarks), one namespace per host with the next
addresses, `lo` up, and a default route to the subnet's last address, which no one
holds: traffic to a virtual IP then leaves by eth0 through the nat OUTPUT chain,
where capture redirects it, instead of failing with "Network is unreachable"; and
since ip_forward is left as it is, nothing routes beyond the bridge.

`IsolatedHosts` writes down every name it makes in a record file (in the state
directory of `up`) before making it, so the next `up` with that state directory
removes what a crashed one left behind, and nothing else.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

SUPERNET = ipaddress.ip_network("198.18.0.0/15")
LOCK_FILE = Path("/tmp/gossamer-netns-hosts.lock")
NETNS_DIR = Path("/etc/netns")
# Bridged IPv4 goes through the root namespace's FORWARD chain when br_netfilter says
# so; a policy of DROP there (as Docker sets) would cut hosts off from each other.
BRIDGE_NF = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")


class NetnsError(Exception):
    """A namespace, link or rule could not be made or removed."""


def missing() -> str | None:
    """Why namespace hosts cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces and iptables rules need root"
    for tool, package in (("ip", "iproute2"), ("iptables", "iptables")):
        if shutil.which(tool) is None:
            return f"`{tool}` is missing (Debian package {package})"
    return None


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def used_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    done = subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True,
                          check=True, timeout=30)
    return [ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False)
            for link in json.loads(done.stdout) for a in link.get("addr_info", [])]


def claim_subnet(bridge: str) -> ipaddress.IPv4Network:
    """A /24 of SUPERNET no address of the root namespace is in, made the bridge's
    (holding its first address) before the lock is released, so no parallel run
    takes it too."""
    LOCK_FILE.touch(exist_ok=True)
    with open(LOCK_FILE) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        used = used_networks()
        free = [n for n in SUPERNET.subnets(new_prefix=24) if not any(n.overlaps(u) for u in used)]
        if not free:
            raise NetnsError(f"no free /24 left in {SUPERNET}")
        subnet = random.choice(free)
        assert isinstance(subnet, ipaddress.IPv4Network)
        ip("link", "add", bridge, "type", "bridge")
        ip("addr", "add", f"{next(subnet.hosts())}/24", "dev", bridge)
    ip("link", "set", bridge, "up")
    return subnet


def forward_rule(bridge: str, tag: str) -> list[str] | None:
    """Let bridged traffic through a FORWARD policy of DROP (when br_netfilter sends
    it there); the rule, to delete it later, or None when none was needed."""
    if not (BRIDGE_NF.exists() and BRIDGE_NF.read_text().strip() == "1"):
        return None
    rule = ["FORWARD", "-i", bridge, "-o", bridge, "-m", "comment", "--comment", tag,
            "-j", "ACCEPT"]
    subprocess.run(["iptables", "-I", *rule], check=True, capture_output=True, timeout=30)
    return rule


def add_host(netns: str, veth: str, peer: str, bridge: str, address: str, gateway: str,
             resolver: str) -> None:
    """A namespace on the bridge at `address`, `lo` up, the default route to
    `gateway`, and `resolver` in the resolv.conf `ip netns exec` shows it."""
    ip("netns", "add", netns)
    (NETNS_DIR / netns).mkdir(parents=True, exist_ok=True)
    (NETNS_DIR / netns / "resolv.conf").write_text(
        f"nameserver {resolver}\noptions timeout:1 attempts:1\n")
    ip("link", "add", veth, "type", "veth", "peer", "name", peer, "netns", netns)
    ip("link", "set", veth, "master", bridge, "up")
    ip("-n", netns, "link", "set", peer, "name", "eth0")
    ip("-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
    ip("-n", netns, "link", "set", "eth0", "up")
    ip("-n", netns, "link", "set", "lo", "up")
    ip("-n", netns, "route", "add", "default", "via", gateway)


def kill_inside(netns: str) -> list[str]:
    """SIGKILL every process in `netns` until none is left (children of killed
    parents may need a second pass); reap the ones that are ours."""
    for _ in range(50):
        done = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True,
                              timeout=30)
        pids = [int(p) for p in done.stdout.split()] if done.returncode == 0 else []
        if not pids:
            return []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    return [f"processes in {netns}"]


def attempt(argv: list[str]) -> list[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    return [] if done.returncode == 0 else [f"{' '.join(argv)}: {done.stderr.strip()}"]


def remove_link(name: str) -> list[str]:
    """Delete a link; one that is gone by the time we look again is not left over."""
    if not exists_link(name):
        return []
    failed = attempt(["ip", "link", "del", name])
    for _ in range(50):
        if not failed or not exists_link(name):
            return []
        time.sleep(0.1)
    return failed


def remove_netns(netns: str) -> list[str]:
    left = attempt(["ip", "netns", "del", netns]) if exists_netns(netns) else []
    shutil.rmtree(NETNS_DIR / netns, ignore_errors=True)
    if (NETNS_DIR / netns).exists():
        left.append(f"directory {NETNS_DIR / netns}")
    return left


def exists_netns(netns: str) -> bool:
    return (Path("/run/netns") / netns).exists()


def exists_link(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def teardown(netns: list[str], links: list[str], rule: list[str] | None) -> list[str]:
    """Kill what runs in the namespaces, then remove links (first: a deleted
    namespace's veths go away later, from a kernel work queue), namespaces and the
    FORWARD rule. What could not be removed."""
    left: list[str] = []
    for name in netns:
        left += kill_inside(name)
    for link in reversed(links):
        left += remove_link(link)
    for name in reversed(netns):
        left += remove_netns(name)
    if rule is not None:
        left += attempt(["iptables", "-D", *rule])
    return left


def _kill_if(pid: int, marker: str) -> None:
    """SIGKILL `pid` if its command line still holds `marker`."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return
    if marker.encode() in cmdline:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class IsolatedHosts:
    """The namespaces of one `up --isolate`, recorded in `record` as they are made."""

    def __init__(self, record: Path) -> None:
        self.record = record
        self.uid = secrets.token_hex(3)
        self.bridge = f"gsu{self.uid}"
        self.workroot = Path(f"/tmp/gossamer-up-{self.uid}")
        self.netns: list[str] = []
        self.links: list[str] = []
        self.rule: list[str] | None = None
        self.subnet: ipaddress.IPv4Network | None = None
        # Processes of the run outside the namespaces (the control plane): pid and a
        # word of its command line, so a recycled pid is never taken for it.
        self.processes: list[tuple[int, str]] = []

    def note(self, pid: int, marker: str) -> None:
        """Record a process outside the namespaces, for `clean_stale` after a crash."""
        self.processes.append((pid, marker))
        self._save()

    @staticmethod
    def clean_stale(record: Path) -> list[str]:
        """Remove what the run recorded in `record` left behind (a crashed `up`);
        the names removed."""
        if not record.exists():
            return []
        try:
            old = json.loads(record.read_text())
            netns, links = list(old["netns"]), list(old["links"])
            rule, workroot = old.get("rule"), old.get("workroot")
            processes = [(int(pid), str(marker)) for pid, marker in old.get("processes", [])]
        except (ValueError, KeyError, TypeError) as exc:
            raise NetnsError(f"{record}: not a record of isolated hosts ({exc}); "
                             "remove it after checking `ip netns list`") from exc
        for pid, marker in processes:
            _kill_if(pid, marker)
        left = teardown(netns, links, rule)
        if workroot:
            shutil.rmtree(workroot, ignore_errors=True)
        if left:
            raise NetnsError("cannot remove what a previous run left: " + "; ".join(left))
        record.unlink()
        return netns + links

    def _save(self) -> None:
        body: dict[str, Any] = {"netns": self.netns, "links": self.links, "rule": self.rule,
                                "workroot": str(self.workroot), "processes": self.processes}
        self.record.write_text(json.dumps(body, indent=1) + "\n")

    @property
    def bridge_address(self) -> str:
        assert self.subnet is not None
        return str(next(self.subnet.hosts()))

    def create(self) -> None:
        """The bridge, its address and the work root (searchable by Envoy's uid)."""
        self.links.append(self.bridge)
        self._save()
        self.subnet = claim_subnet(self.bridge)
        self.rule = forward_rule(self.bridge, f"gossamer-up-{self.uid}")
        self._save()
        self.workroot.mkdir(mode=0o755)
        self.workroot.chmod(0o755)

    def add(self) -> tuple[str, str]:
        """A new host (named by index: interface names are short): its namespace and
        address."""
        assert self.subnet is not None
        hosts = list(self.subnet.hosts())
        index = len(self.netns)
        if index + 2 >= len(hosts):
            raise NetnsError(f"more than {len(hosts) - 2} instances: the /24 is full")
        netns, address = f"gossamer-up-{self.uid}-{index}", str(hosts[index + 1])
        veth, peer = f"gsu{self.uid}v{index}", f"gsu{self.uid}p{index}"
        self.netns.append(netns)
        self.links.append(veth)
        self._save()
        add_host(netns, veth, peer, self.bridge, address, str(hosts[-1]), self.bridge_address)
        return netns, address

    def close(self) -> None:
        left = teardown(self.netns, self.links, self.rule)
        shutil.rmtree(self.workroot, ignore_errors=True)
        if left:
            raise NetnsError("left behind: " + "; ".join(left))
        self.record.unlink(missing_ok=True)
