"""Real Envoy processes for tests: start from a bootstrap dict, poke the admin API, stop.

Tests in this project run real Envoys (DESIGN.md, "Testing on one machine").
`EnvoyProcess` owns one: it writes the bootstrap to a temporary JSON file,
starts `find_envoy()` with a dynamic base id (so parallel Envoys never share
hot-restart shared memory), learns the admin address from
`--admin-address-path` (so admin port 0 works too), and always cleans up:
`stop()` sends SIGTERM, then SIGKILL after a timeout, and runs from the
context manager, from `atexit` for anything a crashed test left behind, and
is idempotent.

Blocking calls (`admin_get`, `wait_ready`, ...) have `a`-prefixed async twins: a
test whose xDS server runs in the same event loop must not block that loop while
Envoy waits for its config. Both speak to the admin endpoint with the client the
control plane uses (`gossamer.envoy.admin`).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
import weakref
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

from gossamer.agent.bootstrap import layered_runtime
from gossamer.agent.ports import free_port as free_port  # re-exported for tests
from gossamer.contract.names import XDS_CLUSTER
from gossamer.envoy.admin import fetch
from gossamer.envoy.binary import find_envoy
from gossamer.envoy.errors import AdminError, EnvoyError

_live: weakref.WeakSet[EnvoyProcess] = weakref.WeakSet()
T = TypeVar("T")
# A test's config dumps may be larger than a sidecar's stats the control plane reads.
MAX_TEST_BODY = 64 * 1024 * 1024


@atexit.register
def _stop_leftovers() -> None:  # pragma: no cover - only for crashed tests
    for proc in list(_live):
        proc.stop(timeout=2.0)


def ads_bootstrap(
    node_id: str,
    xds_port: int,
    delta: bool = False,
    admin_port: int = 0,
    metadata: dict[str, Any] | None = None,
    *,
    cluster: str = "gossamer-test",
    xds_host: str = "127.0.0.1",
    retry_base_ms: int = 250,
    retry_max_ms: int = 2000,
) -> dict[str, Any]:
    """An Envoy bootstrap that takes everything from one ADS server on loopback.

    `delta` picks DELTA_GRPC over GRPC (state of the world). The reconnect
    backoff is short so tests that restart the xDS server do not wait long.
    """
    return {
        "node": {"id": node_id, "cluster": cluster, "metadata": metadata or {}},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                 "port_value": admin_port}}},
        "static_resources": {"clusters": [{
            "name": XDS_CLUSTER,
            "type": "STATIC",
            "connect_timeout": "1s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/"
                             "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                },
            },
            "load_assignment": {"cluster_name": XDS_CLUSTER, "endpoints": [{
                "lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                    "address": xds_host, "port_value": xds_port}}}}],
            }]},
        }]},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [{"envoy_grpc": {
                    "cluster_name": XDS_CLUSTER,
                    "retry_policy": {"retry_back_off": {
                        "base_interval": f"{retry_base_ms / 1000}s",
                        "max_interval": f"{retry_max_ms / 1000}s"}},
                }}],
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "layered_runtime": layered_runtime(),
    }


class EnvoyProcess:
    """One Envoy process with a given bootstrap; usable as a (sync) context manager."""

    def __init__(
        self,
        bootstrap: dict[str, Any],
        *,
        log_level: Literal["trace", "debug", "info", "warn", "error", "critical", "off"] = "warn",
        concurrency: int = 1,
        envoy_path: str | None = None,
        extra_args: Sequence[str] = (),
        workdir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.log_level = log_level
        self.concurrency = concurrency
        self.envoy_path = envoy_path or find_envoy()
        self.extra_args = tuple(extra_args)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="gossamer-envoy-"))
        self.config_path = self.workdir / "bootstrap.json"
        self.admin_path = self.workdir / "admin-address"
        self.log_path = self.workdir / "envoy.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin_address: tuple[str, int] | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> EnvoyProcess:
        """Start Envoy and wait until its admin API answers."""
        if self.proc is not None:
            raise EnvoyError("already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.bootstrap, indent=1))
        with contextlib.suppress(FileNotFoundError):
            self.admin_path.unlink()
        cmd = [
            self.envoy_path, "-c", str(self.config_path),
            "--use-dynamic-base-id",
            "--log-level", self.log_level,
            "--concurrency", str(self.concurrency),
            "--file-flush-interval-msec", "500",  # access logs within half a second
            "--admin-address-path", str(self.admin_path),
            *self.extra_args,
        ]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        _live.add(self)
        try:
            self._wait_admin(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` seconds; returns the exit code. Idempotent."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout)
        _live.discard(self)
        if self._own_workdir and os.environ.get("GOSSAMER_KEEP_ENVOY_LOGS") is None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return proc.returncode

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> EnvoyProcess:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> EnvoyProcess:
        if self.proc is None:
            await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await asyncio.to_thread(self.stop)

    # -- admin API -----------------------------------------------------------------------------

    @property
    def admin_url(self) -> str:
        host, port = self._admin_address()
        return f"http://{host}:{port}"

    def admin_get(self, path: str, timeout: float = 5.0) -> str:
        """GET an admin path ("/ready", "/stats?filter=...") and return the body."""
        return _blocking(self.aadmin_get(path, timeout))

    def admin_post(self, path: str, timeout: float = 5.0) -> str:
        return _blocking(self._admin("POST", path, timeout))

    def config_dump(self, include_eds: bool = True) -> dict[str, Any]:
        return _blocking(self.aconfig_dump(include_eds))

    def stats(self, filter_regex: str | None = None) -> dict[str, int]:
        """Counters and gauges as name -> value (histograms are left out)."""
        return _blocking(self.astats(filter_regex))

    def stat(self, name: str, default: int = 0) -> int:
        return self.stats(f"^{re.escape(name)}$").get(name, default)

    def is_ready(self) -> bool:
        try:
            return self.admin_get("/ready", timeout=2.0).strip() == "LIVE"
        except EnvoyError:
            return False

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait until GET /ready says LIVE (initial config applied)."""
        self.wait_for(self.is_ready, timeout, "Envoy to become ready (/ready == LIVE)")

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str,
                 interval: float = 0.05) -> None:
        """Poll `predicate` until true; raise EnvoyError (with Envoy's log) after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return
            self._check_alive()
            if time.monotonic() >= deadline:
                raise self._timed_out(timeout, what)
            time.sleep(interval)

    # -- async twins ---------------------------------------------------------------------------

    async def aadmin_get(self, path: str, timeout: float = 5.0) -> str:
        return await self._admin("GET", path, timeout)

    async def aconfig_dump(self, include_eds: bool = True) -> dict[str, Any]:
        data = json.loads(await self.aadmin_get(
            "/config_dump" + ("?include_eds" if include_eds else "")))
        if not isinstance(data, dict):
            raise EnvoyError("unexpected /config_dump answer")
        return data

    async def astats(self, filter_regex: str | None = None) -> dict[str, int]:
        path = "/stats"
        if filter_regex:
            path += "?filter=" + urllib.parse.quote(filter_regex)
        out: dict[str, int] = {}
        for line in (await self.aadmin_get(path)).splitlines():
            name, sep, value = line.partition(": ")
            if sep and value.lstrip("-").isdigit():
                out[name] = int(value)
        return out

    async def astat(self, name: str, default: int = 0) -> int:
        return (await self.astats(f"^{re.escape(name)}$")).get(name, default)

    async def await_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if (await self.aadmin_get("/ready", timeout=2.0)).strip() == "LIVE":
                    return
            except EnvoyError:
                pass
            self._check_alive()
            if time.monotonic() >= deadline:
                raise self._timed_out(timeout, "Envoy to become ready (/ready == LIVE)")
            await asyncio.sleep(0.05)

    # -- internals -----------------------------------------------------------------------------

    def _check_alive(self) -> None:
        if self.proc is None:
            raise EnvoyError("Envoy is not started")
        code = self.proc.poll()
        if code is not None:
            raise EnvoyError(f"Envoy exited with code {code}\n--- envoy log ---\n"
                             f"{self.logs()[-4000:]}")

    def _timed_out(self, timeout: float, what: str) -> EnvoyError:
        return EnvoyError(f"timed out after {timeout}s waiting for {what}\n"
                          f"--- envoy log ---\n{self.logs()[-4000:]}")

    def _wait_admin(self, timeout: float) -> None:
        def answered() -> bool:
            if self.admin_address is None:
                try:
                    text = self.admin_path.read_text().strip()
                except FileNotFoundError:
                    return False
                host, _, port = text.rpartition(":")
                if not port.isdigit():
                    return False
                self.admin_address = (host.strip("[]"), int(port))
            try:
                self.admin_get("/ready", timeout=1.0)
            except EnvoyError:
                return False
            return True

        self.wait_for(answered, timeout, "Envoy's admin API")

    def _admin_address(self) -> tuple[str, int]:
        if self.admin_address is None:
            raise EnvoyError("Envoy is not started")
        return self.admin_address

    async def _admin(self, method: str, path: str, timeout: float) -> str:
        """The body of any answer (/ready answers 503 with a body while not LIVE)."""
        if not path.startswith("/"):
            path = "/" + path
        host, port = self._admin_address()
        try:
            _, body = await fetch(host, port, method, path, timeout=timeout,
                                  limit=MAX_TEST_BODY)
        except AdminError as exc:
            raise EnvoyError(f"Envoy admin {method} {path}: {exc}") from exc
        return body.decode(errors="replace")


def _blocking(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` to completion from synchronous code. Inside a running event loop
    (a sync call in an async test) it runs on a thread of its own, blocking the
    caller as any synchronous call does."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work).result()
