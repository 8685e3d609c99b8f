"""The configurations of the instruction-count benchmark, each with its two
Envoys (caller and callee sidecar) under callgrind, in front of staticapp.py:

- `envoy` and its variants (`+X`, `all`, `all-X`; irvariants.py): the
  hand-written pair, static config;
- `gossamer`: a local mesh with its defaults (control plane, two agents, config
  over xDS and SDS), as run.py's `gossamer`, the agents told to run Envoy under
  callgrind through `GOSSAMER_ENVOY`;
- `captured`: `gossamer proxy --capture` on both sides, each in its own network
  namespace (tests/hosts.py), the client calling the callee's virtual IP;
  needs root, `ip` and `iptables`;
- `ingress`: the ingress gateway (`gossamer gateway`) in front of the callee sidecar,
  as the caller.

`start()` returns a Started: where the client connects (and the argv prefix
that puts it in the right network namespace), each sidecar's Envoy PID and
admin port. Every process is started in its own session and stopped by PID.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import string
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from callgrind import COMM, valgrind_argv, write_wrapper
from configs import (
    HERE,
    INGRESS,
    MESH,
    _arg,
    _spawn,
    _stop,
    envoy_argv,
    pair_values,
    write_certs,
)
from irgateway import gateway_changes
from irvariants import changes_of
from procstat import children_named

from gossamer.agent.ports import free_port
from gossamer.envoy.binary import find_envoy
from gossamer.local.spec import load_local_app
from gossamer.local.up import LocalRun

APP = HERE / "staticapp.py"
START_TIMEOUT_S = 180.0  # Envoy under valgrind starts in ~5 s; a loaded machine, slower


@dataclass
class Started:
    host: str
    port: int
    pids: dict[str, int]  # "caller", "callee" -> Envoy (valgrind) PID
    admin_ports: dict[str, int]
    out_dir: Path  # callgrind's files
    client_prefix: list[str] = field(default_factory=list)  # e.g. ip netns exec NS
    # Where each sidecar's admin endpoint is reachable from (its network namespace).
    admin_prefix: dict[str, list[str]] = field(default_factory=dict)


def wait_answer(host: str, port: int, prefix: list[str], timeout: float = START_TIMEOUT_S
                ) -> None:
    """Until one request through the configuration gets its 200 (sequential.py's check)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        done = subprocess.run([*prefix, sys.executable, str(HERE / "sequential.py"), host,
                               str(port)], input="1\n", capture_output=True, text=True,
                              timeout=120)
        if done.stdout.startswith("ok"):
            return
        last = (done.stdout + done.stderr).strip()[-200:]
        time.sleep(0.5)
    raise RuntimeError(f"{host}:{port} not answering: {last}")


def start_app(work: Path, procs: list[subprocess.Popen[bytes]]) -> int:
    port = free_port()
    procs.append(_spawn([sys.executable, str(APP), str(port)], work / f"app-{port}.log"))
    wait_answer_direct(port)
    return port


def wait_answer_direct(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=2, trust_env=False).is_success:
                return
        time.sleep(0.1)
    raise RuntimeError(f"staticapp on {port} did not start")


class Pair:
    """The hand-written pair, with the changes of `variant` (irvariants.py; the
    gateway's, `gw+X`, `gwall`, `gwall-X`, irgateway.py)."""

    def __init__(self, variant: str, work: Path) -> None:
        self.name = "envoy" if variant == "base" else f"envoy{variant}" \
            if variant.startswith("+") else variant
        gateway = gateway_changes(variant)
        self.changes = gateway if gateway is not None else changes_of(variant)
        self.work = work / self.name.replace("+", "plus-")
        self.work.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen[bytes]] = []

    def _load(self, template: str, values: dict[str, object]) -> dict[str, Any]:
        text = string.Template((HERE / template).read_text()).substitute(values)
        loaded: dict[str, Any] = yaml.safe_load(text)
        return loaded

    def configs(self, app_port: int) -> tuple[int, list[Path], dict[str, int]]:
        """(the caller's port, [caller config, callee config], admin ports)."""
        certs = write_certs(self.work)
        client_port, server_values, client_values = pair_values(certs, app_port)
        client = self._load("envoy-client.yaml", client_values)
        server = self._load("envoy-server.yaml", server_values)
        for change in self.changes:
            change(client, server)
        paths = []
        for side, config in (("caller", client), ("callee", server)):
            path = self.work / f"{side}.json"
            path.write_text(json.dumps(copy.deepcopy(config), indent=1))
            paths.append(path)
        admin = {"caller": int(client_values["admin_port"]),  # type: ignore[call-overload]
                 "callee": int(server_values["admin_port"])}  # type: ignore[call-overload]
        return client_port, paths, admin

    def start(self) -> Started:
        out = self.work / "callgrind"
        out.mkdir(exist_ok=True)
        client_port, paths, admin = self.configs(start_app(self.work, self.procs))
        pids = {}
        for side, path in zip(("caller", "callee"), paths, strict=True):
            proc = _spawn([*valgrind_argv(out), *envoy_argv(path)], self.work / f"{side}.log")
            self.procs.append(proc)
            pids[side] = proc.pid
        wait_answer("127.0.0.1", client_port, [])
        return Started("127.0.0.1", client_port, pids, admin, out)

    def stop(self) -> None:
        _stop(self.procs)


