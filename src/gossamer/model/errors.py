"""The model edge's one exception type: a document that is not a valid resource."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One problem, located by a dotted path such as `spec.rules[0].matches[1].path.value`."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


class InvalidResource(ValueError):
    """Raised at apply time so a bad document never reaches the store or Envoy."""

    def __init__(self, errors: list[FieldError], *, kind: str = "", name: str = "") -> None:
        self.errors = errors
        self.kind = kind
        self.name = name
        what = f"{kind} {name!r}" if kind and name else (kind or "document")
        details = "; ".join(str(e) for e in errors)
        super().__init__(f"invalid {what}: {details}")
