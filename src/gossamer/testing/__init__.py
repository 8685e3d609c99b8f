"""Helpers shipped for tests: real Envoy processes (`gossamer.testing.envoy`)."""

from gossamer.envoy.errors import EnvoyError
from gossamer.testing.envoy import EnvoyProcess, ads_bootstrap, free_port

__all__ = ["EnvoyError", "EnvoyProcess", "ads_bootstrap", "free_port"]