class Gossamer:
    """A local mesh as run.py's `gossamer`, Envoy under callgrind.

    `scrape_interval`: the control plane's stats scrape (`--stats-interval`). Each
    scrape costs a sidecar ~2M instructions on its main thread (measured apart by
    instructions.py), once every interval of wall time; under valgrind a window
    of requests lasts 10-30 s, so at the default 5 s a window holds 2 to 6 scrapes,
    and that discreteness alone is +-0.6 % of a window's count. At the default of
    this benchmark (3600 s) the per-request counts hold no scrape."""

    name = "gossamer"

    # Appended to the mesh file (the `ondemand` configuration's Mesh).
    extra = ""

    def __init__(self, work: Path, scrape_interval: float = 3600.0) -> None:
        self.work = work / self.name
        self.work.mkdir(parents=True, exist_ok=True)
        text = MESH.format(backend=APP, work=self.work) + self.extra
        args = ("--stats-interval", str(scrape_interval),
                "--stats-window", str(max(60.0, scrape_interval)))
        self.run = LocalRun(load_local_app(text), self.work, quiet=True,
                            control_plane_args=args)
        self.out = self.work / "callgrind"

    def _envoy_of(self, workload: str) -> int:
        agent = next(c for c in self.run.children if c.name == workload).popen.pid
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            pids = children_named(agent, COMM)
            if pids:
                return pids[0]
            time.sleep(0.2)
        raise RuntimeError(f"no Envoy under {workload}'s agent (pid {agent})")

    def start(self) -> Started:
        saved = os.environ.get("GOSSAMER_ENVOY")
        os.environ["GOSSAMER_ENVOY"] = str(write_wrapper(find_envoy(), self.out))
        try:
            self.run.start_control_plane()
            self.run.apply_resources()
            self.run.start_processes(timeout=START_TIMEOUT_S)
        finally:
            if saved is None:
                os.environ.pop("GOSSAMER_ENVOY", None)
            else:
                os.environ["GOSSAMER_ENVOY"] = saved
        client = next(c for c in self.run.children if c.name == "client-0")
        argv = list(map(str, client.popen.args))  # type: ignore[arg-type]
        port = int(_arg(argv, "--outbound-port"))
        wait_answer("127.0.0.1", port, [])
        admin = {}
        for role, child in (("caller", "client-0"), ("callee", "backend-0")):
            c = next(c for c in self.run.children if c.name == child)
            admin[role] = int(_arg(list(map(str, c.popen.args)),  # type: ignore[arg-type]
                                   "--admin-port"))
        return Started("127.0.0.1", port, {"caller": self._envoy_of("client-0"),
                                            "callee": self._envoy_of("backend-0")},
                       admin, self.out)

    def stop(self) -> None:
        self.run.stop()


class OnDemandGossamer(Gossamer):
    """`gossamer` with the Mesh's `onDemand`: the caller's outbound listener carries
    the `on_demand` filter, and its first (warm-up) request fetched the backend's
    virtual host and cluster; the window measures what the filter costs each request
    after that."""

    name = "ondemand"
    extra = ("---\napiVersion: mesh.gossamer.dev/v1alpha1\nkind: Mesh\n"
             "metadata: {name: default}\nspec: {onDemand: true}\n")


class Ingress(Gossamer):
    """The ingress gateway (`gossamer gateway`, run by `up` for the file's Gateway) in
    front of the backend's sidecar: the gateway's Envoy is the `caller`, the client
    connects to its HTTP listener. Compare its caller count with `envoy`'s, a
    hand-written Envoy in the same place (a plain HTTP listener, mTLS to the callee)."""

    name = "ingress"

    def __init__(self, work: Path, scrape_interval: float = 3600.0) -> None:
        super().__init__(work, scrape_interval)
        self.work = self.work.parent / "ingress"
        self.work.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        text = MESH.format(backend=APP, work=self.work) + INGRESS.format(port=self.port)
        args = ("--stats-interval", str(scrape_interval),
                "--stats-window", str(max(60.0, scrape_interval)))
        self.run = LocalRun(load_local_app(text), self.work, quiet=True,
                            control_plane_args=args)
        self.out = self.work / "callgrind"

    def start(self) -> Started:
        saved = os.environ.get("GOSSAMER_ENVOY")
        os.environ["GOSSAMER_ENVOY"] = str(write_wrapper(find_envoy(), self.out))
        try:
            self.run.start_control_plane()
            self.run.apply_resources()
            self.run.start_processes(timeout=START_TIMEOUT_S)
        finally:
            if saved is None:
                os.environ.pop("GOSSAMER_ENVOY", None)
            else:
                os.environ["GOSSAMER_ENVOY"] = saved
        wait_answer("127.0.0.1", self.port, [])
        admin = {}
        for role, child in (("caller", "ingress-0"), ("callee", "backend-0")):
            c = next(c for c in self.run.children if c.name == child)
            admin[role] = int(_arg(list(map(str, c.popen.args)),  # type: ignore[arg-type]
                                   "--admin-port"))
        return Started("127.0.0.1", self.port, {"caller": self._envoy_of("ingress-0"),
                                                 "callee": self._envoy_of("backend-0")},
                       admin, self.out)
