"""The agent's view of the control-plane HTTP API."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from gossamer.ca.trust import client_context, describe, verify_failure

log = logging.getLogger(__name__)


class ControlPlaneError(Exception):
    """The control plane refused (status set) or could not be reached (status None);
    `tls`: its certificate failed verification, which no retry fixes."""

    def __init__(self, message: str, status: int | None = None, *, tls: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.tls = tls


def split_servers(server: str) -> list[str]:
    """`--control-plane`: one API URL, or several (replicas) separated by commas."""
    servers = [s.strip().rstrip("/") for s in server.split(",") if s.strip()]
    if not servers:
        raise ControlPlaneError("no control-plane URL given")
    return servers


class ControlPlaneClient:
    """`bundle`: the PEM roots an https:// API is verified with (None: plaintext).

    `server` may name several replicas, comma-separated: calls go to one of them
    and move to the next when it cannot be reached (a replica's refusal, 4xx or 5xx,
    is an answer and is not retried elsewhere: replicas share one store)."""

    def __init__(self, server: str, token: str | Callable[[], str] | None = None,
                 bundle: str | None = None) -> None:
        self.servers = split_servers(server)
        self._current = 0
        # Read at each request: a rotated token file is used from the next one on.
        self._token: Callable[[], str] | None = (
            token if callable(token) else (lambda: token) if token else None)
        self.bundle = bundle
        self._http = self._client(bundle)

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token()}"} if self._token is not None else {}

    @property
    def _server(self) -> str:
        return self.servers[self._current]

    def _client(self, bundle: str | None) -> httpx.AsyncClient:
        tls = any(s.startswith("https://") for s in self.servers)
        verify = client_context(bundle) if bundle and tls else True
        return httpx.AsyncClient(timeout=5.0, trust_env=False,
                                 verify=verify)

    async def follow_bundle(self, bundle: str) -> None:
        """Verify with the mesh's current bundle from now on (the CA hands it out), so a
        root rotation does not cut the agent off from the API."""
        if bundle and bundle != self.bundle:
            old, self._http, self.bundle = self._http, self._client(bundle), bundle
            await old.aclose()

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        for tried in range(len(self.servers)):
            try:
                resp = await self._http.request(method, self._server + path, json=body,
                                                headers=self._auth())
                break
            except httpx.HTTPError as exc:
                failure = verify_failure(exc)
                if failure is not None:
                    raise ControlPlaneError(
                        f"the control plane at {self._server} failed TLS verification "
                        f"against the CA bundle (--ca-file or --ca-fingerprint): "
                        f"{describe(failure)}", tls=True) from exc
                unreachable = exc
                if tried + 1 < len(self.servers):
                    log.warning("control plane %s unreachable (%s); trying %s", self._server,
                                exc, self.servers[(self._current + 1) % len(self.servers)])
                self._current = (self._current + 1) % len(self.servers)
        else:
            raise ControlPlaneError(f"control plane unreachable: {unreachable}") \
                from unreachable
        if resp.status_code >= 400:
            try:
                message = resp.json().get("error", resp.text)
            except ValueError:
                message = resp.text
            raise ControlPlaneError(f"{method} {path}: {resp.status_code} {message}",
                                    resp.status_code)  # message: the server's own words
        return resp.json()

    async def xds_endpoints(self, info: dict[str, Any]) -> list[tuple[str, int]]:
        """Every replica's xDS address, the one `info` (from the replica answering now)
        gives first: each replica's own answer, or, for one that does not answer now,
        its URL's host with the same port, so Envoy can fail over to any of them."""
        first = (str(info["xds"]["host"]), int(info["xds"]["port"]))
        out = [first]
        for server in self.servers:
            if server == self._server:
                continue
            try:
                resp = await self._http.get(server + "/api/v1/mesh", timeout=2.0,
                                            headers=self._auth())
                xds = resp.json()["xds"]
                found = (str(xds["host"]), int(xds["port"]))
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                found = (urlsplit(server).hostname or first[0], first[1])
            if found not in out:
                out.append(found)
        return out

    async def wait_up(self, timeout: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                info: dict[str, Any] = await self._call("GET", "/api/v1/mesh")
                return info
            except ControlPlaneError as exc:
                if exc.status in (401, 403) or exc.tls or loop.time() > deadline:
                    raise  # a refused token or certificate will not get better by waiting
                await asyncio.sleep(0.3)

    async def apply(self, doc: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", "/api/v1/apply", doc)
        return result

    async def heartbeat(self, namespace: str, name: str, healthy: bool) -> None:
        health = "Healthy" if healthy else "Unhealthy"
        await self._call("POST", f"/api/v1/workloads/{namespace}/{name}/heartbeat",
                         {"health": health})

    async def service(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            doc: dict[str, Any] = await self._call(
                "GET", f"/api/v1/resources/Service/{namespace}/{name}")
        except ControlPlaneError as exc:
            if exc.status == 404:
                return None
            raise
        return doc

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        await self._call("DELETE", f"/api/v1/resources/{kind}/{namespace}/{name}")
