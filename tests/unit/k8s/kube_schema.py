"""What a Kubernetes API server does with a custom resource, as far as it can be done
offline: the structural-schema rules a CRD must follow, and validation of a document
against a CRD's schema with the API server's semantics: JSON decoding (integers
beyond int64 are floats), nulls of non-nullable fields dropped, strict field
validation (`kubectl apply --validate=strict`, `fieldValidation=Strict`: an unknown
field is an error, not pruned), patterns in RE2, and the CEL rules
(`x-kubernetes-validations`, by the `common-expression-language` evaluator, with
Kubernetes' `lowerAscii` string extension).

Sources: the Kubernetes docs "Extend the Kubernetes API with CustomResourceDefinitions"
(sections Specifying a structural schema, Field pruning, Defaulting and Nullable,
Validation rules)."""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterator
from typing import Any

import cel
import jsonschema
import re2
from jsonschema import Draft4Validator, TypeChecker
from jsonschema.exceptions import ValidationError

# The evaluator logs each exception of a Python function (lowerAscii on a number);
# for a rule it is only a failed rule.
logging.getLogger("cel").setLevel(logging.ERROR)
JUNCTORS = ("allOf", "anyOf", "oneOf", "not")
_NOT_IN_JUNCTORS = ("description", "type", "default", "additionalProperties", "nullable",
                    "properties", "items")
