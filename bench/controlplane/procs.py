"""The processes the driver runs: the control plane (with /proc accounting) and the
load generators (JSON lines over pipes). Each is its own process group, stopped by
PID only."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gossamer.agent.children import stop_group

READY = re.compile(rb"API http://([\d.]+):(\d+)\s+xDS ([\d.]+):(\d+)")
CLK_TCK = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parents[2]


def _log(path: Path) -> Any:
    """An append-mode file for a child's output (the child keeps it open)."""
    return open(path, "ab")


def proc_usage(pid: int) -> dict[str, float]:
    """CPU seconds (user + system, all threads), current and peak RSS in MiB."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {"cpu_s": 0.0, "rss_mib": 0.0, "hwm_mib": 0.0}
    fields = stat[stat.rindex(")") + 2:].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    mem = {line.split(":")[0]: line.split()[1] for line in status.splitlines()
           if line.startswith(("VmRSS", "VmHWM"))}
    return {"cpu_s": cpu, "rss_mib": int(mem.get("VmRSS", 0)) / 1024,
            "hwm_mib": int(mem.get("VmHWM", 0)) / 1024}


class ControlPlaneProcess:
    """`python -m gossamer control-plane` on a state dir, as an operator runs it."""

    def __init__(self, state_dir: Path, xds_port: int = 0, api_port: int = 0,
                 extra: Sequence[str] = ()) -> None:
        self.state_dir = state_dir
        self.xds_port = xds_port
        self.api_port = api_port
        self.extra = list(extra)  # e.g. --store postgresql://... for a replica
        self.proc: asyncio.subprocess.Process | None = None
        self.spawned_at = 0.0
        self.ready_at = 0.0
        self._drain: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, timeout: float = 60.0) -> None:
        log = _log(self.state_dir / "control-plane.log")
        self.spawned_at = time.monotonic()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gossamer", "control-plane", "--state-dir",
            str(self.state_dir), "--xds-port", str(self.xds_port), "--api-port",
            str(self.api_port), "--stats-interval", "3600", "--stats-window", "3600",
            *self.extra, stdout=asyncio.subprocess.PIPE, stderr=log,
            stdin=asyncio.subprocess.DEVNULL, start_new_session=True)
        log.close()
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(),
                                          max(0.1, deadline - time.monotonic()))
            if not line:
                raise RuntimeError(f"control plane exited; see {self.state_dir}/control-plane.log")
            m = READY.search(line)
            if m:
                self.api_port, self.xds_port = int(m.group(2)), int(m.group(4))
                break
        self.ready_at = time.monotonic()
        self._drain = asyncio.create_task(self._discard(self.proc.stdout))

    @staticmethod
    async def _discard(stream: asyncio.StreamReader) -> None:
        while await stream.readline():
            pass

    def usage(self) -> dict[str, float]:
        return proc_usage(self.pid) if self.proc and self.proc.returncode is None else {
            "cpu_s": 0.0, "rss_mib": 0.0, "hwm_mib": 0.0}

    async def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None:
            await stop_group(self.proc, timeout)
        if self._drain is not None:
            self._drain.cancel()


class LoadGenProcess:
    """One `loadgen.py` process; `ask` sends a command and returns its one-line answer."""

    def __init__(self, proxies_file: Path, target: str, ca_file: Path, workdir: Path) -> None:
        self.args = ["--proxies", str(proxies_file), "--target", target,
                     "--ca-file", str(ca_file)]
        self.workdir = workdir
        self.proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def start(self, timeout: float = 60.0) -> None:
        log = _log(self.workdir / "loadgen.log")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.controlplane.loadgen", *self.args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
            start_new_session=True, env=env, limit=64 << 20)
        log.close()
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"loadgen exited; see {self.workdir}/loadgen.log")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def ask(self, op: str, timeout: float = 60.0, **kw: Any) -> Any:
        assert self.proc is not None
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        async with self._lock:
            self.proc.stdin.write((json.dumps({"op": op, **kw}) + "\n").encode())
            await self.proc.stdin.drain()
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"loadgen exited; see {self.workdir}/loadgen.log")
        return json.loads(line)

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None and self.proc.stdin is not None:
            with contextlib.suppress(Exception):
                self.proc.stdin.write(b'{"op": "quit"}\n')
                await self.proc.stdin.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 10)
        await stop_group(self.proc, 5.0)


class LoadGens:
    """Several load generators, queried as one (answers merged in proxy order
    within each process; the driver only aggregates them)."""

    def __init__(self, gens: list[LoadGenProcess]) -> None:
        self.gens = gens

    async def status(self) -> dict[str, Any]:
        parts = await asyncio.gather(*(g.ask("status") for g in self.gens))
        out: dict[str, Any] = {}
        for part in parts:
            for key, value in part.items():
                if key == "last_errors":
                    out[key] = sorted(set(out.get(key, [])) | set(value))[:5]
                elif key == "synced_last":
                    out[key] = max(out.get(key, 0.0), value)
                else:
                    out[key] = out.get(key, 0) + value
        return out

    async def reset_backoff(self) -> None:
        await asyncio.gather(*(g.ask("reset_backoff") for g in self.gens))

    async def record(self, on: bool) -> None:
        await asyncio.gather(*(g.ask("record", on=on) for g in self.gens))

    async def arrivals(self, queries: list[list[Any]]) -> list[dict[int, float | None]]:
        """Per query: proxy index -> seconds to first arrival (None: not yet), subscribers only."""
        parts = await asyncio.gather(*(g.ask("arrivals", queries=queries) for g in self.gens))
        return [{j: t for part in parts for j, t in part[i]} for i in range(len(queries))]

    async def bytes_between(self, t0: float, t1: float) -> dict[int, int]:
        """Proxy index -> bytes it received in [t0, t1]."""
        parts = await asyncio.gather(*(g.ask("bytes", t0=t0, t1=t1) for g in self.gens))
        return {j: n for part in parts for j, n in part}

    async def lag(self, t0: float, t1: float) -> dict[str, float]:
        parts = await asyncio.gather(*(g.ask("lag", t0=t0, t1=t1) for g in self.gens))
        return {"max_ms": max(p["max_ms"] for p in parts),
                "p99_ms": max(p["p99_ms"] for p in parts)}

    def usage(self) -> dict[str, float]:
        usages = [proc_usage(g.pid) for g in self.gens]
        return {"cpu_s": sum(u["cpu_s"] for u in usages),
                "hwm_mib": sum(u["hwm_mib"] for u in usages)}

    async def stop(self) -> None:
        await asyncio.gather(*(g.stop() for g in self.gens), return_exceptions=True)
