"""Synchronous API client for CLI commands."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

DEFAULT_SERVER = "http://127.0.0.1:15080"


class CliError(Exception):
    """Printed as one line on stderr; the command exits non-zero."""


def server_url(server: str | None) -> str:
    return (server or os.environ.get("GOSSAMER_SERVER") or DEFAULT_SERVER).rstrip("/")


class Api:
    """httpx is imported on use: `gossamer control-plane` loads this module too, and
    the control plane itself has no use for an HTTP client (~10 MiB resident)."""

    def __init__(self, server: str | None = None, timeout: float = 10.0) -> None:
        import httpx

        self.base = server_url(server)
        token = os.environ.get("GOSSAMER_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http: httpx.Client = httpx.Client(base_url=self.base, timeout=timeout,
                                                headers=headers, trust_env=False)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        import httpx

        try:
            resp = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach the control plane at {self.base} ({exc}); "
                           "is it running? (set --server or GOSSAMER_SERVER)") from exc
        if resp.status_code >= 400:
            try:
                message = str(resp.json().get("error", resp.text))
            except ValueError:
                message = resp.text.strip() or f"HTTP {resp.status_code}"
            raise CliError(message)
        return resp.json()

    def stream(self, path: str, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """Newline-delimited JSON from a streaming endpoint, one object per line."""
        import httpx

        try:
            with self._http.stream("GET", path, params=dict(params),
                                   timeout=httpx.Timeout(10.0, read=None)) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    try:
                        message = str(resp.json().get("error", resp.text))
                    except ValueError:
                        message = resp.text.strip() or f"HTTP {resp.status_code}"
                    raise CliError(message)
                for line in resp.iter_lines():
                    if line.strip():
                        yield json.loads(line)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach the control plane at {self.base} ({exc}); "
                           "is it running? (set --server or GOSSAMER_SERVER)") from exc
