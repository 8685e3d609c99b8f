"""What the API adds to Gateways and Secrets as it shows them.

A Gateway is `Programmed` once a replica of it is connected and has ACKed its latest
config, which only the xDS registry knows (the index, pure, says `Pending`). A Secret
is shown without `data`: its key material leaves the control plane only to the
Envoys of the gateways that serve it (their own ADS streams).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gossamer.model import Gateway, Secret


def redacted(body: dict[str, Any]) -> dict[str, Any]:
    """A stored document as every API read shows it."""
    if body.get("kind") == Secret.KIND:
        body.pop("data", None)
    return body


def with_programmed(kind: str, namespace: str, name: str, status: dict[str, Any],
                    proxies: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    if kind != Gateway.KIND or "conditions" not in status:
        return status
    replicas = [p for p in proxies if p.get("connected")
                and (p.get("metadata") or {}).get("gateway") == name
                and (p.get("metadata") or {}).get("namespace") == namespace]
    synced = [p for p in replicas if p.get("synced")]
    if not synced:
        return status
    programmed = {"type": "Programmed", "status": "True", "reason": "Programmed",
                  "message": f"{len(synced)} of {len(replicas)} connected replicas have "
                             "ACKed the latest config"}
    conditions = [programmed if c["type"] == "Programmed" else c for c in status["conditions"]]
    return {**status, "conditions": conditions}
