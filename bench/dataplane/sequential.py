"""Sequential keep-alive requests on one connection, on command: the instruction
count benchmark's client (bench/dataplane/instructions.py).

    python bench/dataplane/sequential.py HOST PORT

Reads a count per line on stdin; for each, sends that many requests one after
the other (the next only once the whole answer is in) on the one connection it
keeps open, and prints `ok COUNT SECONDS`, or `error WHY` and exits. Exits at
the end of stdin. One connection for the warm-up and every measured window, so
no window pays for a connection's set-up. Runs as its own process so that it
can run inside a network namespace (the captured path). Every request is the
bytes run.py's load generator sends; every answer must be a 200 with a body of
100 bytes, else the run is wrong and stops.
"""

from __future__ import annotations

import socket
import sys
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: backend\r\n\r\n"
BODY_BYTES = 100
TIMEOUT_S = 60.0  # one request under valgrind takes milliseconds; this is "stuck"


class BadAnswer(Exception):
    pass


def one(conn: socket.socket) -> None:
    conn.sendall(REQUEST)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise BadAnswer("connection closed before an answer")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    if not lines[0].startswith(b"HTTP/1.1 200"):
        raise BadAnswer(lines[0].decode(errors="replace"))
    length = next((int(line.split(b":", 1)[1]) for line in lines[1:]
                   if line.lower().startswith(b"content-length:")), None)
    if length != BODY_BYTES:
        raise BadAnswer(f"content-length {length}, not {BODY_BYTES}")
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            raise BadAnswer("connection closed in the body")
        body += chunk
    if len(body) != length:
        raise BadAnswer(f"{len(body) - length} bytes after the body")


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    conn = socket.create_connection((host, port), timeout=TIMEOUT_S)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for line in sys.stdin:
        count = int(line)
        started = time.monotonic()
        try:
            for _ in range(count):
                one(conn)
        except (OSError, BadAnswer) as exc:
            print(f"error {exc!r}", flush=True)
            return
        print(f"ok {count} {time.monotonic() - started:.3f}", flush=True)


if __name__ == "__main__":
    main()
