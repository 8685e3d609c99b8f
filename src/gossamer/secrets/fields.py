"""Which fields of which stored kinds are secret.

A path is a tuple of keys into the document body; `*` stands for every element
of a list or every value of a mapping. What a path names is sealed whole, as
one JSON value, whatever its type (a PEM string, or a mapping such as a TLS
Secret's `data`). Paths whose parents are missing simply match nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

WILDCARD = "*"


@dataclass(frozen=True)
class SecretField:
    kind: str
    path: tuple[str, ...]


# The mesh CA's private keys (ca/authority.py), plug-in CA included, and the
# certificates and keys of TLS Secrets (model/secret.py: Gateways' HTTPS listeners).
SECRET_FIELDS: tuple[SecretField, ...] = (
    SecretField("_CA", ("roots", WILDCARD, "key_pem")),
    SecretField("Secret", ("data",)),
)


def transform(body: dict[str, Any], path: tuple[str, ...],
              change: Callable[[Any, str], Any], trail: str = "") -> dict[str, Any]:
    """A copy of `body` with each value at `path` replaced by change(value, where),
    `where` being the concrete path (`roots.0.key_pem`); the input is not modified."""
    out: Any = _walk(body, path, change, trail)
    assert isinstance(out, dict)
    return out


def _walk(node: Any, path: tuple[str, ...], change: Callable[[Any, str], Any],
          trail: str) -> Any:
    if not path:
        return change(node, trail)
    head, rest = path[0], path[1:]
    if isinstance(node, dict):
        keys = list(node) if head == WILDCARD else [head] if head in node else []
        if not keys:
            return node
        copy = dict(node)
        for key in keys:
            copy[key] = _walk(node[key], rest, change, _join(trail, str(key)))
        return copy
    if isinstance(node, list) and head == WILDCARD:
        return [_walk(item, rest, change, _join(trail, str(i))) for i, item in enumerate(node)]
    return node


def values(body: dict[str, Any], path: tuple[str, ...]) -> Iterator[Any]:
    """Every value at `path`."""
    found: list[Any] = []

    def keep(value: Any, _where: str) -> Any:
        found.append(value)
        return value

    _walk(body, path, keep, "")
    return iter(found)


def _join(trail: str, key: str) -> str:
    return f"{trail}.{key}" if trail else key
