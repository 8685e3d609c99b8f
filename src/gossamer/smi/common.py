"""What the SMI mappings share: names and marks of generated resources, and errors."""

from __future__ import annotations

import json
from typing import Any

from gossamer.model.errors import FieldError, InvalidResource
from gossamer.model.meta import Resource

GENERATED_FROM = "gossamer.dev/generated-from"


def generated(source: Resource, api_version: str, kind: str, suffix: str,
              spec: dict[str, Any]) -> dict[str, Any]:
    """A native document made from `source`, in its namespace, named `smi-<name>` (and
    `-<suffix>` where one source makes several), saying where it came from."""
    name = f"smi-{source.metadata.name}" + (f"-{suffix}" if suffix else "")
    return {"apiVersion": api_version, "kind": kind,
            "metadata": {"name": name, "namespace": source.metadata.namespace,
                         "annotations": {GENERATED_FROM: f"{source.kind}/"
                                                         f"{source.metadata.name}"}},
            # JSON's copy: no part shared, within it or with another document.
            "spec": json.loads(json.dumps(spec))}


def refuse(source: Resource, path: str, reason: str) -> InvalidResource:
    return InvalidResource([FieldError(path, reason)], kind=source.kind,
                           name=source.metadata.name)
