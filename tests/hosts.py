"""Hosts made of network namespaces, for tests of the mesh across machines.

Layout (one `HostNetwork`):

    root namespace (the test, the CLI)  198.18.X.1/24 on bridge gsmUUUUUU
      ├── veth ── netns gossamer-UUUUUU-a   eth0 198.18.X.2/24, lo up
      ├── veth ── netns gossamer-UUUUUU-b   eth0 198.18.X.3/24, lo up
      └── ...
    every host: default route via 198.18.X.254, an address no one holds, so
    traffic to any other address (a virtual IP) leaves by eth0 and goes through
    the host's nat OUTPUT chain, and nothing routes out (ip_forward is left as it is).

X is a free /24 of 198.18.0.0/15 (the range reserved for network benchmarks),
chosen under a lock file so parallel runs never share one; UUUUUU is unique to
this network, so every name it creates is its own. Each host gets
`/etc/netns/<netns>/resolv.conf` and `hosts` (which `ip netns exec` bind-mounts
over /etc's): the resolver is the root's bridge address (nothing answers there
unless a test serves DNS, so lookups fail fast instead of leaving the machine)
and the hosts file names every host of the network.

`HostNetwork.popen` starts a process in the root namespace (a control plane on the
bridge address, say) under the same cleanup; `workroot` is a directory every user
can search, for capturing agents (their Envoy runs as uid 1337); `Host.nat_rules`
reads a host's capture rules.

Cleanup (`close`, also on a failed test): the processes started with `popen`
get SIGTERM, then SIGKILL after a grace period; then every process still inside
one of the network's namespaces (`ip netns pids`: only our namespaces, so only
what the test started there) is killed; then the namespaces, veths, the bridge,
the iptables rule, the `/etc/netns` directories and the work root are removed. Anything that
could not be removed is reported as an error.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import pytest

from gossamer.local import netns
from gossamer.local.netns import NETNS_DIR

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,19}$")


def missing() -> str | None:
    """Why namespace hosts cannot be made here, or None."""
    if os.geteuid() != 0:
        return "namespace hosts need root (network namespaces, a bridge, veths)"
    for tool, package in (("ip", "iproute2"), ("iptables", "iptables")):
        if shutil.which(tool) is None:
            return f"namespace hosts need `{tool}` (Debian package {package})"
    return None


def require() -> None:
    """Skip the test with the reason when namespace hosts cannot be made here (under
    GOSSAMER_REQUIRE_ALL=1 the skip fails the test: tests/conftest.py)."""
    reason = missing()
    if reason is not None:
        pytest.skip(reason)




class Host:
    """One namespace host: `address` on the bridge; `run`/`popen` run commands in it."""

    def __init__(self, network: HostNetwork, name: str, netns: str, address: str,
                 veth: str) -> None:
        self.network = network
        self.name = name
        self.netns = netns
        self.address = address
        self.veth = veth  # the root side of its link

    def __repr__(self) -> str:
        return f"Host({self.name!r}, {self.address})"

    def argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv]

    def run(self, argv: Sequence[str], *, check: bool = False, timeout: float = 60.0,
            env: Mapping[str, str] | None = None, input: str | None = None,
            ) -> subprocess.CompletedProcess[str]:
        """Run to completion inside the host (killed at `timeout`); output captured.
        `env` is added to the test's environment."""
        done = subprocess.run(self.argv(argv), capture_output=True, text=True, timeout=timeout,
                              env=None if env is None else {**os.environ, **env},
                              input=input, stdin=None if input is not None else
                              subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise AssertionError(f"on host {self.name}: {' '.join(argv)} exited "
                                 f"{done.returncode}\nstdout: {done.stdout}\n"
                                 f"stderr: {done.stderr}")
        return done

    def popen(self, argv: Sequence[str], *, log: Path | None = None,
              env: Mapping[str, str] | None = None, **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start inside the host, in its own session; stopped at cleanup if still running.
        `log`: stdout and stderr go to this file (default: discarded)."""
        with _output(log) as out:
            proc = subprocess.Popen(self.argv(argv), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    env=None if env is None else {**os.environ, **env},
                                    **kwargs)
        self.network.started.append(proc)
        return proc

    def pids(self) -> list[int]:
        """Every process inside this host now."""
        done = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True,
                              text=True, timeout=30)
        return [int(p) for p in done.stdout.split()] if done.returncode == 0 else []

    def nat_rules(self) -> list[str]:
        """This host's nat rules of Gossamer's capture (chains `GOSSAMER_*`), as
        `iptables-save` prints them."""
        out = self.run(["iptables-save", "-t", "nat"], check=True).stdout
        return [line for line in out.splitlines() if "GOSSAMER" in line]

    def write_etc(self, name: str, text: str) -> None:
        """Set a file `ip netns exec` shows this host as /etc/NAME (resolv.conf, hosts).
        Written in place, so processes already running see the change too."""
        path = NETNS_DIR / self.netns / name
        with open(path, "w") as out:
            out.write(text)


class HostNetwork:
    """Namespace hosts on one bridge; use as a context manager, or call `close`."""

    def __init__(self, grace: float = 10.0) -> None:
        self.uid = secrets.token_hex(3)
        self.bridge = f"gsm{self.uid}"
        self.grace = grace
        self.hosts: dict[str, Host] = {}
        self.started: list[subprocess.Popen[bytes]] = []
        self._netns: list[str] = []
        self._links: list[str] = []
        self._forward_rule: list[str] | None = None
        self._workroot: Path | None = None
        try:
            self.subnet = self._claim_subnet()
        except BaseException:
            self.close()
            raise
        net = list(self.subnet.hosts())
        self.root_address, self.gateway = str(net[0]), str(net[-1])

    def __enter__(self) -> HostNetwork:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    @property
    def workroot(self) -> Path:
        """A directory for the hosts' files (made on first use, removed at close) that
        every user can search, as is each of its parents: a capturing agent's Envoy runs
        as its own uid (1337) and must reach its workdir, which pytest's tmp_path (mode
        0700) would not let it."""
        if self._workroot is None:
            path = Path(f"/tmp/gossamer-hosts-{self.uid}")
            path.mkdir(mode=0o755)
            path.chmod(0o755)  # whatever the umask
            self._workroot = path
        return self._workroot

    def popen(self, argv: Sequence[str], *, log: Path | None = None,
              env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start in the root namespace (where the bridge's first address is), in its own
        session; stopped at cleanup if still running, as the hosts' processes are."""
        with _output(log) as out:
            proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    env=None if env is None else {**os.environ, **env})
        self.started.append(proc)
        return proc

    # -- making ---------------------------------------------------------------------

    def _claim_subnet(self) -> ipaddress.IPv4Network:
        """A free /24 of SUPERNET, the bridge holding its .1 (gossamer/local/netns.py)."""
        self._links.append(self.bridge)
        subnet = netns.claim_subnet(self.bridge)
        self._forward_rule = netns.forward_rule(self.bridge, f"gossamer-hosts-{self.uid}")
        return subnet

    def add(self, name: str) -> Host:
        """A new host on the bridge, with the next address of the subnet."""
        if not _NAME.match(name) or name in self.hosts:
            raise ValueError(f"host name {name!r}: a short DNS label, once per network")
        index = len(self.hosts)
        address = str(list(self.subnet.hosts())[index + 1])
        if address == self.gateway:
            raise ValueError("the subnet is full")
        name_ns = f"gossamer-{self.uid}-{name}"
        veth, peer = f"gsm{self.uid}v{index}", f"gsm{self.uid}p{index}"
        self._netns.append(name_ns)
        self._links.append(veth)
        netns.add_host(name_ns, veth, peer, self.bridge, address, self.gateway,
                       resolver=self.root_address)
        host = Host(self, name, name_ns, address, veth)
        self.hosts[name] = host
        self._write_hosts_files()
        return host

    def _write_hosts_files(self) -> None:
        lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback",
                 *(f"{h.address} {h.name}" for h in self.hosts.values())]
        for host in self.hosts.values():
            host.write_etc("hosts", "\n".join(lines) + "\n")

    # -- cleanup --------------------------------------------------------------------

    def close(self) -> None:
        """Remove everything this network made, even after a failure; raise if
        anything is left."""
        self._stop_started()
        left = netns.teardown(self._netns, self._links, self._forward_rule)
        self._forward_rule = None
        if self._workroot is not None:
            shutil.rmtree(self._workroot, ignore_errors=True)
            if self._workroot.exists():
                left.append(f"directory {self._workroot}")
            self._workroot = None
        self._netns, self._links = [], []
        if left:
            raise RuntimeError("namespace hosts left behind: " + "; ".join(left))

    def _stop_started(self) -> None:
        running = [p for p in self.started if p.poll() is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for proc in running:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


@contextlib.contextmanager
def _output(log: Path | None) -> Iterator[IO[bytes] | int]:
    """Where a child's stdout and stderr go: appended to `log`, or discarded. The
    file is closed once the child holds it."""
    if log is None:
        yield subprocess.DEVNULL
        return
    with open(log, "ab") as out:
        yield out














@contextlib.contextmanager
def host_network(grace: float = 10.0) -> Iterator[HostNetwork]:
    """A HostNetwork, skipping the test when they cannot be made here."""
    require()
    network = HostNetwork(grace)
    try:
        yield network
    finally:
        network.close()


@pytest.fixture
def netns_hosts() -> Iterator[HostNetwork]:
    """An empty namespace-host network for one test (`.add("a")` makes a host)."""
    with host_network() as network:
        yield network


@pytest.fixture(scope="module")
def module_netns_hosts() -> Iterator[HostNetwork]:
    """The same, shared by a module's tests."""
    with host_network() as network:
        yield network
