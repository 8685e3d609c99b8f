"""Hostile or careless input at the model edge: text that is not valid Unicode,
documents and annotations over the size limits, numbers and booleans given as
something else, and YAML with a key twice or an integer too long to convert."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gossamer.local.spec import Process, load_local_app
from gossamer.model import KINDS, InvalidResource, parse_document, parse_documents
from gossamer.model.registry import load_yaml_documents

MESH = "mesh.gossamer.dev/v1alpha1"
GATEWAY = "gateway.networking.k8s.io/v1"
SURROGATE = "\ud800"
# The documented limits (docs/security.md).
MAX_ANNOTATIONS_BYTES = 256 * 1024
MAX_DOCUMENT_BYTES = 512 * 1024
MAX_LABELS = 64


def workload(**meta: Any) -> dict[str, Any]:
    return {"apiVersion": MESH, "kind": "Workload",
            "metadata": {"name": "web-1", **meta},
            "spec": {"service": "web", "address": "127.0.0.1", "port": 8080}}


def errors(doc: object) -> dict[str, str]:
    with pytest.raises(InvalidResource) as caught:
        parse_document(doc)
    return {e.path: e.reason for e in caught.value.errors}


# ---------------------------------------------------------------- text


@pytest.mark.parametrize(("where", "path"), [
    (lambda d: d["metadata"].setdefault("annotations", {}).update(a=SURROGATE),
     "metadata.annotations.a"),
    (lambda d: d["metadata"].setdefault("annotations", {}).update(a=f"ok {SURROGATE} ok"),
     "metadata.annotations.a"),
    (lambda d: d["spec"].update(proxy="\udfff"), "spec.proxy"),
    (lambda d: d["metadata"].update(name=SURROGATE), "metadata.name"),
])
def test_lone_surrogates_are_refused_with_the_field_path(where: Any, path: str) -> None:
    doc = workload()
    where(doc)
    found = errors(doc)
    assert list(found) == [path]
    assert "not valid Unicode" in found[path]
    # The reason quotes the character escaped, so it can always be sent back.
    assert all(reason.isascii() for reason in found.values())


def test_a_surrogate_key_is_refused_at_its_mapping() -> None:
    found = errors(workload(annotations={SURROGATE: "v", "fine": "é ✓"}))
    assert list(found) == ["metadata.annotations"]
    assert found["metadata.annotations"].startswith("key '\\ud800': not valid Unicode")


def test_surrogates_deep_in_a_route_are_located() -> None:
    route = {"apiVersion": GATEWAY, "kind": "HTTPRoute", "metadata": {"name": "r"},
             "spec": {"parentRefs": [{"name": "web"}], "rules": [
                 {"matches": [{"headers": [{"name": "x", "value": "a\ud83d"}]}],
                  "backendRefs": [{"name": "web"}]}]}}
    found = errors(route)
    assert list(found) == ["spec.rules[0].matches[0].headers[0].value"]
    assert "lone surrogate '\\ud83d' at character 1" in found[
        "spec.rules[0].matches[0].headers[0].value"]


def test_valid_unicode_is_kept() -> None:
    res = parse_document(workload(annotations={"note": "café ✓ 🎉"}))
    assert res.metadata.annotations == {"note": "café ✓ 🎉"}


def test_surrogates_in_a_local_process_are_refused() -> None:
    text = ('apiVersion: local.gossamer.dev/v1alpha1\nkind: Process\nmetadata: {name: a}\n'
            'spec: {service: a, command: ["run", "\\ud800"]}\n')
    with pytest.raises(InvalidResource) as caught:
        load_local_app(text)
    assert [e.path for e in caught.value.errors] == ["document 1: spec.command[1]"]


# ---------------------------------------------------------------- sizes


def test_annotations_up_to_256_kib_are_accepted_and_beyond_refused() -> None:
    value = "x" * (MAX_ANNOTATIONS_BYTES - 1)
    assert parse_document(workload(annotations={"a": value}))
    found = errors(workload(annotations={"a": value + "x"}))
    assert "at most 256 KiB" in found["metadata.annotations"]
    # Bytes, not characters: two-byte characters count twice.
    found = errors(workload(annotations={"a": "é" * (MAX_ANNOTATIONS_BYTES // 2)}))
    assert "metadata.annotations" in found


def test_too_many_labels_are_refused() -> None:
    labels = {f"l{i}": "v" for i in range(MAX_LABELS)}
    assert parse_document(workload(labels=labels))
    found = errors(workload(labels={**labels, "one-more": "v"}))
    assert found == {"metadata.labels": f"{MAX_LABELS + 1} labels; at most {MAX_LABELS} "
                                        "are allowed"}


def big_policy() -> dict[str, Any]:
    """A RequestAuthentication over the document limit, each field within its own."""
    usable = {"kty": "RSA", "kid": "k1", "n": "_" * 340, "e": "AQAB"}  # 2040 bits, odd
    padding = {"kty": "RSA", "kid": "k2", "n": "A" * 60_000, "e": "AQAB"}
    jwks = json.dumps({"keys": [usable, padding]})
    rules = [{"issuer": f"https://issuer-{i}.example", "jwks": jwks} for i in range(10)]
    return {"apiVersion": MESH, "kind": "RequestAuthentication", "metadata": {"name": "big"},
            "spec": {"jwtRules": rules}}


def test_a_document_over_512_kib_is_refused() -> None:
    assert len(json.dumps(big_policy())) > MAX_DOCUMENT_BYTES
    found = errors(big_policy())
    assert list(found) == [""]
    assert "at most 512 KiB" in found[""]


def test_stored_documents_are_not_held_to_the_write_limits() -> None:
    """A limit added later must not drop what is already stored and serving."""
    assert parse_document(big_policy(), stored=True)
    labels = {f"l{i}": "v" for i in range(MAX_LABELS + 1)}
    assert parse_document(workload(labels=labels), stored=True)
    with pytest.raises(InvalidResource):  # text that cannot be served is refused even so
        parse_document(workload(annotations={"a": SURROGATE}), stored=True)


# ---------------------------------------------------------------- strict types


@pytest.mark.parametrize("port", [True, "80", 80.0])
def test_workload_port_must_be_an_integer(port: object) -> None:
    doc = workload()
    doc["spec"]["port"] = port
    assert "spec.port" in errors(doc)


@pytest.mark.parametrize(("doc", "path"), [
    ({"apiVersion": MESH, "kind": "Service", "metadata": {"name": "s"},
      "spec": {"ports": [{"port": "80"}]}}, "spec.ports[0].port"),
    ({"apiVersion": GATEWAY, "kind": "HTTPRoute", "metadata": {"name": "r"},
      "spec": {"parentRefs": [{"name": "s"}],
               "rules": [{"backendRefs": [{"name": "s", "weight": True}]}]}},
     "spec.rules[0].backendRefs[0].weight"),
    ({"apiVersion": GATEWAY, "kind": "HTTPRoute", "metadata": {"name": "r"},
      "spec": {"parentRefs": [{"name": "s"}], "rules": [{"filters": [
          {"type": "CORS", "cors": {"allowOrigins": ["https://a.example"],
                                    "allowCredentials": "true"}}]}]}},
     "spec.rules[0].filters[0].cors.allowCredentials"),
    ({"apiVersion": MESH, "kind": "FaultPolicy", "metadata": {"name": "f"},
      "spec": {"targetRef": {"kind": "Service", "name": "s"},
               "abort": {"httpStatus": 503, "percent": "50"}}}, "spec.abort.percent"),
    ({"apiVersion": MESH, "kind": "Telemetry", "metadata": {"name": "t"},
      "spec": {"tracing": {"collector": "otel:4317", "samplingPercent": False}}},
     "spec.tracing.samplingPercent"),
])
def test_numbers_and_booleans_are_strict(doc: dict[str, Any], path: str) -> None:
    assert path in errors(doc)


def test_every_number_and_boolean_field_of_every_kind_is_strict() -> None:
    """So that a field added later cannot quietly take `true` for 1 or "80" for 80."""
    lax = []
    for cls in [*KINDS.values(), Process]:
        stack: list[tuple[str, object]] = [(cls.__name__, cls.__pydantic_core_schema__)]
        while stack:
            where, node = stack.pop()
            if isinstance(node, dict):
                if node.get("type") in ("int", "bool", "float") and not node.get("strict"):
                    lax.append(where)
                for key, value in node.items():
                    stack.append((f"{where}.{key}" if isinstance(key, str) and key not in (
                        "schema", "fields", "type") else where, value))
            elif isinstance(node, list):
                stack.extend((where, item) for item in node)
    assert lax == []


def test_integers_stay_valid_for_number_fields_and_durations_stay_text() -> None:
    (policy,) = parse_documents("""
