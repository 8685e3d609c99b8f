"""How much the API accepts: request bodies, and what a join token may register.

The document limits themselves (size, annotations, labels) are the model's
(`gossamer.model.limits`); these bound what reaches them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gossamer.model.limits import KIB, MIB, size_text

MAX_BODY_BYTES = MIB
# A join token registers its agent's own Workload: a few hundred bytes in practice.
MAX_JOIN_WORKLOAD_BYTES = 16 * KIB
# Workloads of one join identity (namespace, service account) registered at once.
MAX_JOIN_WORKLOADS = 1000


class BodyLimit:
    """Refuses a request body over `limit` bytes with 413, before any route reads it.

    It counts the bytes as they arrive rather than trusting Content-Length, which a
    chunked request does not send; a declared length over the limit is refused at
    once, without reading. The body is buffered (at most `limit` bytes) and handed
    on whole."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope["headers"])
        if declared is not None and declared > self.limit:
            await self._refuse(send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away mid-body
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"error": f"the request body is larger than {size_text(self.limit)}",
                           "fields": []}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value[:20])
            except ValueError:
                return None  # the server refuses a malformed length itself
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """The buffered body as one message; after it, the connection's own messages
    (a streaming response listens for the disconnect)."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed

