"""Readings from /proc: hypervisor steal per CPU, process CPU time, peak RSS.

Steal is what the hypervisor took from this VM's vCPUs while they wanted to
run; on this machine it swings from ~0 to tens of percent, and a stolen run
measures the host, not the proxies, so run.py repeats such runs.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuTimes:
    """One /proc/stat line per CPU: (total, steal, busy) jiffies; busy is
    user + nice + system time, what processes ran."""

    per_cpu: dict[int, tuple[int, int, int]]

    @classmethod
    def now(cls) -> CpuTimes:
        out: dict[int, tuple[int, int, int]] = {}
        for line in Path("/proc/stat").read_text().splitlines():
            name, *fields = line.split()
            if name.startswith("cpu") and name != "cpu":
                values = [int(v) for v in fields]
                # user nice system idle iowait irq softirq steal (guest counted in user)
                out[int(name[3:])] = (sum(values[:8]), values[7], sum(values[:3]))
        return cls(out)

    def steal_since(self, before: CpuTimes) -> dict[int, float]:
        """Fraction of each CPU's time stolen between `before` and now-`self`."""
        frac = {}
        for cpu, (total, steal, _) in self.per_cpu.items():
            t0, s0, _ = before.per_cpu.get(cpu, self.per_cpu[cpu])
            frac[cpu] = (steal - s0) / (total - t0) if total > t0 else 0.0
        return frac

    def busy_seconds_since(self, before: CpuTimes) -> float:
        """CPU seconds processes ran on all CPUs between `before` and `self`."""
        return sum(busy - before.per_cpu[cpu][2] for cpu, (_, _, busy) in self.per_cpu.items()
                   if cpu in before.per_cpu) / CLK_TCK

    def seconds_since(self, before: CpuTimes) -> float:
        """Wall seconds between the two readings (per CPU, averaged)."""
        spans = [total - before.per_cpu[cpu][0] for cpu, (total, _, _) in self.per_cpu.items()
                 if cpu in before.per_cpu]
        return sum(spans) / len(spans) / CLK_TCK if spans else 0.0


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` (all its threads), in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_kib(pid: int) -> int:
    """VmHWM: the most resident memory `pid` has had since it started."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise ValueError(f"no VmHWM for pid {pid}")


def descendants(root: int) -> list[int]:
    """PIDs of every living process under `root` (not `root` itself)."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "stat").read_text()
            except OSError:
                continue
            parent[int(entry.name)] = int(text[text.rindex(")") + 2:].split()[1])
    out, frontier = [], {root}
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier]
        out += kids
        frontier = set(kids)
    return out


def tree_cpu_seconds(root: int) -> float:
    """utime + stime of every living descendant of `root` (exited ones are gone from /proc)."""
    total = 0.0
    for pid in descendants(root):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += process_cpu_seconds(pid)
    return total


def children_named(parent: int, comm: str) -> list[int]:
    """PIDs of `parent`'s direct children whose command name is `comm`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        ppid = int(text[text.rindex(")") + 2:].split()[1])
        if ppid == parent and name == comm:
            found.append(int(entry.name))
    return found
