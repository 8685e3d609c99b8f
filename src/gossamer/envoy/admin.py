"""HTTP/1.1 to a sidecar's Envoy admin endpoint.

The control plane reads every sidecar's stats and opens tap streams on their admin
endpoints (the CLI reads config dumps and certificates, and the agent waits for its
Envoy to be ready and drains it, the same way): plain HTTP on
a loopback or host address, one request per connection. It does so with h11 (the
HTTP/1.1 state machine uvicorn already loads for the API) over asyncio streams rather
than an HTTP client library: httpx and what it pulls in (httpcore, h2, certifi's CA
bundle, and trio where installed) cost ~10 MiB of the control plane's resident
memory for requests that need none of it.

With `tls` (a `PeerTls`), the request goes over TLS to a sidecar's `gossamer_admin`
listener (proxyadmin/): the chain is verified with the context's bundle, and the
peer must present exactly the expected SPIFFE ID; the context carries the control
plane's client certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import h11

from gossamer.envoy.errors import AdminError

READ_SIZE = 64 * 1024
MAX_BODY = 16 * 1024 * 1024  # bounds `read`; a sidecar's full stats are ~100 KB


@dataclass(frozen=True)
class PeerTls:
    """TLS to an admin listener: `context` verifies the chain (and holds our client
    certificate); the peer's certificate must name `spiffe_id` as a URI SAN."""

    context: ssl.SSLContext
    spiffe_id: str


def _check_peer(writer: asyncio.StreamWriter, tls: PeerTls) -> None:
    cert = writer.get_extra_info("peercert") or {}
    uris = [value for kind, value in cert.get("subjectAltName", ()) if kind == "URI"]
    if uris != [tls.spiffe_id]:
        raise AdminError(f"the admin listener presented {', '.join(uris) or 'no SPIFFE ID'}, "
                         f"not {tls.spiffe_id}")


class AdminResponse:
    """A response whose body is read as it arrives (a tap stream never ends by itself)."""

    def __init__(self, status: int, conn: h11.Connection, reader: asyncio.StreamReader) -> None:
        self.status = status
        self._conn = conn
        self._reader = reader

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            event = await _next_event(self._conn, self._reader)
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return

    async def read(self, limit: int = MAX_BODY) -> bytes:
        body = bytearray()
        async for chunk in self.chunks():
            body += chunk
            if len(body) > limit:
                raise AdminError(f"response body over {limit} bytes")
        return bytes(body)


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
    try:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            conn.receive_data(await reader.read(READ_SIZE))  # b"" at EOF
    except (h11.RemoteProtocolError, OSError) as exc:
        raise AdminError(f"reading the response: {exc}") from exc


@contextlib.asynccontextmanager
async def request(host: str, port: int, method: str, target: str, *, body: Any = None,
                  connect_timeout: float = 5.0,
                  tls: PeerTls | None = None) -> AsyncIterator[AdminResponse]:
    """Send one request (`body` is sent as JSON) and yield the response once its head
    has arrived; leaving the block closes the connection."""
    try:
        # No host name check (server_hostname ""): the peer's SPIFFE ID is checked instead.
        connect = (asyncio.open_connection(host, port) if tls is None else
                   asyncio.open_connection(host, port, ssl=tls.context, server_hostname=""))
        reader, writer = await asyncio.wait_for(connect, connect_timeout)
    except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
        raise AdminError(f"connecting to {host}:{port}: {exc!r}") from exc
    try:
        if tls is not None:
            _check_peer(writer, tls)
        conn = h11.Connection(h11.CLIENT)
        headers = [("Host", f"{host}:{port}"), ("Connection", "close")]
        events: list[h11.Event] = []
        if body is not None:
            payload = json.dumps(body).encode()
            headers += [("Content-Type", "application/json"),
                        ("Content-Length", str(len(payload)))]
            events.append(h11.Data(data=payload))
        events = [h11.Request(method=method, target=target, headers=headers), *events,
                  h11.EndOfMessage()]
        writer.write(b"".join(conn.send(e) or b"" for e in events))
        try:
            await writer.drain()
        except OSError as exc:
            raise AdminError(f"sending the request: {exc}") from exc
        event = await _next_event(conn, reader)
        while isinstance(event, h11.InformationalResponse):  # h11 raises on anything else
            event = await _next_event(conn, reader)
        yield AdminResponse(event.status_code, conn, reader)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def fetch(host: str, port: int, method: str, target: str, *, timeout: float,
                limit: int = MAX_BODY, tls: PeerTls | None = None) -> tuple[int, bytes]:
    """One request, and the response's status and whole body, within `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            async with request(host, port, method, target, connect_timeout=timeout,
                               tls=tls) as resp:
                return resp.status, await resp.read(limit)
    except TimeoutError as exc:
        raise AdminError(f"no answer from {host}:{port} within {timeout} s") from exc


async def get_json(host: str, port: int, target: str, *, timeout: float,
                   limit: int = MAX_BODY, tls: PeerTls | None = None) -> Any:
    """GET `target` and parse its JSON body, all within `timeout` seconds."""
    status, body = await fetch(host, port, "GET", target, timeout=timeout, limit=limit,
                               tls=tls)
    if status != 200:
        raise AdminError(f"HTTP {status} for {target.split('?')[0]}")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise AdminError(f"the response is not JSON: {exc}") from exc
