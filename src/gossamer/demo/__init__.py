"""The demo application: frontend -> catalog (v1, v2) -> inventory, plus a load generator."""
