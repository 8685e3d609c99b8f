"""The whole mesh on loopback: control plane, sidecars and the demo services.

The mesh is started once per module through the same code `gossamer up`
runs, and always stopped (agents drain, then the control plane) even when a
test fails.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from importlib import resources as pkg
from pathlib import Path
from typing import Any

import httpx
import pytest

from gossamer.local.spec import load_local_app
from gossamer.local.up import Instance, LocalRun


class Mesh:
    def __init__(self, run: LocalRun) -> None:
        self.run = run
        self.api = run.api()  # with the admin token the control plane created
        self.applied = 0  # the newest store revision an apply of this test produced

    def instance(self, prefix: str) -> Instance:
        return next(i for i in self.run.instances if i.workload.startswith(prefix))

    def client_via(self, prefix: str) -> httpx.Client:
        """An HTTP client whose requests go out through that instance's sidecar."""
        out = self.instance(prefix).outbound_port
        return httpx.Client(proxy=f"http://127.0.0.1:{out}", timeout=10, trust_env=False)

    def delete(self, kind: str, namespace: str, name: str) -> None:
        resp = self.api.delete(f"/api/v1/resources/{kind}/{namespace}/{name}")
        assert resp.status_code < 300, resp.text
        revision = int(resp.json()["deleted"]["metadata"]["resourceVersion"])
        self.applied = max(self.applied, revision)

    def apply(self, text: str) -> None:
        import yaml

        for doc in yaml.safe_load_all(text):
            resp = self.api.post("/api/v1/apply", json=doc)
            assert resp.status_code < 300, resp.text
            revision = int(resp.json()["resource"]["metadata"]["resourceVersion"])
            self.applied = max(self.applied, revision)

    def wait_synced(self, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Until every instance's proxy is connected and has ACKed the latest config.

        First until the control plane's index includes our last apply: before
        that, proxies are "in sync" with the snapshot the apply will replace."""
        deadline = time.monotonic() + timeout
        proxies: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            if self.api.get("/healthz").json()["revision"] < self.applied:
                time.sleep(0.02)
                continue
            proxies = self.api.get("/api/v1/proxies").json()
            live = [p for p in proxies if p.get("connected")]
            if len(live) >= len(self.run.instances) and all(p.get("synced") for p in live):
                return proxies
            time.sleep(0.1)
        raise AssertionError(f"proxies not in sync after {timeout}s: {proxies}")

    def endpoints(self, workload_prefix: str) -> list[str]:
        """Lines of that instance's Envoy `/clusters`: `cluster::host:port::stat::value`."""
        admin = self.instance(workload_prefix).admin_port
        text = httpx.get(f"http://127.0.0.1:{admin}/clusters", timeout=5, trust_env=False).text
        return [line for line in text.splitlines() if "::" in line]


def start_mesh(tmp: Path, text: str | None = None, cert_ttl: int | None = None,
               control_plane_args: tuple[str, ...] = ()) -> LocalRun:
    if text is None:
        text = pkg.files("gossamer.demo").joinpath("demo.yaml").read_text()
    run = LocalRun(load_local_app(text), tmp, drain_seconds=1.0, quiet=True, cert_ttl=cert_ttl,
                   control_plane_args=control_plane_args)
    try:
        run.start_control_plane()
        run.apply_resources()
        run.start_processes(timeout=60)
    except BaseException:
        run.stop(grace=10)
        raise
    return run


def running_mesh(tmp_path_factory: pytest.TempPathFactory, name: str,
                 cert_ttl: int | None = None, text: str | None = None,
                 control_plane_args: tuple[str, ...] = ()) -> Iterator[Mesh]:
    """The demo mesh (or the app `text`) for one test module, always stopped afterwards."""
    run = start_mesh(tmp_path_factory.mktemp(name), text, cert_ttl=cert_ttl,
                     control_plane_args=control_plane_args)
    try:
        m = Mesh(run)
        m.wait_synced()
        yield m
    finally:
        run.stop(grace=15)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    yield from running_mesh(tmp_path_factory, "mesh")
