"""The edge that applies capture rules (agent/capture.py) to the network namespace
the agent runs in, with the `iptables` tools, and removes them.

`install` is idempotent: one `iptables-restore --noflush` transaction flushes and
refills the agent's chains, then exactly one jump into each is left in OUTPUT and
PREROUTING (a restarted agent finds its predecessor's and keeps one). `remove`
takes out the jumps and the chains, and finds nothing to do the second time.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from gossamer.agent.capture import JUMPS, OUTPUT_CHAIN, PREROUTING_CHAIN, CaptureRules

TIMEOUT = 20.0


class CaptureError(Exception):
    """Capture cannot be set up here, or an iptables command failed."""


def check_can_capture() -> None:
    """One clear line, before anything starts, when capture cannot work here."""
    if os.geteuid() != 0:
        raise CaptureError("--capture needs root: it writes iptables rules in the workload's "
                           "network namespace (Envoy itself runs as --proxy-uid)")
    missing = [t for t in ("iptables", "iptables-restore", "iptables-save")
               if shutil.which(t) is None]
    if missing:
        raise CaptureError(f"--capture needs the iptables tools; not found: {', '.join(missing)}")


def _run(args: list[str], stdin: str | None = None, check: bool = True) -> str:
    try:
        done = subprocess.run(args, input=stdin, capture_output=True, text=True,
                              timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CaptureError(f"{args[0]}: {exc}") from exc
    if check and done.returncode != 0:
        raise CaptureError(f"{' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def saved_nat() -> str:
    return _run(["iptables-save", "-t", "nat"])


def install(rules: CaptureRules) -> None:
    _run(["iptables-restore", "--noflush"], rules.restore_input())
    lines = saved_nat().splitlines()
    for chain, jump in JUMPS:
        target = jump.rsplit(" ", 1)[1]
        count = lines.count(jump)
        if count == 0:
            _run(["iptables", "-t", "nat", "-I", chain, "1", "-j", target])
        for _ in range(count - 1):
            _run(["iptables", "-t", "nat", "-D", chain, "-j", target])


def remove() -> None:
    """Take out every jump into our chains, then the chains; what is not there is fine."""
    lines = saved_nat().splitlines()
    for chain, jump in JUMPS:
        for _ in range(lines.count(jump)):
            _run(["iptables", "-t", "nat", "-D", chain, "-j", jump.rsplit(" ", 1)[1]])
    for chain in (OUTPUT_CHAIN, PREROUTING_CHAIN):
        if any(line.startswith(f":{chain} ") for line in lines):
            _run(["iptables", "-t", "nat", "-F", chain])
            _run(["iptables", "-t", "nat", "-X", chain])
