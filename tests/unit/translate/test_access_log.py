"""Telemetry: validation at apply, scopes (most specific wins, one per scope), and the
access log config of a proxy's HCMs (golden file; every listener builds as a protobuf).

Regenerate the golden file after an intended change with
`GOSSAMER_UPDATE_GOLDEN=1 pytest tests/unit/translate/test_tracing.py` and review the diff.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from gossamer.contract.node import BadNodeMetadata
from gossamer.index import build_index
from gossamer.model import InvalidResource, ResourceKey, Telemetry, parse_document, parse_documents
from gossamer.model.registry import kind_for
from gossamer.translate import MeshSettings, translate_mesh, translate_proxy
from gossamer.translate.telemetry import telemetry_for
from tests.unit.translate.test_translate import _as_json, _frontend

HERE = Path(__file__).parents[1]
MESH = (HERE / "testdata" / "mesh.yaml").read_text()
LOG = "/var/lib/gossamer/frontend-0/access.log"


def doc(spec: dict[str, Any], name: str = "t", namespace: str = "default") -> dict[str, Any]:
    return {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Telemetry",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def yaml_doc(name: str, namespace: str, access_log: str, target: str | None = None) -> str:
    ref = f"\n  targetRef: {{kind: Service, name: {target}}}" if target else ""
    return (f"apiVersion: mesh.gossamer.dev/v1alpha1\nkind: Telemetry\n"
            f"metadata: {{name: {name}, namespace: {namespace}}}\n"
            f"spec:{ref}\n  accessLog: {access_log}\n")


def test_a_full_document_parses_with_defaults() -> None:
    t = parse_document(doc({"targetRef": {"kind": "Service", "name": "catalog"},
                            "accessLog": {"errorsOnly": True}}))
    assert isinstance(t, Telemetry)
    assert t.spec.access_log is not None
    assert (t.spec.access_log.enabled, t.spec.access_log.errors_only) == (True, True)
    assert parse_document(doc({})).spec.access_log is None  # type: ignore[attr-defined]
    assert kind_for("telemetries") is Telemetry


@pytest.mark.parametrize(("spec", "path", "reason"), [
    ({"accessLog": {"enabled": "yes"}}, "spec.accessLog.enabled", "boolean"),
    ({"accessLog": {"errorsOnly": 1}}, "spec.accessLog.errorsOnly", "boolean"),
    ({"accessLog": {"format": "text"}}, "spec.accessLog.format", "unknown field"),
    ({"accesslog": {}}, "spec.accesslog", "unknown field"),
    ({"targetRef": {"kind": "Workload", "name": "x"}}, "spec.targetRef.kind", "Service"),
])
def test_bad_fields_are_rejected_with_path_and_reason(spec: dict[str, Any], path: str,
                                                      reason: str) -> None:
    with pytest.raises(InvalidResource) as err:
        parse_document(doc(spec))
    found = {e.path: e.reason for e in err.value.errors}
    assert path in found, found
    assert reason in found[path], found


def _index(*extra: str) -> Any:
    return build_index(parse_documents("\n---\n".join((MESH, *extra))), 1)


def test_the_most_specific_telemetry_wins_and_one_per_scope_counts() -> None:
    index = _index(yaml_doc("mesh", "gossamer-system", "{errorsOnly: true}"),
                   yaml_doc("mesh-later", "gossamer-system", "{enabled: false}"),
                   yaml_doc("ns", "default", "{enabled: true}"),
                   yaml_doc("catalog", "default", "{enabled: false}", target="catalog"))
    later = index.conditions[ResourceKey("Telemetry", "gossamer-system", "mesh-later")][0]
    assert (later.status, later.reason) == ("False", "Conflicted")
    assert "'mesh'" in later.message
    frontend = index.proxy_services("default", "frontend-0", "frontend")
    catalog = index.proxy_services("default", "catalog-v1-0", "catalog")
    data = index.proxy_services("data", "db-0", "db")
    assert telemetry_for(index, "default", frontend).metadata.name == "ns"
    assert telemetry_for(index, "default", catalog).metadata.name == "catalog"
    assert telemetry_for(index, "data", data).metadata.name == "mesh"
    assert telemetry_for(_index(), "default", frontend) is None


def _listeners(*extra: str, **meta: Any) -> dict[str, Any]:
    mesh = translate_mesh(_index(*extra), MeshSettings())
    out: dict[str, Any] = _as_json(translate_proxy(mesh, _frontend(**meta)).snapshot)
    return out["listeners"]


def _all_logs(listener: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The access loggers of each HCM of the listener."""
    return [f["typedConfig"].get("accessLog", []) for chain in listener["filterChains"]
            for f in chain["filters"] if f["name"].endswith("http_connection_manager")]


