"""The control plane's HTTP/1.1 client for sidecar admin endpoints, against canned
servers on loopback (real Envoy admin endpoints are covered by the envoy and e2e
suites: stats scraping, tap, `gossamer proxy-config` and `gossamer identity`)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from gossamer.envoy.admin import get_json, request
from gossamer.envoy.errors import AdminError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def _head(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    line, *rest = head.decode().split("\r\n")
    headers = dict(h.lower().split(": ", 1) for h in rest if h)
    return line.encode(), headers


def canned(response: bytes, seen: list[bytes] | None = None) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line, headers = await _head(reader)
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        if seen is not None:
            seen.extend([line, body])
        writer.write(response)
        await writer.drain()
        writer.close()
    return handle


async def test_get_json_reads_a_chunked_body_as_envoy_sends_it() -> None:
    doc = {"stats": [{"name": "a", "value": 1}]}
    raw = json.dumps(doc).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(raw[i:i + 7]), raw[i:i + 7])
                      for i in range(0, len(raw), 7))
    seen: list[bytes] = []
    response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    async with serving(canned(response, seen)) as port:
        assert await get_json("127.0.0.1", port, "/stats?format=json", timeout=2) == doc
    assert seen[0] == b"GET /stats?format=json HTTP/1.1"


async def test_a_post_sends_its_json_body_and_streams_the_response() -> None:
    seen: list[bytes] = []
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789"
    async with serving(canned(response, seen)) as port, request(
            "127.0.0.1", port, "POST", "/tap", body={"k": [1]}) as resp:
        assert resp.status == 200
        assert b"".join([c async for c in resp.chunks()]) == b"0123456789"
    assert seen == [b"POST /tap HTTP/1.1", b'{"k": [1]}']


@pytest.mark.parametrize(("response", "reason"), [
    (b"HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n", "HTTP 503"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nnot", "not JSON"),
    (b"SPDY/9 nonsense\r\n\r\n", "reading the response"),
    (b"", "reading the response"),  # closed before a response
])
async def test_what_is_not_a_json_answer_is_an_admin_error(response: bytes, reason: str) -> None:
    async with serving(canned(response)) as port:
        with pytest.raises(AdminError, match=reason):
            await get_json("127.0.0.1", port, "/stats", timeout=2)


async def test_a_body_over_the_limit_is_refused() -> None:
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"[" + b" " * 98 + b"]"
    async with serving(canned(response)) as port:
        assert await get_json("127.0.0.1", port, "/", timeout=2, limit=100) == []
        with pytest.raises(AdminError, match="over 99 bytes"):
            await get_json("127.0.0.1", port, "/", timeout=2, limit=99)


async def test_a_silent_endpoint_times_out_and_a_closed_port_is_refused() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)
        writer.close()

    async with serving(silent) as port:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(AdminError, match=r"within 0\.2 s"):
            await get_json("127.0.0.1", port, "/stats", timeout=0.2)
        assert loop.time() - started < 1.0
    with pytest.raises(AdminError, match="connecting"):
        await get_json("127.0.0.1", port, "/stats", timeout=1)  # the server is gone


def test_the_control_plane_command_loads_no_http_client_library() -> None:
    """httpx and what it pulls in are ~10 MiB of the control plane's resident memory;
    `gossamer control-plane` loads the CLI's modules, so they must import it on use."""
    code = ("import sys\n"
            "from gossamer.cli import dashboard, explain, local, metrics, resources, run, "
            "security, tap, top\n"
            "import gossamer.controlplane.server\n"
            "print(sorted(m for m in ('httpx', 'httpcore', 'h2', 'trio') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert out.strip() == "[]"
