"""What an explanation says about one hop: where a request failed, why, the policy
that decided it, and what to change (shared by every reason in explain/)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gossamer.index import SvcKey


@dataclass(frozen=True)
class Finding:
    failed_at: str
    cause: str
    policy: str | None = None
    hints: tuple[str, ...] = ()


def ref(kind: str, res: Any) -> str:
    return f"{kind} {res.metadata.namespace}/{res.metadata.name}"


def svc_text(svc: SvcKey | None) -> str:
    return f"{svc[1]}.{svc[0]}" if svc else "the destination"
