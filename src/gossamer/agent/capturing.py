"""The agent's side of capture mode (`gossamer proxy --capture`): before Envoy
starts, check that capture can work here and read the host's resolvers; hand
Envoy's files to its unprivileged uid; once Envoy is ready, install the rules
(agent/capture.py, agent/iptables.py); at shutdown, remove them.

Envoy runs as `proxy_uid` (gid the same number), so the rules can leave its
traffic alone by owner: that is what keeps its own upstream connections from
looping back into it. The agent stays root (it writes iptables rules); it hands
Envoy what Envoy opens itself: the bootstrap (agent/envoy.py), the workdir (the
access log) and the SDS socket. The agent's own calls to the control plane are
left alone by destination.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from gossamer.agent import iptables
from gossamer.agent.capture import DEFAULT_PROXY_UID, CaptureRules, check_cidr, nameservers
from gossamer.agent.iptables import CaptureError

log = logging.getLogger(__name__)
RESOLV_CONF = Path("/etc/resolv.conf")


@dataclass(frozen=True)
class CaptureOptions:
    proxy_uid: int = DEFAULT_PROXY_UID
    outbound_port: int = 15001
    dns_port: int = 15053
    exclude_ports: tuple[int, ...] = ()
    exclude_cidrs: tuple[str, ...] = ()
    # The rules were installed before the agent started (an init container,
    # `gossamer capture install`), so the agent neither needs root nor touches them,
    # and Envoy runs as the agent's own user (which must then be proxy_uid).
    preinstalled: bool = False

    @classmethod
    def parse(cls, proxy_uid: int, ports: list[str], cidrs: list[str], outbound_port: int,
              dns_port: int) -> CaptureOptions:
        """From the command line (each list: repeated or comma-separated); ValueError
        naming the option."""
        if not 0 < proxy_uid < 2 ** 31:
            raise ValueError("--proxy-uid: must be a non-root uid")
        numbers = []
        for item in (p for text in ports for p in text.split(",") if p):
            if not item.isdigit() or not 0 < int(item) < 65536:
                raise ValueError(f"--capture-exclude-ports: {item!r} is not a port")
            numbers.append(int(item))
        try:
            nets = tuple(check_cidr(c) for text in cidrs for c in text.split(",") if c)
        except ValueError as exc:
            raise ValueError(f"--capture-exclude-cidrs: {exc}") from exc
        return cls(proxy_uid, outbound_port, dns_port, tuple(numbers), nets)


def _api(server: str) -> list[tuple[str, int]]:
    url = urlsplit(server)
    port = url.port or (443 if url.scheme == "https" else 80)
    return list(_addresses(url.hostname or "127.0.0.1", port))


def _addresses(host: str, port: int) -> list[tuple[str, int]]:
    """The IPv4 addresses of host (an address or a name), with port."""
    try:
        return [(str(ipaddress.IPv4Address(host)), port)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return []
    return sorted({(str(info[4][0]), port) for info in infos})


class CaptureSession:
    def __init__(self, options: CaptureOptions, resolv_conf: Path = RESOLV_CONF) -> None:
        self.options = options
        self._resolv_conf = resolv_conf
        self.installed = False

    @property
    def user(self) -> int:
        return self.options.proxy_uid

    @property
    def envoy_user(self) -> int | None:
        """The uid Envoy is started as: proxy_uid, unless the agent already runs as it."""
        return None if self.options.preinstalled else self.user

    def prepare(self) -> tuple[str, ...]:
        """Fail fast when capture cannot work; the host's resolvers for mesh DNS."""
        if self.options.preinstalled:
            if os.geteuid() != self.user:
                raise CaptureError(f"--capture-installed: the agent must run as --proxy-uid "
                                   f"{self.user} (the rules let only that uid's traffic "
                                   f"out), not uid {os.geteuid()}")
        else:
            iptables.check_can_capture()
        try:
            text = self._resolv_conf.read_text()
        except OSError as exc:
            log.warning("cannot read %s (%s): names outside the mesh will not resolve",
                        self._resolv_conf, exc.strerror)
            return ()
        return nameservers(text)

    def hand_over(self, *paths: Path) -> None:
        """Make what Envoy opens itself its own (Envoy runs as the proxy uid), after
        checking that it can reach them at all (one clear line, not Envoy's failure)."""
        if self.options.preinstalled:
            return  # Envoy is the agent's own user: its files are already Envoy's
        for path in paths:
            for parent in path.absolute().parents:
                st = parent.stat()
                if not (st.st_mode & 0o001 or (st.st_uid == self.user and st.st_mode & 0o100)
                        or (st.st_gid == self.user and st.st_mode & 0o010)):
                    raise CaptureError(
                        f"Envoy runs as uid {self.user} and cannot reach {path}: {parent} is "
                        "not searchable by it; use a --workdir under a directory others can "
                        f"enter (such as /tmp), or chmod o+x {parent}")
            os.chown(path, self.user, self.user)

    async def install(self, inbound_port: int, app_port: int, servers: Sequence[str],
                      xds: Sequence[tuple[str, int]]) -> None:
        """`servers`: every replica's API URL; `xds`: every replica's xDS address."""
        if self.options.preinstalled:
            return
        control_plane = sorted({address for server in servers for address in _api(server)}
                               | {address for host_port in xds
                                  for address in _addresses(*host_port)})
        o = self.options
        rules = CaptureRules(o.outbound_port, o.dns_port, inbound_port,
                             (app_port,) if app_port else (), o.proxy_uid, o.exclude_ports,
                             o.exclude_cidrs, tuple(a for a in control_plane
                                                    if not a[0].startswith("127.")))
        await asyncio.to_thread(iptables.install, rules)
        self.installed = True
        log.info("capture rules installed: outbound tcp -> %s, dns -> %s, inbound %s -> %s",
                 o.outbound_port, o.dns_port, app_port, inbound_port)

    async def remove(self) -> None:
        try:
            await asyncio.to_thread(iptables.remove)
        except CaptureError as exc:
            log.error("could not remove the capture rules: %s", exc)
        self.installed = False
