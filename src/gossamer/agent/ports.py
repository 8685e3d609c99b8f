"""Free loopback ports for listeners the user did not pin."""

from __future__ import annotations

import socket
import threading

_handed_out: set[int] = set()
_lock = threading.Lock()


class NoFreePort(OSError):
    """The kernel kept offering ports this process had already handed out."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (bind to 0, read it, close), and never one this
    process handed out before: the kernel may offer a just-closed port again, so asking
    for an instance's inbound, outbound and admin ports in a row could return one port
    twice, and that Envoy would fail to bind."""
    with _lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port = int(s.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise NoFreePort("no unused free port after 100 tries")
