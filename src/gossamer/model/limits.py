"""What one document may hold, and text it may not: checked when a document is
written, so that one apply cannot bloat the store, its event history and every
listing, and so that everything stored can be served back as JSON (UTF-8)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gossamer.model.errors import FieldError

KIB = 1024
MIB = 1024 * KIB
# A document as stored (compact JSON, UTF-8). Kubernetes allows about 1.5 MiB per
# object; a mesh resource needs far less, and every write is also kept in the
# store's event history.
MAX_DOCUMENT_BYTES = 512 * KIB
# Kubernetes' own limit: keys and values of all annotations together.
MAX_ANNOTATIONS_BYTES = 256 * KIB
MAX_LABELS = 64
# Reported at most per document: enough to show the pattern, bounded for a hostile one.
_MAX_TEXT_ERRORS = 10


def text_errors(doc: object) -> list[FieldError]:
    """Strings (values and keys, at any depth) that are not valid Unicode text: lone
    UTF-16 surrogates, which JSON escapes (`\\ud800`) can carry but UTF-8 cannot
    encode. Stored, they would make every later listing fail, so they are refused
    up front. Iterative: the depth of the document is the parser's concern."""
    errors: list[FieldError] = []
    stack: list[tuple[str, object]] = [("", doc)]
    while stack and len(errors) < _MAX_TEXT_ERRORS:
        path, node = stack.pop()
        if isinstance(node, str):
            reason = _bad_text(node)
            if reason:
                errors.append(FieldError(path, reason))
        elif isinstance(node, Mapping):
            for key, value in reversed(list(node.items())):
                reason = _bad_text(key) if isinstance(key, str) else None
                if reason:
                    errors.append(FieldError(path, f"key {key!a}: {reason}"))
                    continue
                stack.append((f"{path}.{key}" if path else str(key), value))
        elif isinstance(node, list):
            stack.extend((f"{path}[{i}]", item) for i, item in reversed(list(enumerate(node))))
    return errors


def check_text(text: str) -> str:
    """A field validator for text kept outside documents (a token's description)."""
    reason = _bad_text(text)
    if reason:
        raise ValueError(reason)
    return text


def _bad_text(text: str) -> str | None:
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        char = ascii(text[exc.start])
        return (f"not valid Unicode text: a lone surrogate {char} at character {exc.start} "
                "(cannot be encoded as UTF-8)")
    return None


def size_text(n: int) -> str:
    return f"{n // MIB} MiB" if n % MIB == 0 else f"{n // KIB} KiB"


def document_bytes(doc: Mapping[str, Any]) -> int:
    """The size of a document as the store keeps it."""
    return len(json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def limit_errors(doc: Mapping[str, Any]) -> list[FieldError]:
    """A validated document (as `Resource.to_document` gives it) against the limits."""
    errors = []
    meta = doc.get("metadata", {})
    labels = meta.get("labels", {})
    if len(labels) > MAX_LABELS:
        errors.append(FieldError("metadata.labels",
                                 f"{len(labels)} labels; at most {MAX_LABELS} are allowed"))
    annotations = meta.get("annotations", {})
    size = sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())
    if size > MAX_ANNOTATIONS_BYTES:
        errors.append(FieldError("metadata.annotations",
                                 f"{size} bytes of keys and values; at most "
                                 f"{size_text(MAX_ANNOTATIONS_BYTES)} are allowed"))
    total = document_bytes(doc)
    if total > MAX_DOCUMENT_BYTES:
        errors.append(FieldError("", f"the document is {total} bytes as stored; at most "
                                     f"{size_text(MAX_DOCUMENT_BYTES)} are allowed"))
    return errors
