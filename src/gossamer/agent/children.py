"""How the agent starts and stops its children (Envoy, the app).

Each child gets its own session, so a Ctrl-C or a group signal meant for the
agent does not reach Envoy or the app before the agent has drained them; and
each child is told by the kernel to die with the agent (PR_SET_PDEATHSIG), so
an agent killed with SIGKILL leaves no orphan behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Runs in the child between fork and exec. gRPC fork support must be off in
    the agent (GRPC_ENABLE_FORK_SUPPORT=false, set by the CLI before gRPC loads)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


async def stop_group(proc: asyncio.subprocess.Process, timeout: float) -> None:
    """SIGTERM the process group of a child started in its own session, and SIGKILL
    it if it lingers past `timeout`."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
