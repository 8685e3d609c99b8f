"""Free ports for listeners the user did not pin, and the off-host listeners' ports."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import logging
import os
import socket
import tempfile
import threading
from collections.abc import AsyncIterator, Collection
from pathlib import Path

log = logging.getLogger(__name__)

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


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def off_host_port(asked: int | None, address: str, default: int, option: str,
                  own: Collection[int] = ()) -> int:
    """The port of a listener on `address` for other hosts (`--admin-tls-port`,
    `--prometheus-port`). Asked (`asked` not None): that port, which must be free and
    none of the sidecar's `own` (0: off). Not asked: off on loopback, where every
    sidecar of a machine shares the address and the control plane runs beside them;
    else `default`, or, when another sidecar on this host holds it, a free port (the
    control plane and `prometheus-config` read it from the node metadata)."""
    if asked is not None:
        if asked and asked in own:
            raise PortInUse(f"{option} {asked} is also one of this sidecar's own ports "
                            "(inbound, outbound, admin, capture or an upstream)")
        if asked:
            check_free(address, asked, option)
        return asked
    if is_loopback(address):
        return 0
    if default not in own:
        try:
            check_free(address, default, option)
            return default
        except PortInUse:
            pass
    port = _free_on(address, own)
    log.warning("%s: %s:%s is taken (another sidecar on this host?); listening on port %s "
                "instead: give each sidecar its own %s to choose", option, address, default,
                port, option)
    return port


@contextlib.asynccontextmanager
async def host_ports_lock(address: str, wait: float = 60.0) -> AsyncIterator[None]:
    """Hold it from settling the off-host ports until Envoy has bound them: two agents
    starting at once on one host address would otherwise both find a default port free,
    and the second Envoy would fail to bind it. A lock file per address in the temporary
    directory (hosts that share a file system have their own addresses); on loopback,
    where nothing is settled, none. Best effort: after `wait` seconds, go on without."""
    if is_loopback(address):
        yield
        return
    path = Path(tempfile.gettempdir()) / f"gossamer-ports-{address}.lock"
    try:  # read-only suffices for flock, so agents of other users share the file
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError as exc:
        log.warning("cannot open %s (%s): settling the ports without it", path, exc.strerror)
        yield
        return
    try:
        deadline = asyncio.get_running_loop().time() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if asyncio.get_running_loop().time() > deadline:
                    log.warning("%s still held after %.0f s: settling the ports without it",
                                path, wait)
                    break
                await asyncio.sleep(0.1)
        yield
    finally:
        os.close(fd)  # releases the lock


def _free_on(address: str, own: Collection[int]) -> int:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    for _ in range(100):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((address, 0))
            port = int(s.getsockname()[1])
        if port not in own:
            return port
    raise NoFreePort(f"no free port on {address} after 100 tries")


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
    """A port the sidecar was asked to listen on is taken."""
