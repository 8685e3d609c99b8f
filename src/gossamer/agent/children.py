"""How the agent starts its children (Envoy, the app).

Each child gets its own session, so a Ctrl-C or a group signal meant for the
agent does not reach Envoy or the app before the agent has drained them; and
each child is told by the kernel to die with the agent (PR_SET_PDEATHSIG), so
an agent killed with SIGKILL leaves no orphan behind.
"""

from __future__ import annotations

import ctypes
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Runs in the child between fork and exec. gRPC fork support must be off in
    the agent (GRPC_ENABLE_FORK_SUPPORT=false, set by the CLI before gRPC loads)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
