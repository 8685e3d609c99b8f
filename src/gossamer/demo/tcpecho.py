"""A TCP echo server for demos and tests of TCP services: it answers each chunk
with `echo:` and the chunk."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading


def _echo(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(4096):
            conn.sendall(b"echo:" + data)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", "9000")))
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with socket.create_server(("127.0.0.1", args.port)) as server:
        while True:
            conn, _ = server.accept()
            threading.Thread(target=_echo, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
