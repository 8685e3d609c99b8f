"""DNS on the wire for tests, with the standard library only: a query, its answer's
addresses, and a tiny authoritative responder that records what it was asked."""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading

A, AAAA = 1, 28
NOERROR, NXDOMAIN = 0, 3


def query(name: str, qtype: int = A, qid: int = 0x4242) -> bytes:
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)  # recursion desired
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split("."))
    return header + labels + b"\x00" + struct.pack("!HH", qtype, 1)


def _skip_name(data: bytes, at: int) -> int:
    while True:
        length = data[at]
        if length & 0xC0 == 0xC0:
            return at + 2
        if length == 0:
            return at + 1
        at += 1 + length


def _read_name(data: bytes, at: int) -> str:
    parts = []
    while data[at]:
        if data[at] & 0xC0 == 0xC0:
            at = struct.unpack("!H", data[at:at + 2])[0] & 0x3FFF
            continue
        parts.append(data[at + 1:at + 1 + data[at]].decode())
        at += 1 + data[at]
    return ".".join(parts)


def parse(data: bytes) -> tuple[int, list[str]]:
    """(rcode, the A/AAAA addresses answered)."""
    _, flags, qd, an, _, _ = struct.unpack("!HHHHHH", data[:12])
    at = 12
    for _ in range(qd):
        at = _skip_name(data, at) + 4
    out = []
    for _ in range(an):
        at = _skip_name(data, at)
        rtype, _, _, length = struct.unpack("!HHIH", data[at:at + 10])
        at += 10
        if rtype in (A, AAAA):
            out.append(str(ipaddress.ip_address(data[at:at + length])))
        at += length
    return flags & 0xF, out


def resolve(server: tuple[str, int], name: str, qtype: int = A,
            timeout: float = 5.0) -> tuple[int, list[str]]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(query(name, qtype), server)
        data, _ = s.recvfrom(4096)
    return parse(data)


class Responder:
    """Answers every A query with `address` (AAAA: no answer), on (host, port), and
    records the names it was asked. Stopped by `close`."""

    def __init__(self, host: str, port: int, address: str) -> None:
        self.asked: list[str] = []
        self._address = ipaddress.IPv4Address(address).packed
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((host, port))
        self._sock.settimeout(0.1)
        self.port = int(self._sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            end = _skip_name(data, 12)
            name = _read_name(data, 12)
            qtype = struct.unpack("!H", data[end:end + 2])[0]
            self.asked.append(name)
            answer = b""
            if qtype == A:
                answer = b"\xc0\x0c" + struct.pack("!HHIH", A, 1, 5, 4) + self._address
            header = struct.pack("!HHHHHH", struct.unpack("!H", data[:2])[0], 0x8180, 1,
                                 1 if answer else 0, 0, 0)
            self._sock.sendto(header + data[12:end + 4] + answer, peer)

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(2)
