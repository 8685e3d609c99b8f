"""A mesh's documents with the virtual-IP table the control plane would store for
them (virtualips/), as capture's translation needs."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from gossamer.index import SvcKey
from gossamer.model import Resource
from gossamer.virtualips.table import allocate, load_table

RANGE = ipaddress.IPv4Network("240.240.0.0/16")


def with_vip_table(docs: list[Resource], keys: Iterable[SvcKey] | None = None
                   ) -> list[Resource]:
    """`docs` and their table; `keys`: what gets an address (default: every Service)."""
    if keys is None:
        keys = [(d.metadata.namespace, d.metadata.name) for d in docs if d.kind == "Service"]
    table = load_table(allocate(None, dict.fromkeys(keys), RANGE).document())
    assert table is not None
    return [*docs, table]
