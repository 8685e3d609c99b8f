"""Synchronous API client for CLI commands."""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

DEFAULT_SERVER = "http://127.0.0.1:15080"


class CliError(Exception):
    """Printed as one line on stderr; the command exits non-zero."""


@dataclass
class Options:
    """What the root command's options set for every command (`gossamer --ca-file F ...`)."""

    ca_file: Path | None = None


OPTIONS = Options()


def server_url(server: str | None) -> str:
    return (server or os.environ.get("GOSSAMER_SERVER") or DEFAULT_SERVER).rstrip("/")


def ca_file() -> Path | None:
    """`--ca-file`, else $GOSSAMER_CA_FILE (the root command reads both)."""
    if OPTIONS.ca_file is not None:
        return OPTIONS.ca_file
    env = os.environ.get("GOSSAMER_CA_FILE")
    return Path(env) if env else None


def verify_for(base: str) -> ssl.SSLContext | bool:
    """How to verify an https:// control plane: with the mesh's bundle when given
    (it is no system CA's business), else the system's roots (a control plane
    behind a proxy with a public certificate)."""
    from gossamer.ca.trust import TrustError, client_context, read_bundle

    path = ca_file()
    if not base.startswith("https://") or path is None:
        return True
    try:
        return client_context(read_bundle(path), f"--ca-file {path}")
    except TrustError as exc:
        raise CliError(str(exc)) from exc


def unreachable(base: str, exc: Exception) -> CliError:
    """One line for a request that got no answer: a TLS verification failure says
    what to fix; anything else, where it tried."""
    import httpx

    from gossamer.ca.trust import describe, verify_failure

    failure = verify_failure(exc)
    if failure is not None:
        given = ca_file()
        trust = f"--ca-file {given}" if given else "the system's roots (no --ca-file)"
        return CliError(f"the control plane at {base} failed TLS verification against "
                        f"{trust}: {describe(failure)}; give the mesh's CA bundle with "
                        "--ca-file or GOSSAMER_CA_FILE (`gossamer ca bundle` prints it), and "
                        "dial an address its certificate names")
    hint = ""
    if base.startswith("http://") and isinstance(exc, httpx.RemoteProtocolError):
        hint = " (does it serve TLS? use https://)"
    return CliError(f"cannot reach the control plane at {base} ({exc}){hint}; is it "
                    "running? (set --server or GOSSAMER_SERVER)")


def live_replica(servers: str) -> str:
    """Of several control-plane URLs (replicas, comma-separated), the first whose
    /healthz answers; the first one when none does (its error is the one shown)."""
    import httpx

    candidates = [s.strip().rstrip("/") for s in servers.split(",") if s.strip()]
    if len(candidates) <= 1:
        return candidates[0] if candidates else servers
    for base in candidates:
        try:
            with httpx.Client(timeout=2.0, trust_env=False, verify=verify_for(base)) as http:
                if http.get(base + "/healthz").status_code == 200:
                    return base
        except httpx.HTTPError:
            continue
    return candidates[0]


class Api:
    """httpx is imported on use: `gossamer control-plane` loads this module too, and
    the control plane itself has no use for an HTTP client (~10 MiB resident)."""

    def __init__(self, server: str | None = None, timeout: float = 10.0) -> None:
        import httpx

        self.base = live_replica(server_url(server))
        token = os.environ.get("GOSSAMER_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http: httpx.Client = httpx.Client(base_url=self.base, timeout=timeout,
                                                headers=headers, trust_env=False,
                                                verify=verify_for(self.base))

    def call(self, method: str, path: str, body: Any = None) -> Any:
        import httpx

        try:
            resp = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise unreachable(self.base, exc) from exc
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
            raise unreachable(self.base, exc) from exc
