"""Capture rules as the agent writes them (agent/capture.py): golden, in the form
`iptables-save` prints them back; the host's resolvers; the command-line options.
Regenerate the golden file with GOSSAMER_UPDATE_GOLDEN=1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gossamer.agent.capture import CaptureRules, nameservers, ours
from gossamer.agent.capturing import CaptureOptions

HERE = Path(__file__).parent


def test_golden_rules() -> None:
    rules = CaptureRules(outbound_port=15001, dns_port=15053, inbound_port=15006,
                         app_ports=(8080,), proxy_uid=1337, exclude_ports=(22, 9000),
                         exclude_cidrs=("10.0.0.0/8",),
                         control_plane=(("198.18.0.1", 15010), ("198.18.0.1", 15080)))
    golden = HERE / "golden" / "capture-rules.txt"
    if os.environ.get("GOSSAMER_UPDATE_GOLDEN"):
        golden.write_text(rules.restore_input())
    assert rules.restore_input() == golden.read_text()


def test_the_order_keeps_envoy_out_and_catches_every_dns_query() -> None:
    lines = CaptureRules(15001, 15053, 15006, (8080,)).restore_input().splitlines()
    owner = lines.index("-A GOSSAMER_OUTPUT -m owner --uid-owner 1337 -j RETURN")
    dns = lines.index("-A GOSSAMER_OUTPUT -p udp -m udp --dport 53 -j REDIRECT "
                      "--to-ports 15053")
    loopback = lines.index("-A GOSSAMER_OUTPUT -d 127.0.0.0/8 -j RETURN")
    tcp = lines.index("-A GOSSAMER_OUTPUT -p tcp -j REDIRECT --to-ports 15001")
    # Envoy's own traffic first (no loop), DNS before loopback (a 127.0.0.53 resolver
    # is captured too), the catch-all TCP redirect last.
    assert owner < dns < loopback < tcp == len(lines) - 3


def test_a_pure_client_redirects_nothing_inbound() -> None:
    text = CaptureRules(15001, 15053, 0, ()).restore_input()
    assert "-A GOSSAMER_PREROUTING" not in text
    assert ":GOSSAMER_PREROUTING - [0:0]" in text  # still flushed: stale rules go


def test_ours_finds_the_agents_lines_in_a_save() -> None:
    saved = ("*nat\n:OUTPUT ACCEPT [0:0]\n:GOSSAMER_OUTPUT - [0:0]\n-A OUTPUT -j KUBE\n"
             "-A OUTPUT -j GOSSAMER_OUTPUT\n-A GOSSAMER_OUTPUT -p tcp -j REDIRECT "
             "--to-ports 15001\nCOMMIT\n")
    assert ours(saved) == [":GOSSAMER_OUTPUT - [0:0]", "-A OUTPUT -j GOSSAMER_OUTPUT",
                           "-A GOSSAMER_OUTPUT -p tcp -j REDIRECT --to-ports 15001"]


def test_the_host_resolvers_come_from_resolv_conf() -> None:
    conf = ("# generated\nsearch corp.example\nnameserver 127.0.0.53\n"
            "nameserver fe80::1%eth0\n nameserver 198.18.0.53 \nnameserver bogus\n"
            "options ndots:2\nnameserver 10.0.0.4\n")
    assert nameservers(conf) == ("127.0.0.53", "fe80::1", "198.18.0.53")
    assert nameservers("") == ()


def test_options_from_the_command_line() -> None:
    opts = CaptureOptions.parse(1337, ["22,9000", "8443"], ["10.0.0.0/8,192.168.1.7"],
                                15001, 15053)
    assert opts.exclude_ports == (22, 9000, 8443)
    assert opts.exclude_cidrs == ("10.0.0.0/8", "192.168.1.7/32")


@pytest.mark.parametrize(("uid", "ports", "cidrs", "message"), [
    (0, [], [], "--proxy-uid"),
    (1337, ["http"], [], "--capture-exclude-ports: 'http'"),
    (1337, ["70000"], [], "--capture-exclude-ports"),
    (1337, [], ["10.0.0.0/33"], "--capture-exclude-cidrs"),
])
def test_bad_options_name_the_option(uid: int, ports: list[str], cidrs: list[str],
                                     message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CaptureOptions.parse(uid, ports, cidrs, 15001, 15053)


def test_a_workdir_envoy_cannot_reach_is_refused_with_the_reason(tmp_path: Path) -> None:
    from gossamer.agent.capturing import CaptureSession
    from gossamer.agent.iptables import CaptureError

    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    (closed / "work").mkdir()
    with pytest.raises(CaptureError, match=f"{closed} is not searchable"):
        CaptureSession(CaptureOptions()).hand_over(closed / "work")