apiVersion: mesh.gossamer.dev/v1alpha1
kind: FaultPolicy
metadata: {name: f}
spec:
  targetRef: {kind: Service, name: s}
  delay: {fixedDelay: 1s500ms, percent: 50}
""")
    doc = policy.to_document()
    assert doc["spec"]["delay"] == {"fixedDelay": "1s500ms", "percent": 50.0}


def test_local_process_numbers_and_booleans_are_strict() -> None:
    base = ("apiVersion: local.gossamer.dev/v1alpha1\nkind: Process\nmetadata: {name: a}\n"
            "spec: {service: a, command: [run], %s}\n")
    assert load_local_app(base % "replicas: 2, inbound: false").processes[0].spec.replicas == 2
    for bad in ("replicas: '2'", "inbound: 'false'", "console: 1"):
        with pytest.raises(InvalidResource):
            load_local_app(base % bad)


# ---------------------------------------------------------------- YAML


def yaml_error(text: str) -> str:
    with pytest.raises(InvalidResource) as caught:
        parse_documents(text)
    assert len(caught.value.errors) == 1
    return str(caught.value)


def test_a_duplicate_key_is_refused_with_the_key_and_line() -> None:
    text = ("apiVersion: mesh.gossamer.dev/v1alpha1\nkind: Service\nmetadata: {name: s}\n"
            "spec:\n  ports:\n  - port: 80\n    protocol: http\n    port: 81\n")
    message = yaml_error(text)
    assert "found duplicate key 'port' (first at line 6)" in message
    assert "at line 8, column 5" in message
    assert "\n" not in message


def test_a_duplicate_key_in_flow_style_and_json_is_refused() -> None:
    assert "duplicate key 'name'" in yaml_error("metadata: {name: a, name: b}\n")
    assert "duplicate key 'kind'" in yaml_error('{"kind": "Service", "kind": "Workload"}')


def test_merge_keys_may_still_be_overridden() -> None:
    (doc,) = load_yaml_documents("base: &b {port: 80, protocol: http}\n"
                                 "port: {<<: *b, port: 81}\n")
    assert doc["port"] == {"port": 81, "protocol": "http"}


def test_an_integer_too_long_to_convert_is_one_clear_error() -> None:
    message = yaml_error("apiVersion: mesh.gossamer.dev/v1alpha1\nkind: Workload\n"
                         f"metadata: {{name: w}}\nspec: {{port: {'9' * 5000}}}\n")
    assert "integer too large (5000 characters) at line 4" in message
    assert "set_int_max_str_digits" not in message

