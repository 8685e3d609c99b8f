"""Transparent capture (`gossamer proxy --capture`): the nat rules that send the
workload's traffic through its sidecar, as `istio-iptables` does. Pure: the rules
as `iptables-restore` input, and the host's resolvers; agent/iptables.py applies
them.

In the workload's network namespace (the agent's own, where the app runs):

- OUTPUT, chain GOSSAMER_OUTPUT: Envoy's own traffic (it runs as `proxy_uid`) is
  left alone, so its upstream connections and DNS lookups never loop back into
  it; then UDP to port 53 goes to the sidecar's DNS listener (mesh DNS,
  translate/dns.py), whatever resolver the app asks, loopback ones included;
  then loopback destinations, excluded ports and CIDRs (and the control plane,
  which the agent itself talks to) are left alone; every other TCP connection
  goes to the outbound capture listener (translate/capture.py).
- PREROUTING, chain GOSSAMER_PREROUTING: TCP arriving for the app's port goes to
  the inbound listener, so from outside the app is reached only through its
  sidecar (mTLS, authorization), never around it.

The agent owns the two chains: it fills them whole, flushing what was there
(`:CHAIN - [0:0]` in one `iptables-restore --noflush` transaction), so a restarted
agent after a `kill -9` replaces stale rules instead of adding to them, and there
is exactly one jump from OUTPUT and from PREROUTING into them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

OUTPUT_CHAIN = "GOSSAMER_OUTPUT"
PREROUTING_CHAIN = "GOSSAMER_PREROUTING"
DEFAULT_PROXY_UID = 1337
# The jumps into our chains, as `iptables-save` prints them.
JUMPS = (("OUTPUT", f"-A OUTPUT -j {OUTPUT_CHAIN}"),
         ("PREROUTING", f"-A PREROUTING -j {PREROUTING_CHAIN}"))


@dataclass(frozen=True)
class CaptureRules:
    """What to redirect where. `inbound_port` 0: a pure client, nothing inbound."""

    outbound_port: int
    dns_port: int
    inbound_port: int
    app_ports: tuple[int, ...]
    proxy_uid: int = DEFAULT_PROXY_UID
    # Outbound destination ports and networks never captured (--capture-exclude-*).
    exclude_ports: tuple[int, ...] = ()
    exclude_cidrs: tuple[str, ...] = ()
    # (address, port) the agent reaches the control plane at: left alone.
    control_plane: tuple[tuple[str, int], ...] = ()

    def restore_input(self) -> str:
        """`iptables-restore --noflush` input: our chains, flushed and filled."""
        out = ["*nat", f":{OUTPUT_CHAIN} - [0:0]", f":{PREROUTING_CHAIN} - [0:0]"]
        o = f"-A {OUTPUT_CHAIN}"
        out.append(f"{o} -m owner --uid-owner {self.proxy_uid} -j RETURN")
        out.append(f"{o} -p udp -m udp --dport 53 -j REDIRECT --to-ports {self.dns_port}")
        out.append(f"{o} -d 127.0.0.0/8 -j RETURN")
        out.extend(f"{o} -d {cidr} -j RETURN" for cidr in self.exclude_cidrs)
        out.extend(f"{o} -p tcp -m tcp --dport {port} -j RETURN" for port in self.exclude_ports)
        out.extend(f"{o} -d {host}/32 -p tcp -m tcp --dport {port} -j RETURN"
                   for host, port in self.control_plane)
        out.append(f"{o} -p tcp -j REDIRECT --to-ports {self.outbound_port}")
        if self.inbound_port:
            out.extend(f"-A {PREROUTING_CHAIN} -p tcp -m tcp --dport {port} -j REDIRECT "
                       f"--to-ports {self.inbound_port}" for port in self.app_ports)
        out.append("COMMIT")
        return "\n".join(out) + "\n"


def check_cidr(text: str) -> str:
    """An IPv4 network (`10.0.0.0/8`) or address, in the form iptables prints it."""
    try:
        net = ipaddress.IPv4Network(text, strict=False)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an IPv4 address or CIDR") from exc
    return str(net)


def nameservers(resolv_conf: str) -> tuple[str, ...]:
    """The resolvers of a resolv.conf, in order (at most 3, as glibc uses). Loopback
    resolvers stay: Envoy queries them as its own uid, which capture leaves alone."""
    out = []
    for line in resolv_conf.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            address = fields[1].split("%")[0]  # fe80::1%eth0: the zone is not ours to keep
            try:
                out.append(str(ipaddress.ip_address(address)))
            except ValueError:
                continue
    return tuple(out[:3])


def ours(saved: str) -> list[str]:
    """The lines of an `iptables-save -t nat` that belong to the agent: our chains'
    rules and the jumps into them (for tests and for `remove`)."""
    return [line for line in saved.splitlines()
            if OUTPUT_CHAIN in line or PREROUTING_CHAIN in line]
