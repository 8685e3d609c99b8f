"""The instruction-count benchmark's app: answers every request with the same
bytes nginx sends for backend.py's config (the headers nginx 1.22 writes, the
100-byte body), on 127.0.0.1:PORT, keep-alive.

    python bench/dataplane/staticapp.py PORT [DIR]

Its own speed is not measured (only the Envoys run under callgrind), so plain
Python will do and nginx is not needed. Every answer is written with one
send(), as nginx does, so the proxies read it in the same pieces every time.
DIR is accepted and ignored (backend.py's command line).
"""

from __future__ import annotations

import asyncio
import email.utils
import sys

from backend import BODY

BODY_BYTES = BODY.encode()


def answer() -> bytes:
    head = ("HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n"
            f"Date: {email.utils.formatdate(usegmt=True)}\r\n"
            f"Content-Type: text/plain\r\nContent-Length: {len(BODY_BYTES)}\r\n"
            "Connection: keep-alive\r\n\r\n")
    return head.encode() + BODY_BYTES


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            writer.write(answer())
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(serve, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
