"""What every API route reads: the control plane's parts (`ApiContext`), and the
API edge's one exception (`ApiError`).

In a module of its own so that the route modules (`app.py`, `explain.py`,
`security.py`, ...) import it rather than each other. The API reads the control
plane's current state through `ControlPlaneState`, not the reconciler itself: the
API needs three read-only views of it, and a test can give those without one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from gossamer.api.auth import Authenticator
from gossamer.ca.authority import MeshCA
from gossamer.ca.tokens import Tokens
from gossamer.contract.node import NodeMetadata
from gossamer.controlplane.leases import Leases
from gossamer.controlplane.tapping import untracked
from gossamer.explain.recent import RecentFailures
from gossamer.index import MeshIndex
from gossamer.proxyadmin.access import SidecarAdmin
from gossamer.store import ResourceStore
from gossamer.telemetry.scraper import Scraper
from gossamer.translate import MeshConfig


class ApiError(Exception):
    """The API edge's one exception type, rendered as a JSON error response."""

    def __init__(self, status: int, message: str, fields: list[dict[str, str]] | None = None):
        super().__init__(message)
        self.status = status
        self.fields = fields or []


class ControlPlaneState(Protocol):
    """The last build the control plane published, and the proxies it translates for."""

    @property
    def index(self) -> MeshIndex: ...

    @property
    def mesh(self) -> MeshConfig: ...

    @property
    def proxies(self) -> Mapping[str, NodeMetadata]: ...


@dataclass
class ApiContext:
    store: ResourceStore
    state: ControlPlaneState
    leases: Leases
    proxies: Callable[[], list[dict[str, Any]]]
    xds_address: tuple[str, int] = ("127.0.0.1", 15010)
    metrics: CollectorRegistry | None = None
    auth: Authenticator = field(default_factory=lambda: Authenticator(None))
    tokens: Tokens | None = None
    ca: MeshCA | None = None
    telemetry: Scraper | None = None
    failures: RecentFailures | None = None
    # How sidecars' admins are reached, on any host (proxyadmin/): tap, config dumps, certs.
    sidecar_admin: SidecarAdmin = field(default_factory=SidecarAdmin)
    # Tap filters on for these sidecars (node ids) while a tap session runs
    # (controlplane/tapping.py).
    tapping: Callable[[Sequence[str]], AbstractAsyncContextManager[None]] = field(
        default_factory=lambda: untracked)
    # With --kubernetes: answers the injection webhook's AdmissionReviews.
    injection: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    # This replica's view of the shared store and of leadership (/healthz).
    replica: Callable[[], dict[str, Any]] = field(
        default_factory=lambda: lambda: {"leader": True, "store_available": True})
