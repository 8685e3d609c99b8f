"""A real Prometheus (Debian's package) for e2e tests: started on a config, queried,
always stopped."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

PROMETHEUS = shutil.which("prometheus")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_prometheus(config_text: str, directory: Path) -> Iterator[str]:
    """Prometheus on 127.0.0.1 with `config_text` as its config; yields its URL once
    ready (skips the test without the package)."""
    if PROMETHEUS is None:
        pytest.skip("Debian package prometheus is not installed (scripts/test installs it)")
    config = directory / "prometheus.yml"
    config.write_text(config_text)
    port = _free_port()
    log = (directory / "prometheus.log").open("wb")
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={config}",
                             f"--storage.tsdb.path={directory / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, (directory / "prometheus.log").read_text()[-2000:]
            try:
                if httpx.get(f"{url}/-/ready", timeout=1, trust_env=False).is_success:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def query(url: str, promql: str, at: float | None = None) -> list[dict[str, Any]]:
    params: dict[str, str | float] = {"query": promql}
    if at is not None:
        params["time"] = at
    resp = httpx.get(f"{url}/api/v1/query", params=params, timeout=5, trust_env=False)
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]["result"]  # type: ignore[no-any-return]


def wait_for(url: str, promql: str, ok: Any, timeout: float = 30.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    result: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        result = query(url, promql)
        if ok(result):
            return result
        time.sleep(0.5)
    raise AssertionError(f"{promql}: {result}")
