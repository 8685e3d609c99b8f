"""Envoy under valgrind's callgrind, counting the instructions it executes (`Ir`).

An instruction count is deterministic for one binary, config and input sequence,
whatever else the machine does: it is the measure this shared, noisy VM without
hardware counters cannot give us in seconds. Each Envoy starts with
instrumentation off (`--instr-atstart=no`: start-up runs ~10x faster and is not
counted); `callgrind_control` (through vgdb) switches it on, zeroes the counters
and dumps them, always for one PID (without one it would act on every callgrind
run on the machine, other people's included).

The wrapper script this writes lets any launcher run Envoy this way: Gossamer's
agent runs whatever `GOSSAMER_ENVOY` names (gossamer/envoy/binary.py).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CONTROL_TIMEOUT_S = 60.0  # one callgrind_control call (vgdb wakes a blocked process)
# The process name an Envoy under callgrind has in /proc (comm, 15 characters).
COMM = "callgrind-amd64"


class CallgrindError(RuntimeError):
    """valgrind is missing, or a callgrind run did not answer or dump."""


def valgrind_argv(out_dir: Path) -> list[str]:
    """valgrind's part of the command line: one output file per process, no
    instrumentation until switched on, counts per thread kept apart (the
    worker thread does the per-request work; the main thread the timers,
    xDS and admin)."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise CallgrindError("needs valgrind and callgrind_control (Debian package valgrind)")
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
            f"--callgrind-out-file={out_dir}/callgrind.%p", "--log-file="
            f"{out_dir}/valgrind.%p.log"]


def write_wrapper(envoy: str, out_dir: Path) -> Path:
    """An executable that runs `envoy` with its arguments under callgrind."""
    out_dir.mkdir(parents=True, exist_ok=True)
    script = out_dir / "envoy-under-callgrind"
    argv = " ".join(shlex.quote(a) for a in [*valgrind_argv(out_dir), envoy])
    script.write_text(f'#!/bin/sh\nexec {argv} "$@"\n')
    script.chmod(0o755)
    return script


def _as_owner(pid: int) -> list[str]:
    """vgdb (under callgrind_control) reaches a valgrind run of another uid only as
    that uid (as root it waits forever): the captured path's Envoys run as 1337."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    uid = int(next(line for line in status if line.startswith("Uid:")).split()[1])
    gid = int(next(line for line in status if line.startswith("Gid:")).split()[1])
    if uid == os.getuid():
        return []
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]


def _control(pid: int, *args: str) -> str:
    try:
        done = subprocess.run([*_as_owner(pid), "callgrind_control", *args, str(pid)],
                              capture_output=True, text=True, timeout=CONTROL_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise CallgrindError(f"callgrind_control {' '.join(args)} {pid}: no answer") from exc
    if done.returncode != 0 or "Error" in done.stdout:
        raise CallgrindError(f"callgrind_control {' '.join(args)} {pid}: "
                             f"{(done.stdout + done.stderr).strip()[:300]}")
    return done.stdout


def instrument(pid: int) -> None:
    _control(pid, "--instr=on")


def zero(pid: int) -> None:
    _control(pid, "--zero")


@dataclass(frozen=True)
class Dump:
    """One dump of one process: instructions per thread (1 = the main thread)."""

    per_thread: dict[int, int]

    @property
    def total(self) -> int:
        return sum(self.per_thread.values())


_TOTALS = re.compile(r"^(?:totals|summary):\s+(\d+)", re.MULTILINE)
_THREAD = re.compile(r"-(\d+)$")


def dump(pid: int, out_dir: Path, timeout: float = CONTROL_TIMEOUT_S) -> Dump:
    """Dump `pid`'s counters (callgrind zeroes them as it dumps) and read them."""
    before = set(out_dir.glob(f"callgrind.{pid}.*"))
    _control(pid, "--dump")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = sorted(set(out_dir.glob(f"callgrind.{pid}.*")) - before)
        counts = {}
        for f in new:
            m = _THREAD.search(f.name)
            found = _TOTALS.search(f.read_text(errors="replace")) if m else None
            if m and found:
                counts[int(m.group(1))] = int(found.group(1))
        if new and len(counts) == len(new):
            for f in new:  # read: the next dump must not see them
                f.unlink()
            return Dump(counts)
        time.sleep(0.05)
    raise CallgrindError(f"no complete dump of {pid} in {out_dir}")
