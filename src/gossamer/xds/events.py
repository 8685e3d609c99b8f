"""What the stream machines hand the server: responses to write (`Outgoing`), and
what the status registry and the metrics learn from a stream (`Event`s).

Plain values, so the machines (`sotw.py`, `delta.py`) stay free of I/O and the
registry (`status.py`) needs nothing of the machines.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One response to write, with what status and metrics need about it.

    The bytes are assembled on demand (`payload`) from cached pieces, so the
    server can build them only once it holds a write slot: a push to
    thousands of streams then holds only the in-flight responses in memory,
    not one per stream. Each `payload` call assembles the bytes anew.
    """

    type_url: str
    # SotW: version_info; delta: system_version_info. Both: the snapshot's
    # version of the type at the time of sending.
    version: str
    nonce: str
    resources: int
    removed: int
    encode: Callable[[], bytes] = field(repr=False, compare=False)
    # About the payload's length, known before it is assembled (the server's
    # send window counts it): the resources' bytes, without framing.
    size: int = field(default=0, compare=False)

    @property
    def payload(self) -> bytes:
        return self.encode()


@dataclass(frozen=True, slots=True)
class Acked:
    """The client runs `version` of the type.

    `implicit` is True when we know it without an ACK message: a reconnecting
    client said it already has the current version, or (delta) nothing the
    client subscribes to changed in a new snapshot version.
    """

    type_url: str
    version: str
    implicit: bool = False


@dataclass(frozen=True, slots=True)
class Nacked:
    """The client rejected `version` of the type; `message` is its error text."""

    type_url: str
    version: str
    message: str
    code: int


@dataclass(frozen=True, slots=True)
class Subscribed:
    """The client's subscription for a type changed."""

    type_url: str
    wildcard: bool
    names: frozenset[str]


Event = Acked | Nacked | Subscribed
