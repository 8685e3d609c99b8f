"""The agent's readiness probe against a small HTTP server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gossamer.agent.probe import Probe


class App:
    """Answers every request with `status`, and counts the connections it accepted."""

    def __init__(self) -> None:
        self.status = 200
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(f"HTTP/1.1 {self.status} X\r\nContent-Length: 0\r\n\r\n".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])


@pytest.fixture
async def app() -> AsyncIterator[App]:
    a = App()
    a.server = await asyncio.start_server(a._serve, "127.0.0.1", 0)
    try:
        yield a
    finally:
        a.server.close()
        await a.server.wait_closed()


async def test_http_probe_follows_the_status_and_opens_a_connection_each_time(app: App) -> None:
    probe = Probe(app.port, "/healthz")
    try:
        assert [await probe.check() for _ in range(3)] == [True, True, True]
        # As kubelet: no keep-alive, so a probe never passes on an old connection.
        assert app.connections == 3
        client = probe._client
        app.status = 500
        assert await probe.check() is False
        app.status = 302
        assert await probe.check() is True
        assert probe._client is client  # one client for the probe's life
    finally:
        await probe.aclose()
    assert probe._client is None


async def test_probe_fails_when_nothing_listens(app: App) -> None:
    port = app.port
    assert app.server is not None
    app.server.close()
    await app.server.wait_closed()
    http, tcp = Probe(port, "/"), Probe(port)
    try:
        assert await http.check() is False
        assert await tcp.check() is False
    finally:
        await http.aclose()


async def test_tcp_probe_passes_on_connect(app: App) -> None:
    assert await Probe(app.port).check() is True
    await asyncio.sleep(0.05)
    assert app.connections == 1
