"""What an app speaks: a Service port declares it, and so may the agent for its app.

Part of the contract because the node metadata carries it (`app_protocol`), and the
node metadata is parsed without the resource model.
"""

from __future__ import annotations

from enum import Enum


class Protocol(str, Enum):
    HTTP = "http"
    HTTP2 = "http2"
    GRPC = "grpc"
    TCP = "tcp"

    @property
    def is_http(self) -> bool:
        return self is not Protocol.TCP

    @property
    def is_h2(self) -> bool:
        """The app speaks HTTP/2."""
        return self in (Protocol.HTTP2, Protocol.GRPC)

    @property
    def mesh_h2(self) -> bool:
        """Sidecars carry this port's traffic to each other over HTTP/2, whatever the
        app speaks: many requests share one connection (one TLS handshake), and the
        callee's sidecar speaks the app's protocol to it."""
        return self.is_http
