"""Envoy itself, as every part of Gossamer meets it: where its binary is
(`binary.py`) and how to talk to a running one's admin endpoint (`admin.py`)."""