# ObjectMeta as the API server takes it (the CRD may constrain only name and
# generateName); its own validation of these is emulated in `meta_errors`.
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
OBJECT_META: dict[str, Any] = {
    "name": {"type": "string"}, "generateName": {"type": "string"},
    "namespace": {"type": "string"}, "selfLink": {"type": "string"}, "uid": {"type": "string"},
    "resourceVersion": {"type": "string"}, "generation": {"type": "integer"},
    "creationTimestamp": {"type": "string"}, "deletionTimestamp": {"type": "string"},
    "deletionGracePeriodSeconds": {"type": "integer"}, "labels": _STRING_MAP,
    "annotations": _STRING_MAP, "ownerReferences": {"type": "array", "items": {}},
    "finalizers": {"type": "array", "items": {"type": "string"}},
    "managedFields": {"type": "array", "items": {}}}
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_QUALIFIED = re.compile(r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                        r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")


def structural_errors(schema: dict[str, Any], path: str = "", root: bool = True) -> list[str]:
    """Why `schema` (an openAPIV3Schema) is not structural; [] when it is."""
    errors: list[str] = []
    here = path or "<root>"
    special = schema.get("x-kubernetes-int-or-string") or schema.get(
        "x-kubernetes-preserve-unknown-fields")
    if not special and not schema.get("type"):
        errors.append(f"{here}: no type")
    if schema.get("x-kubernetes-int-or-string") and "type" in schema:
        errors.append(f"{here}: x-kubernetes-int-or-string with a type")
    for bad in ("$ref", "$defs", "definitions", "uniqueItems", "const"):
        if schema.get(bad):
            errors.append(f"{here}: {bad} is not allowed")
    if schema.get("additionalProperties") is False:
        errors.append(f"{here}: additionalProperties: false is not allowed")
    if "additionalProperties" in schema and "properties" in schema:
        errors.append(f"{here}: properties and additionalProperties together")
    if schema.get("type") == "array" and not isinstance(schema.get("items"), dict):
        errors.append(f"{here}: an array without one items schema")
    if schema.get("type") not in (None, "object", "array", "string", "integer", "number",
                                  "boolean"):
        errors.append(f"{here}: unknown type {schema.get('type')!r}")
    if schema.get("x-kubernetes-list-type") == "map":
        item = schema.get("items", {})
        for key in schema.get("x-kubernetes-list-map-keys", []):
            if key not in item.get("required", []):
                errors.append(f"{here}: list map key {key!r} is not required")
    for junctor in JUNCTORS:
        branches = schema.get(junctor, [])
        for branch in branches if isinstance(branches, list) else [branches]:
            errors += [f"{here}.{junctor}: {k} is not allowed in a junctor"
                       for k in _NOT_IN_JUNCTORS if k in branch]
    for name, sub in schema.get("properties", {}).items():
        if root and name == "metadata":
            extra = set(sub.get("properties", {})) - {"name", "generateName"}
            if extra or set(sub) - {"type", "properties"}:
                errors.append("metadata: only name and generateName may be constrained")
        errors += structural_errors(sub, f"{path}.{name}".lstrip("."), root=False)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            errors += structural_errors(schema[key], f"{here}.{key}", root=False)
    if root and schema.get("type") != "object":
        errors.append("the root is not an object")
    return errors


def rules(schema: dict[str, Any]) -> Iterator[str]:
    """Every CEL rule in a schema."""
    for r in schema.get("x-kubernetes-validations", []):
        yield r["rule"]
    for sub in schema.get("properties", {}).values():
        yield from rules(sub)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from rules(schema[key])


# ------------------------------------------------------------------ validation


def _is_int(_: TypeChecker, value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(_: TypeChecker, value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_TYPES = Draft4Validator.TYPE_CHECKER.redefine_many(
    {"integer": _is_int, "number": _is_number})


def _pattern(_: Any, pattern: str, instance: Any, __: Any) -> Iterator[ValidationError]:
    if isinstance(instance, str) and not re2.search(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _int_or_string(_: Any, on: bool, instance: Any, __: Any) -> Iterator[ValidationError]:
    if on and not (isinstance(instance, str) or _is_int(_TYPES, instance)):
        yield ValidationError(f"{instance!r} is neither an integer nor a string")


def _cel(_: Any, entries: list[dict[str, str]], instance: Any, schema: dict[str, Any],
         ) -> Iterator[ValidationError]:
    value = cel_value(instance, schema)
    for entry in entries:
        if not evaluate(entry["rule"], value):
            yield ValidationError(f"{entry['message']} ({entry['rule']})")


# Property names CEL cannot write as `self.name`, as Kubernetes escapes them.
_CEL_KEYWORDS = {"true", "false", "null", "in", "as", "break", "const", "continue", "else",
                 "for", "function", "if", "import", "let", "loop", "package", "namespace",
                 "return", "var", "void", "while"}


def _escaped(name: str) -> str:
    if name in _CEL_KEYWORDS:
        return f"__{name}__"
    return (name.replace("__", "__underscores__").replace(".", "__dot__")
            .replace("-", "__dash__").replace("/", "__slash__"))


def cel_value(value: Any, schema: dict[str, Any] | None) -> Any:
    """`value` as a CEL rule sees it: object properties (not map keys) escaped."""
    schema = schema or {}
    if isinstance(value, list):
        return [cel_value(v, schema.get("items")) for v in value]
    if isinstance(value, dict):
        props = schema.get("properties")
        if props is None:  # a map: keys as they are
            extra = schema.get("additionalProperties")
            return {k: cel_value(v, extra if isinstance(extra, dict) else None)
                    for k, v in value.items()}
        return {_escaped(k): cel_value(v, props.get(k)) for k, v in value.items()}
    return value


def evaluate(rule: str, value: Any) -> bool:
    """A CEL rule with `self` bound to `value`; an evaluation error fails it (as the
    API server reports it as a validation error)."""
    ctx = cel.Context()
    ctx.add_variable("self", value)
    ctx.add_function("lowerAscii", _lower_ascii)
    try:
        return cel.evaluate(rule, ctx) is True
    except Exception:  # a missing field, a type error, an overflow: all refusals
        return False


def _lower_ascii(text: str) -> str:
    return "".join(c.lower() if c.isascii() else c for c in text)


KubeValidator = jsonschema.validators.extend(
    Draft4Validator, {"pattern": _pattern, "x-kubernetes-int-or-string": _int_or_string,
                      "x-kubernetes-validations": _cel}, type_checker=_TYPES)


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with strict field validation: an unknown field is an error."""
    out = copy.deepcopy(schema)

    def walk(node: dict[str, Any]) -> None:
        if node.get("type") == "object" and "additionalProperties" not in node and \
                not node.get("x-kubernetes-preserve-unknown-fields"):
            node["additionalProperties"] = False
        for sub in node.get("properties", {}).values():
            walk(sub)
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                walk(node[key])
    walk(out)
    meta = out["properties"]["metadata"]
    given = meta.get("properties", {})
    meta["properties"] = {k: {**v, **given.get(k, {})} for k, v in OBJECT_META.items()}
    return out


def decode(doc: Any, schema: dict[str, Any] | None) -> Any:
    """The document as the API server holds it after decoding: integers outside
    int64 become floats, nulls of fields that are not `nullable` are dropped, and
    defaults are applied."""
    if isinstance(doc, bool) or doc is None or isinstance(doc, str | float):
        return doc
    if isinstance(doc, int):
        return doc if -(2**63) <= doc < 2**63 else float(doc)
    schema = schema or {}
    if isinstance(doc, list):
        return [decode(x, schema.get("items")) for x in doc]
    props = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    out = {}
    for key, value in doc.items():
        sub = props.get(key, extra if isinstance(extra, dict) else None)
        if value is None and not (sub or {}).get("nullable"):
            continue
        out[key] = decode(value, sub)
    for key, sub in props.items():  # defaulting, after nulls are dropped
        if key not in out and "default" in sub:
            out[key] = decode(copy.deepcopy(sub["default"]), sub)
    return out


def meta_errors(meta: Any) -> list[str]:
    """The API server's own validation of metadata (ObjectMeta), as far as the
    documents here can reach it."""
    if not isinstance(meta, dict):
        return []
    errors = []
    ns = meta.get("namespace")
    if isinstance(ns, str) and not (len(ns) <= 63 and _DNS_LABEL.fullmatch(ns)):
        errors.append("metadata.namespace: not a DNS label")
    for field in ("labels", "annotations"):
        given = meta.get(field)
        for key, value in (given.items() if isinstance(given, dict) else ()):
            prefix, _, _ = key.rpartition("/")
            if not _QUALIFIED.fullmatch(key) or len(prefix) > 253:
                errors.append(f"metadata.{field}: {key!r} is not a qualified name")
            if field == "labels" and isinstance(value, str) and \
                    not _LABEL_VALUE.fullmatch(value):
                errors.append(f"metadata.labels: {value!r} is not a label value")
    return errors


def kube_errors(doc: Any, crd: dict[str, Any]) -> list[str]:
    """Why the API server would refuse `doc` (created with strict field validation)
    under `crd`; [] when it takes it."""
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    if not isinstance(doc, dict):
        return ["not an object"]
    decoded = decode(doc, schema)
    names = crd["spec"]["names"]
    version = crd["spec"]["versions"][0]["name"]
    if decoded.get("apiVersion") != f"{crd['spec']['group']}/{version}" or \
            decoded.get("kind") != names["kind"]:
        return ["apiVersion and kind are not the CRD's"]
    meta = decoded.get("metadata")
    if not isinstance(meta, dict) or not (meta.get("name") or meta.get("generateName")):
        return ["metadata.name: required"]
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in KubeValidator(strict(schema)).iter_errors(decoded)]
    return errors + meta_errors(decoded.get("metadata"))
