"""Free loopback ports for listeners the user did not pin."""

from __future__ import annotations

import ipaddress
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


def default_off_loopback(asked: int | None, address: str, default: int) -> int:
    """A port option whose default (`asked` None) is `default` on a host address and 0
    (off) on loopback, where every sidecar of a machine shares the address and the
    control plane runs beside them; an asked port is kept (0: off)."""
    if asked is not None:
        return asked
    try:
        loopback = ipaddress.ip_address(address).is_loopback
    except ValueError:
        loopback = address == "localhost"
    return 0 if loopback else default


def check_free(address: str, port: int, option: str) -> None:
    """Raise PortInUse when (address, port) cannot be bound now: two sidecars on one
    host with the same fixed port would otherwise fail inside Envoy's log."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # As Envoy binds: a port whose last connections are in TIME_WAIT is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError as exc:
            raise PortInUse(f"{option} {port}: cannot listen on {address}:{port} "
                            f"({exc.strerror}); another sidecar on this host? give each one "
                            f"its own {option} (0 turns it off)") from exc


class PortInUse(OSError):
    """A fixed port the sidecar needs is taken."""
