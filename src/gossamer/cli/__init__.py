"""Thin CLI commands over the control-plane API."""
