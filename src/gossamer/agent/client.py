"""The agent's view of the control-plane HTTP API."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from gossamer.ca.trust import client_context, describe, verify_failure


class ControlPlaneError(Exception):
    """The control plane refused (status set) or could not be reached (status None);
    `tls`: its certificate failed verification, which no retry fixes."""

    def __init__(self, message: str, status: int | None = None, *, tls: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.tls = tls


class ControlPlaneClient:
    """`bundle`: the PEM roots an https:// API is verified with (None: plaintext)."""

    def __init__(self, server: str, token: str | None = None,
                 bundle: str | None = None) -> None:
        self._server = server.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.bundle = bundle
        self._http = self._client(bundle)

    def _client(self, bundle: str | None) -> httpx.AsyncClient:
        verify = client_context(bundle) if bundle and self._server.startswith("https://") \
            else True
        return httpx.AsyncClient(base_url=self._server, timeout=5.0, headers=self._headers,
                                 trust_env=False, verify=verify)

    async def follow_bundle(self, bundle: str) -> None:
        """Verify with the mesh's current bundle from now on (the CA hands it out), so a
        root rotation does not cut the agent off from the API."""
        if bundle and bundle != self.bundle:
            old, self._http, self.bundle = self._http, self._client(bundle), bundle
            await old.aclose()

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            resp = await self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            failure = verify_failure(exc)
            if failure is not None:
                raise ControlPlaneError(
                    f"the control plane at {self._server} failed TLS verification against "
                    f"the CA bundle (--ca-file or --ca-fingerprint): {describe(failure)}",
                    tls=True) from exc
            raise ControlPlaneError(f"control plane unreachable: {exc}") from exc
        if resp.status_code >= 400:
            try:
                message = resp.json().get("error", resp.text)
            except ValueError:
                message = resp.text
            raise ControlPlaneError(f"{method} {path}: {resp.status_code} {message}",
                                    resp.status_code)  # message: the server's own words
        return resp.json()

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
