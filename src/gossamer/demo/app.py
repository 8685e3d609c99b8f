"""A tiny HTTP service for the demo and the tests.

It answers JSON naming itself (service, version, workload), calls its
upstreams through the sidecar (the plain HTTP proxy in $HTTP_PROXY: the app
only knows service names), and forwards the headers the mesh routes and
traces by. Tests steer it with query parameters: `?status=503` answers with
that status, `?delay_ms=200` sleeps first.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

FORWARD = ("x-request-id", "traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid",
           "x-b3-parentspanid", "x-b3-sampled", "x-user", "x-canary", "x-version")


class Handler(BaseHTTPRequestHandler):
    server_version = "gossamer-demo/1"
    protocol_version = "HTTP/1.1"
    identity: dict[str, str] = {}
    calls: list[str] = []

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without TCP_NODELAY,
        # Nagle plus delayed ACK stalls every keep-alive response by ~40 ms.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        if os.environ.get("DEMO_ACCESS_LOG"):
            super().log_message(format, *args)

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = (json.dumps(body) + "\n").encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _call(self, url: str) -> tuple[int, Any]:
        headers = {h: v for h in FORWARD if (v := self.headers.get(h))}
        req = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")[:200]
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return 599, str(exc)

    def _handle(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if url.path == "/healthz":
            self._send(200, {"ok": True})
            return
        if self.headers.get("content-length"):
            self.rfile.read(int(self.headers["content-length"]))
        if "delay_ms" in query:
            time.sleep(min(int(query["delay_ms"]), 60_000) / 1000)
        body: dict[str, Any] = {**self.identity, "path": self.path, "method": self.command,
                                "headers": {k.lower(): v for k, v in self.headers.items()}}
        status = int(query.get("status", 200))
        upstream_failed = False
        for target in self.calls:
            code, answer = self._call(target)
            body.setdefault("upstreams", {})[target] = {"status": code, "body": answer}
            upstream_failed |= code >= 500
        self._send(502 if upstream_failed and status == 200 else status, body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle  # noqa: N815


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--name", required=True, help="service name to report")
    p.add_argument("--version", default=os.environ.get("VERSION", "v1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    p.add_argument("--call", action="append", default=[],
                   help="URL to call on each request, e.g. http://inventory/stock")
    args = p.parse_args(argv)
    Handler.identity = {"service": args.name, "version": args.version,
                        "workload": os.environ.get("GOSSAMER_WORKLOAD", args.name)}
    Handler.calls = args.call
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
