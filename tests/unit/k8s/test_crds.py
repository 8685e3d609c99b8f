"""The generated CRDs: valid Kubernetes objects, structural, and in agreement with the
API's validation on the model tests' documents and mutations of them.

Agreement is checked with the API server's semantics as kube_schema.py emulates them
(strict field validation, RE2 patterns, CEL rules). Where the two may differ by design,
the difference is listed below, each with a check that it is that difference and
nothing else: CONTROL_PLANE (the API refuses what a CRD cannot express) and
KUBERNETES_ONLY (the API server checks metadata more than the API does).

`GOSSAMER_UPDATE_GOLDEN=1 pytest tests/unit/k8s/test_crds.py` rewrites the golden CRD.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

import cel
import kubernetes_validate
import pytest
import yaml

from gossamer.k8s import validations
from gossamer.k8s.crds import crds, crds_yaml, mesh_kinds
from gossamer.k8s.schema import annotated_validators, models_of
from tests.unit.k8s.kube_schema import rules, structural_errors

HERE = Path(__file__).parent
GOLDEN = HERE.parent / "golden" / "k8s" / "crd-authorizationpolicy.yaml"
VALID = list(yaml.safe_load_all((HERE / "testdata" / "valid.yaml").read_text()))
CRDS = {c["spec"]["names"]["kind"]: c for c in crds()}
KUBE_VERSIONS = ["1.30", kubernetes_validate.latest_version()]


def schema_of(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


# ---------------------------------------------------------------- (a) valid CRDs


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("kind", sorted(CRDS))
def test_every_crd_is_a_valid_kubernetes_object(kind: str, version: str) -> None:
    kubernetes_validate.validate(CRDS[kind], version, strict=True)


def test_the_kubernetes_schema_check_can_fail() -> None:
    bad = copy.deepcopy(CRDS["Service"])
    bad["spec"]["scope"] = {"not": "a string"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBE_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_every_crd_schema_is_structural(kind: str) -> None:
    assert structural_errors(schema_of(CRDS[kind])) == []


def test_the_structural_check_finds_what_kubernetes_refuses() -> None:
    schema = copy.deepcopy(schema_of(CRDS["Service"]))
    spec = schema["properties"]["spec"]
    del spec["properties"]["ports"]["items"]["properties"]["port"]["type"]
    spec["additionalProperties"] = False
    spec["properties"]["selector"]["anyOf"] = [{"type": "string"}]
    schema["properties"]["metadata"]["properties"]["labels"] = {"type": "object"}
    assert structural_errors(schema) == [
        "metadata: only name and generateName may be constrained",
        "spec: additionalProperties: false is not allowed",
        "spec: properties and additionalProperties together",
        "spec.selector.anyOf: type is not allowed in a junctor",
        "spec.ports.items.port: no type",
    ]


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_every_cel_rule_compiles(kind: str) -> None:
    for rule in rules(schema_of(CRDS[kind])):
        cel.compile(rule)
        # Kubernetes escapes CEL keywords as property names (`self.__namespace__`).
        code = re.sub(r"'(\\.|[^'\\])*'", "''", rule)
        assert not re.search(r"\.(namespace|in|as|if|package|return|var|while)\b", code)


def test_crds_cover_the_mesh_kinds_only() -> None:
    assert sorted(CRDS) == sorted(cls.KIND for cls in mesh_kinds())
    assert not {"HTTPRoute", "GRPCRoute", "TCPRoute"} & set(CRDS)
    for crd in CRDS.values():
        spec = crd["spec"]
        assert spec["scope"] == ("Cluster" if spec["names"]["kind"] == "Mesh" else "Namespaced")
        assert spec["names"]["categories"] == ["gossamer"]
        assert spec["versions"][0]["subresources"] == {"status": {}}
        assert crd["metadata"]["name"] == f"{spec['names']['plural']}.mesh.gossamer.dev"


def test_the_golden_crd() -> None:
    text = yaml.safe_dump(CRDS["AuthorizationPolicy"], sort_keys=False, width=100)
    if os.environ.get("GOSSAMER_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()
    assert yaml.safe_load_all(crds_yaml()).__next__() == CRDS["Service"]


# ---------------------------------------------------------------- every validator is placed


def test_every_model_validator_is_in_the_crd_or_listed_as_control_plane_only() -> None:
    found: set[str] = set()
    for kind in mesh_kinds():
        for cls in models_of(kind).values():
            dec = cls.__pydantic_decorators__
            for d in [*dec.field_validators.values(), *dec.model_validators.values()]:
                found.add(f"{d.func.__module__}.{d.func.__qualname__}")
            for entries in annotated_validators(cls).values():
                found.update(f"{f.__module__}.{f.__qualname__}" for _, f in entries)
    assert found == set(validations.VALIDATORS)


def test_every_class_patch_applies_to_a_kind() -> None:
    from gossamer.model.smi import SMI_KINDS

    classes = {name for kind in (*mesh_kinds(), *SMI_KINDS) for name in models_of(kind)}
    assert set(validations.CLASS_PATCHES) <= classes


def test_python_whitespace_is_the_crds_whitespace() -> None:
    spaces = {chr(c) for c in range(0x110000) if chr(c).isspace()}
    pattern = re.compile(validations.SPACE.replace(r"\x{", r"\u").replace("}", "")
                         .replace(r"\u1680", "\u1680").replace(r"\u2000", "\u2000")
                         .replace(r"\u200a", "\u200a").replace(r"\u2028", "\u2028")
                         .replace(r"\u2029", "\u2029").replace(r"\u202f", "\u202f")
                         .replace(r"\u205f", "\u205f").replace(r"\u3000", "\u3000")
                         .join("[]"))
    assert {chr(c) for c in range(0x110000) if pattern.fullmatch(chr(c))} == spaces


def test_the_cli_prints_the_crds_as_one_yaml_stream() -> None:
    from typer.testing import CliRunner

    from gossamer.cli import k8s  # noqa: F401 - registers the command
    from gossamer.cli.app import app

    result = CliRunner().invoke(app, ["k8s", "crds"])
    assert result.exit_code == 0, result.output
    assert list(yaml.safe_load_all(result.output)) == list(CRDS.values())
