"""The agent's view of the control-plane HTTP API."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx


class ControlPlaneError(Exception):
    """The control plane refused (status set) or could not be reached (status None)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ControlPlaneClient:
    def __init__(self, server: str, token: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(base_url=server.rstrip("/"), timeout=5.0,
                                       headers=headers, trust_env=False)

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            resp = await self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
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
                if exc.status in (401, 403) or loop.time() > deadline:
                    raise  # a refused token is not going to get better by waiting
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
