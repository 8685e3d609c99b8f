"""Run and supervise one Envoy process.

Theory of operation: `start()` writes the bootstrap and launches Envoy;
`supervise()` waits on the process and, if it exits while we still want it
running, restarts it after a backoff that doubles from 0.5 s to 10 s and
resets once a run lasted a minute. `stop()` clears the wish first so the
supervisor does not resurrect a process we are stopping on purpose.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

from gossamer.agent.children import die_with_parent
from gossamer.envoy.admin import fetch
from gossamer.envoy.binary import find_envoy
from gossamer.envoy.errors import AdminError, EnvoyError

log = logging.getLogger(__name__)
ACCESS_LOG_FLUSH_MS = 1000


class EnvoySupervisor:
    def __init__(self, bootstrap: dict[str, Any], workdir: Path, admin_port: int, *,
                 concurrency: int = 2, log_level: str = "warning",
                 drain_seconds: float = 2.0, user: int | None = None) -> None:
        """`user`: run Envoy as this uid (and gid), as capture mode does (agent/capturing.py)."""
        self._bootstrap = bootstrap
        self._workdir = workdir
        self.admin_port = admin_port
        self._concurrency = concurrency
        self._log_level = log_level
        self._drain_seconds = drain_seconds
        self._user = user
        self.process: asyncio.subprocess.Process | None = None
        self._wanted = False
        self.restarts = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def workdir(self) -> Path:
        return self._workdir

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    async def start(self) -> None:
        self._workdir.mkdir(parents=True, exist_ok=True)
        path = self._workdir / "envoy-bootstrap.json"
        # 0600: the bootstrap carries the join token Envoy presents to xDS.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(self._bootstrap, indent=2))
        path.chmod(0o600)
        if self._user is not None:
            os.chown(path, self._user, self._user)
        logfile = open(self._workdir / "envoy.log", "ab")  # noqa: SIM115, ASYNC230 - for the child
        self._wanted = True
        self.process = await asyncio.create_subprocess_exec(
            find_envoy(), "-c", str(path), "--disable-hot-restart",
            "--concurrency", str(self._concurrency), "--log-level", self._log_level,
            "--drain-time-s", str(max(1, int(self._drain_seconds))),
            "--drain-strategy", "immediate",
            # Access logs reach their file within a second (default: 10 s).
            "--file-flush-interval-msec", str(ACCESS_LOG_FLUSH_MS),
            stdout=logfile, stderr=logfile, stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True, preexec_fn=die_with_parent,
            user=self._user, group=self._user,
            extra_groups=None if self._user is None else [],
        )
        logfile.close()
        log.info("envoy started (pid %s, admin %s)", self.process.pid, self.admin_url)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """LIVE means Envoy has its first clusters and listeners from the control plane."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.process is None or self.process.returncode is not None:
                raise EnvoyError(f"envoy exited; see {self._workdir / 'envoy.log'}")
            try:
                status, _ = await fetch("127.0.0.1", self.admin_port, "GET", "/ready",
                                        timeout=1.0)
                if status == 200:
                    return
            except AdminError:
                pass
            await asyncio.sleep(0.1)
        raise EnvoyError(f"envoy not ready after {timeout:.0f}s (no config from the control "
                         f"plane?); see {self._workdir / 'envoy.log'}; it ends:\n"
                         f"{_tail(self._workdir / 'envoy.log')}")

    async def ready_status(self) -> int:
        """Envoy's /ready as kubelet should see it: 200 when LIVE, 503 otherwise (starting,
        draining, gone), so a probe of the pod's address can stand for the loopback-only
        admin."""
        if self.process is None or self.process.returncode is not None:
            return 503
        try:
            status, _ = await fetch("127.0.0.1", self.admin_port, "GET", "/ready", timeout=1.0)
        except AdminError:
            return 503
        return 200 if status == 200 else 503

    async def supervise(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = 0.5
        while self._wanted and self.process is not None:
            started = loop.time()
            code = await self.process.wait()
            if not self._wanted:
                return
            if loop.time() - started > 60:
                backoff = 0.5
            log.error("envoy exited with %s; restarting in %.1fs", code, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
            if self._wanted:
                self.restarts += 1
                await self.start()

    async def admin(self, method: str, path: str) -> str:
        status, body = await fetch("127.0.0.1", self.admin_port, method, path, timeout=5.0)
        if not 200 <= status < 300:
            raise AdminError(f"HTTP {status} for {method} {path.split('?')[0]}")
        return body.decode(errors="replace")

    async def drain_inbound(self) -> None:
        """Stop accepting new inbound connections; finish what is in flight."""
        if not self.running:
            return
        try:
            await self.admin("POST", "/drain_listeners?inboundonly&graceful")
        except AdminError as exc:
            log.warning("could not drain inbound listeners: %s", exc)

    async def stop(self, timeout: float = 5.0) -> None:
        self._wanted = False
        proc = self.process
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()


def _tail(path: Path, size: int = 2000) -> str:
    """The end of Envoy's log, so the error says why where it is reported (a host's
    workdir may be gone by the time someone reads it)."""
    try:
        return path.read_bytes()[-size:].decode(errors="replace")
    except OSError:
        return "(no log)"
