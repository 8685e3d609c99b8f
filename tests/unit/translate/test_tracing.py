"""Telemetry tracing: validation at apply, scope resolution, and the Envoy config it
becomes (golden file, protobuf build, `envoy --mode validate`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from gossamer.index import build_index
from gossamer.model import (
    InvalidResource,
    Resource,
    ResourceKey,
    Telemetry,
    kind_for,
    parse_document,
    parse_documents,
)
from gossamer.translate import MeshSettings, translate_mesh, translate_proxy
from gossamer.translate.tracing import OTEL_TRACER
from tests.otlp import tracing_telemetry
from tests.unit.translate.test_security import _static_bootstrap, assert_envoy_accepts
from tests.unit.translate.test_translate import _as_json, _frontend

HERE = Path(__file__).parents[1]
MESH = (HERE / "testdata" / "mesh.yaml").read_text()
API = "mesh.gossamer.dev/v1alpha1"


def snapshot(*extra: dict[str, Any], **over: Any) -> dict[str, Any]:
    resources: list[Resource] = [*parse_documents(MESH), *map(parse_document, extra)]
    mesh = translate_mesh(build_index(resources, 3), MeshSettings())
    return _as_json(translate_proxy(mesh, _frontend(**over)).snapshot)


def hcm(listener: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = listener["filterChains"][0]["filters"][-1]["typedConfig"]
    return out


# ---------------------------------------------------------------- model


def test_a_valid_document_round_trips() -> None:
    doc = tracing_telemetry("mesh", percent=12.5, address="otel-collector.observability:4317")
    parsed = parse_document(doc)
    assert parsed.kind == "Telemetry"
    assert parse_document(parsed.to_document()) == parsed
    assert kind_for("telemetries") is Telemetry


@pytest.mark.parametrize(("tracing", "path", "reason"), [
    ({"samplingPercent": 101}, "spec.tracing.samplingPercent", "less than or equal to 100"),
    ({"samplingPercent": -1}, "spec.tracing.samplingPercent", "greater than or equal to 0"),
    ({"collector": {"address": "collector"}}, "spec.tracing.collector.address", "host:port"),
    ({"collector": {"address": "collector:0"}}, "spec.tracing.collector.address", "1-65535"),
    ({"collector": {"address": "collector:99999"}}, "spec.tracing.collector.address",
     "1-65535"),
    ({"collector": {"address": "bad_host!:4317"}}, "spec.tracing.collector.address",
     "not a host name"),
    ({"collector": {"address": "[zz::1]:4317"}}, "spec.tracing.collector.address",
     "not an IPv6 address"),
    ({"collector": {}}, "spec.tracing.collector.address", "required"),
    ({"sampling": 5}, "spec.tracing.sampling", "unknown field"),
])
def test_bad_field_is_rejected_with_its_path_and_reason(tracing: dict[str, Any], path: str,
                                                        reason: str) -> None:
    doc = tracing_telemetry("t")
    doc["spec"]["tracing"] = tracing
    with pytest.raises(InvalidResource) as err:
        parse_document(doc)
    found = {e.path: e.reason for e in err.value.errors}
    assert path in found, found
    assert reason.lower() in found[path].lower(), found


def test_ipv6_collector_is_accepted() -> None:
    parse_document(tracing_telemetry("t", address="[::1]:4317"))


# ---------------------------------------------------------------- scopes and translation


def test_no_telemetry_means_no_tracer_and_no_collector_cluster() -> None:
    snap = snapshot()
    assert not [c for c in snap["clusters"] if c.startswith("tracing|")]
    assert all("tracing" not in hcm(lis) for lis in snap["listeners"].values()
               if hcm(lis).get("statPrefix") != "upstream|5432||db.data")


def test_mesh_wide_tracing_covers_every_http_listener() -> None:
    snap = snapshot(tracing_telemetry("mesh", percent=25, address="127.0.0.1:4317"))
    cluster = snap["clusters"]["tracing|127.0.0.1:4317"]
    assert cluster["type"] == "STRICT_DNS"
    http = {n: hcm(lis) for n, lis in snap["listeners"].items() if "db.data" not in n}
    assert set(http) == {"inbound", "outbound", "upstream|80||catalog.default"}
    for config in http.values():
        tracing = config["tracing"]
        assert tracing["randomSampling"] == {"value": 25.0}
        assert tracing["provider"]["name"] == OTEL_TRACER
        provider = tracing["provider"]["typedConfig"]
        assert provider["serviceName"] == "frontend"
        assert provider["grpcService"]["envoyGrpc"]["clusterName"] == "tracing|127.0.0.1:4317"
    assert snap["listeners"]["inbound"]["trafficDirection"] == "INBOUND"
    assert snap["listeners"]["outbound"]["trafficDirection"] == "OUTBOUND"


def _percent(snap: dict[str, Any]) -> float:
    value: float = hcm(snap["listeners"]["outbound"])["tracing"]["randomSampling"].get("value", 0.0)
    return value


def test_most_specific_scope_wins_field_by_field() -> None:
    mesh = tracing_telemetry("mesh", percent=10, address="collector:4317")
    namespace = tracing_telemetry("ns", "default", percent=20)
    service = tracing_telemetry("frontend", "default", target="frontend", percent=0)
    other = tracing_telemetry("catalog", "default", target="catalog", percent=90)
    assert _percent(snapshot(mesh)) == 10
    assert _percent(snapshot(mesh, namespace)) == 20
    snap = snapshot(mesh, namespace, service, other)
    assert _percent(snap) == 0
    # The collector still comes from the mesh-wide Telemetry.
    assert "tracing|collector:4317" in snap["clusters"]
    # Another namespace's Telemetry does not cover this proxy.
    assert _percent(snapshot(mesh, tracing_telemetry("ns", "data", percent=55))) == 10


def test_a_collector_without_a_rate_samples_one_percent() -> None:
    assert _percent(snapshot(tracing_telemetry("mesh", address="collector:4317"))) == 1.0


def test_a_rate_without_any_collector_configures_nothing() -> None:
    snap = snapshot(tracing_telemetry("ns", "default", percent=100))
    assert "tracing" not in hcm(snap["listeners"]["outbound"])


def test_second_telemetry_of_a_scope_is_conflicted_and_ignored() -> None:
    first = parse_document(tracing_telemetry("a", percent=30, address="collector:4317"))
    second = parse_document(tracing_telemetry("b", percent=70, address="other:4317"))
    index = build_index([*parse_documents(MESH), first, second], 1)
    assert [t.metadata.name for t in index.telemetries] == ["a"]
    conds = index.conditions[ResourceKey("Telemetry", "gossamer-system", "b")]
    assert (conds[0].status, conds[0].reason) == ("False", "Conflicted")
    ok = index.conditions[ResourceKey("Telemetry", "gossamer-system", "a")]
    assert (ok[0].status, ok[0].message) == ("True", "scope: mesh")


def test_missing_target_service_is_reported() -> None:
    doc = parse_document(tracing_telemetry("t", "default", target="nope", percent=5))
    index = build_index([*parse_documents(MESH), doc], 1)
    conds = index.conditions[ResourceKey("Telemetry", "default", "t")]
    assert (conds[1].status, conds[1].reason) == ("False", "TargetNotFound")


def test_golden_tracing_snapshot() -> None:
    snap = snapshot(tracing_telemetry("mesh", percent=100, address="otel-collector:4317"))
    actual = {"cluster": snap["clusters"]["tracing|otel-collector:4317"],
              "inbound": hcm(snap["listeners"]["inbound"])["tracing"],
              "outbound": hcm(snap["listeners"]["outbound"])["tracing"]}
    golden = HERE / "golden" / "frontend-tracing.json"
    if os.environ.get("GOSSAMER_UPDATE_GOLDEN"):
        golden.write_text(json.dumps(actual, indent=2, sort_keys=True) + "\n")
    assert actual == json.loads(golden.read_text())


@pytest.mark.parametrize("mtls", [True, False])
def test_envoy_accepts_the_generated_config(mtls: bool, tmp_path: Path) -> None:
    resources = [*parse_documents(MESH),
                 parse_document(tracing_telemetry("mesh", percent=37.5, address="127.0.0.1:4317")),
                 parse_document(tracing_telemetry("cat", "default", target="frontend", percent=3))]
    mesh = translate_mesh(build_index(resources, 3), MeshSettings(mtls=mtls))
    snap = translate_proxy(mesh, _frontend()).snapshot
    assert_envoy_accepts(_static_bootstrap(snap), tmp_path)
