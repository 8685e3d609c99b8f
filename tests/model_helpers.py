"""Helpers shared by the model tests: JSON-like values built from words that
matter to the schema, the locations inside a document, and editing a document
at a path."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st


def jsonish(words: Sequence[str], max_int: int) -> st.SearchStrategy[Any]:
    scalars = (st.none() | st.booleans() | st.integers(-2, max_int) | st.sampled_from(words)
               | st.text(max_size=8) | st.floats(allow_nan=True))
    return st.recursive(scalars, lambda c: st.lists(c, max_size=3)
                        | st.dictionaries(st.sampled_from(words) | st.text(max_size=6), c,
                                          max_size=3), max_leaves=8)


def nodes(doc: Any, loc: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every location in `doc`, as key/index paths, the root included."""
    out = [loc]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += nodes(v, (*loc, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += nodes(v, (*loc, i))
    return out


def parses_or_is_rejected_cleanly(doc: Any) -> None:
    """A document either parses (and round-trips) or raises InvalidResource whose
    every error has a reason: never another exception, never an empty message."""
    from gossamer.model import InvalidResource, parse_document

    outcome: Any
    try:
        outcome = parse_document(doc)
    except InvalidResource as exc:
        outcome = exc
    if isinstance(outcome, InvalidResource):
        assert outcome.errors
        assert all(e.reason.strip() for e in outcome.errors)
        return
    assert parse_document(outcome.to_document()) == outcome


DELETE = object()  # as a `set_path` value: remove the key or item


def set_path(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Set (or, with DELETE, remove) a dotted/indexed path such as
    `spec.rules[0].to[0].operation.paths`, creating mappings on the way."""
    node: Any = doc
    parts = path.replace("[", ".").replace("]", "").split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    last = parts[-1]
    if value is DELETE:
        del node[int(last) if last.isdigit() else last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return doc


def mutate(draw: st.DrawFn, doc: Any, values: st.SearchStrategy[Any]) -> None:
    """Delete or replace (with one of `values`) one to three places in `doc`, in place."""
    for _ in range(draw(st.integers(1, 3))):
        loc = draw(st.sampled_from(nodes(doc)[1:]))
        parent: Any = doc
        for part in loc[:-1]:
            parent = parent[part]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[loc[-1]]
        else:
            parent[loc[-1]] = draw(values)
