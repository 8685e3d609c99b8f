"""Ports for unpinned listeners: never the same one twice in a process."""

from __future__ import annotations

from gossamer.agent.ports import free_port


def test_free_ports_are_never_handed_out_twice() -> None:
    # The kernel readily offers a just-closed port again; `gossamer up` asks for four
    # per instance in a row, and a repeat made one instance's Envoy fail to bind.
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
