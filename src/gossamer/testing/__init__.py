"""Helpers shipped for tests: real Envoy processes (`gossamer.testing.envoy`)."""

from gossamer.testing.envoy import EnvoyError, EnvoyProcess, ads_bootstrap, free_port

__all__ = ["EnvoyError", "EnvoyProcess", "ads_bootstrap", "free_port"]
