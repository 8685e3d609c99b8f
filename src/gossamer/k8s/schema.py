"""A pydantic model's JSON schema, made a Kubernetes structural OpenAPI v3 schema.

Kubernetes takes a subset of OpenAPI v3 for a CRD (a *structural* schema): every
node has a `type` (except under `x-kubernetes-int-or-string` and
`x-kubernetes-preserve-unknown-fields`), no `$ref`, no `anyOf`/`oneOf` that carry
types, no `additionalProperties: false`. So `$ref`s are inlined, `Optional[X]`
becomes X (the API server drops a null it was sent for a field that is not
`nullable`, which is what None means to the model), `const` becomes a one-value
`enum`, and what pydantic cannot see (field and model validators) is added from
`k8s/validations.py` as patterns and CEL rules.
"""

from __future__ import annotations

import copy
import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel
from pydantic.functional_validators import AfterValidator, BeforeValidator

Schema = dict[str, Any]
# Keywords a pydantic schema has that a CRD leaves out: defaults would be written
# into stored objects (and must then pass the schema themselves); titles say nothing.
_DROPPED = {"title", "default", "$defs", "examples"}


class UnsupportedSchema(ValueError):
    """A model shape this conversion has no structural form for."""


def _null(node: Any) -> bool:
    return isinstance(node, Mapping) and node.get("type") == "null" and len(node) == 1


def _merge(into: Schema, patch: Mapping[str, Any]) -> None:
    """`patch` into `into`: nested schemas (`items`, `additionalProperties`, a
    property) merge, rule lists add up, anything else replaces."""
    for key, value in patch.items():
        if key == "properties":
            props = into.setdefault("properties", {})
            for name, sub in value.items():
                if name not in props:
                    raise UnsupportedSchema(f"patch for unknown property {name!r}")
                _merge(props[name], sub)
        elif key in ("items", "additionalProperties") and isinstance(into.get(key), dict):
            _merge(into[key], value)
        elif key == "x-kubernetes-validations":
            into.setdefault(key, []).extend(copy.deepcopy(value))
        elif key == "x-kubernetes-int-or-string":
            for gone in ("type", "minimum", "maximum", "exclusiveMinimum", "format"):
                into.pop(gone, None)
            into[key] = value
        else:
            into[key] = copy.deepcopy(value)


def annotated_validators(model: type[BaseModel]) -> dict[str, list[tuple[str, Callable[..., Any]]]]:
    """Per property (by alias): the functions of `Annotated[..., AfterValidator(f)]`
    (and BeforeValidator) on its type, each with where it applies: `` (the value),
    `items` or `additionalProperties`."""
    out: dict[str, list[tuple[str, Callable[..., Any]]]] = {}
    for name, field in model.model_fields.items():
        found: list[tuple[str, Callable[..., Any]]] = [
            ("", m.func) for m in field.metadata
            if isinstance(m, AfterValidator | BeforeValidator)]
        _annotations(field.annotation, "", found)
        if found:
            out[field.alias or name] = found
    return out


def _annotations(tp: Any, where: str, found: list[tuple[str, Callable[..., Any]]]) -> None:
    if typing.get_origin(tp) is typing.Annotated:
        base, *meta = typing.get_args(tp)
        found.extend((where, m.func) for m in meta
                     if isinstance(m, AfterValidator | BeforeValidator))
        _annotations(base, where, found)
        return
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list:
        _annotations(args[0], f"{where}.items".lstrip("."), found)
    elif origin is dict:
        _annotations(args[1], f"{where}.additionalProperties".lstrip("."), found)
    else:
        for arg in args:
            _annotations(arg, where, found)


def models_of(model: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every model reachable from `model` by its fields, by class name (as pydantic
    names them in `$defs`), `model` included."""
    out: dict[str, type[BaseModel]] = {}
    todo = [model]
    while todo:
        cls = todo.pop()
        if out.setdefault(cls.__name__, cls) is not cls:
            continue
        for field in cls.model_fields.values():
            todo.extend(_models_in(field.annotation))
    return out


def _models_in(tp: Any) -> list[type[BaseModel]]:
    found = [tp] if inspect.isclass(tp) and issubclass(tp, BaseModel) else []
    for arg in typing.get_args(tp):
        found.extend(_models_in(arg))
    return found


Patches = Mapping[str, Mapping[str, Any]]


def structural(model: type[BaseModel], class_patches: Patches,
               value_patches: Mapping[Callable[..., Any], Mapping[str, Any]]) -> Schema:
    """The structural schema of `model`. `class_patches`: by class name, a patch of the
    object's schema (its properties' constraints and CEL rules). `value_patches`: by
    validator function, the patch of every value an `Annotated` type runs it on."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs: Mapping[str, Any] = raw.get("$defs", {})
    classes = models_of(model)

    def convert(node: Mapping[str, Any], owner: str | None) -> Schema:
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            out = convert(defs[name], name)
            _merge(out, {k: v for k, v in node.items() if k not in _DROPPED | {"$ref"}})
            return out
        if "anyOf" in node:
            branches = [b for b in node["anyOf"] if not _null(b)]
            if len(branches) != 1:
                raise UnsupportedSchema(f"a union in {owner}: {node['anyOf']}")
            out = convert(branches[0], None)
            _merge(out, {k: v for k, v in node.items() if k not in _DROPPED | {"anyOf"}})
            return out
        out = {}
        for key, value in node.items():
            if key in _DROPPED or (key == "additionalProperties" and value is False):
                continue
            if key == "properties":
                out[key] = {p: convert(s, None) for p, s in value.items()}
            elif key in ("items", "additionalProperties"):
                out[key] = convert(value, None)
            elif key == "const":
                out["enum"] = [value]
            elif key == "exclusiveMinimum":  # JSON Schema's number, OpenAPI 3.0's flag
                out.update(minimum=value, exclusiveMinimum=True)
            else:
                out[key] = copy.deepcopy(value)
        if owner is not None and owner in classes:
            _patch_class(out, classes[owner], class_patches, value_patches)
        return out

    out: Schema = _tidy(convert(raw, model.__name__))
    return out


_ORDER = ("type", "description", "required", "properties", "additionalProperties", "items",
          "rule")


def _tidy(node: Any) -> Any:
    """Keys in a reading order (type first, rules last), at every depth."""
    if isinstance(node, list):
        return [_tidy(x) for x in node]
    if not isinstance(node, dict):
        return node
    first = [k for k in _ORDER if k in node]
    rest = sorted(k for k in node if k not in _ORDER)
    out = {k: (node[k] if k in ("enum", "required") else _tidy(node[k])) for k in first + rest}
    if isinstance(node.get("properties"), dict):  # in the model's order
        out["properties"] = {k: _tidy(v) for k, v in node["properties"].items()}
    return out


def _patch_class(out: Schema, cls: type[BaseModel], class_patches: Patches,
                 value_patches: Mapping[Callable[..., Any], Mapping[str, Any]]) -> None:
    for prop, found in annotated_validators(cls).items():
        for where, func in found:
            patch = value_patches.get(func)
            if patch is None:
                continue
            node = out["properties"][prop]
            for step in filter(None, where.split(".")):
                node = node[step]
            _merge(node, patch)
    if cls.__name__ in class_patches:
        _merge(out, class_patches[cls.__name__])