def _logs(listener: dict[str, Any]) -> list[Any]:
    """The file loggers of each HCM; None for an HCM with none."""
    return [[log for log in logs if log["name"] == "envoy.access_loggers.file"] or None
            for logs in _all_logs(listener)]


def test_every_http_connection_manager_streams_its_failures_to_the_control_plane() -> None:
    listeners = _listeners()
    names = {}
    for name, listener in listeners.items():
        for logs in _all_logs(listener):
            [failure] = [log for log in logs if log["name"] == "envoy.access_loggers.http_grpc"]
            common = failure["typedConfig"]["commonConfig"]
            assert common["grpcService"] == {"envoyGrpc": {"clusterName": "gossamer_xds"}}
            assert "orFilter" in failure["filter"]  # failures only
            names[name] = common["logName"]
    assert names["inbound"] == "gossamer.inbound"
    assert names["upstream|80||catalog.default"] == "gossamer.outbound"
    assert "upstream|5432||db.data" not in names  # TCP: no HCM


def test_golden_access_logs_of_a_proxy() -> None:
    actual = _listeners(yaml_doc("mesh", "gossamer-system", "{enabled: true}"),
                        yaml_doc("fe", "default", "{errorsOnly: true}", target="frontend"),
                        access_log=LOG)
    golden = HERE / "golden" / "frontend-telemetry.json"
    if os.environ.get("GOSSAMER_UPDATE_GOLDEN"):
        golden.write_text(json.dumps(actual, indent=2, sort_keys=True) + "\n")
    assert actual == json.loads(golden.read_text())
    inbound = _logs(actual["inbound"])[0][0]
    assert inbound["typedConfig"]["path"] == LOG
    fields = inbound["typedConfig"]["logFormat"]["jsonFormat"]
    assert fields["destination_workload"] == "frontend-0"
    assert fields["response_flags"] == "%RESPONSE_FLAGS%"
    assert "orFilter" in inbound["filter"]
    upstream = _logs(actual["upstream|80||catalog.default"])[0][0]
    assert upstream["typedConfig"]["logFormat"]["jsonFormat"]["destination_service"] == \
        "catalog"
    # The TCP upstream listener has no HCM, so no access log.
    assert _logs(actual["upstream|5432||db.data"]) == []


@pytest.mark.parametrize(("extra", "meta"), [
    ((), {"access_log": LOG}),  # no Telemetry
    ((yaml_doc("ns", "default", "{enabled: false}"),), {"access_log": LOG}),
    ((yaml_doc("ns", "default", "{enabled: true}"),), {}),  # the agent named no file
    ((yaml_doc("ns", "default", "{enabled: true}"),
      yaml_doc("fe", "default", "{enabled: false}", target="frontend")), {"access_log": LOG}),
])
def test_no_access_log_unless_a_telemetry_enables_it_and_the_agent_names_a_file(
        extra: tuple[str, ...], meta: dict[str, Any]) -> None:
    listeners = _listeners(*extra, **meta)
    assert listeners == _listeners()
    assert all(log is None for lis in listeners.values() for log in _logs(lis))


@pytest.mark.parametrize("path", ["access.log", "", 7, "/a\nb"])
def test_access_log_path_must_be_absolute(path: Any) -> None:
    with pytest.raises(BadNodeMetadata):
        _frontend(access_log=path)


def test_telemetry_examples_in_the_docs_are_valid() -> None:
    text = (HERE.parents[1] / "docs" / "observability.md").read_text()
    start = text.index("## Access logs")
    section = text[start:text.find("\n## ", start + 1)]  # to the next section (Dashboard)
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    parsed = [r for block in blocks for r in parse_documents(block)]
    assert [r.kind for r in parsed] == ["Telemetry", "Telemetry"]
