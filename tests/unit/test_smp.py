"""Every benchmark's SMP document against the SMP schema (bench/smp/protos, vendored).

The .proto files are compiled at test time (grpcio-tools, a test dependency) into
Python messages; each part of a document must parse into its message with
protobuf's json_format, which refuses unknown fields, wrong types and unknown
enum names. Documents are made from small results shaped as each benchmark
writes them, and from every result file kept under bench/.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from google.protobuf import json_format

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench" / "dataplane")]

from bench.smp import KEYS  # noqa: E402
from bench.smp.controlplane import (  # noqa: E402
    controlplane_document,
    firstrequest_document,
    replicas_document,
)
from bench.smp.dataplane import (  # noqa: E402
    ablate_document,
    instructions_document,
    run_document,
)

PROTOS = ROOT / "bench" / "smp"
MACHINE = {"cpus": 2, "model": "Test CPU", "kernel": "6.1", "envoy": "1.40.0/x",
           "nginx": "nginx/1.22.1"}


@pytest.fixture(scope="module")
def smp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """service_mesh_performance_pb2, generated from the vendored .proto files."""
    grpc_tools = pytest.importorskip("grpc_tools")
    from grpc_tools import protoc
    out = tmp_path_factory.mktemp("smp_pb2")
    include = Path(grpc_tools.__file__).parent / "_proto"
    files = [f"protos/{n}.proto" for n in ("service_mesh_performance", "service_mesh",
                                           "metadata")]
    code = protoc.main(["protoc", f"-I{PROTOS}", f"-I{include}", f"--python_out={out}",
                        *files])
    assert code == 0, "protoc failed on the vendored SMP protos"
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module("protos.service_mesh_performance_pb2")
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m == "protos" or m.startswith("protos.")]:
            del sys.modules[name]


def check(doc: dict[str, Any], smp: ModuleType) -> None:
    """Each part parses into its SMP message; results point at parts that exist."""
    assert tuple(doc) == KEYS
    doc = json.loads(json.dumps(doc))  # as written to the file
    json_format.ParseDict(doc["environment_config"], smp.EnvironmentConfig())
    meshes = {m["id"] for m in doc["service_mesh_configs"]}
    tests = {t["id"] for t in doc["performance_test_configs"]}
    for m in doc["service_mesh_configs"]:
        json_format.ParseDict(m, smp.ServiceMeshConfig())
    for t in doc["performance_test_configs"]:
        json_format.ParseDict(t, smp.PerformanceTestConfig())
    assert doc["performance_test_results"]
    for r in doc["performance_test_results"]:
        json_format.ParseDict(r, smp.PerformanceTestResult())
        assert (r["test_id"], r["mesh_config_id"], r["env_id"]) in \
            {(t, m, doc["environment_config"]["id"]) for t in tests for m in meshes}, r["id"]


def test_a_field_the_schema_lacks_is_refused(smp: ModuleType) -> None:
    """The check can fail: a misnamed field and a non-string label are errors."""
    with pytest.raises(json_format.ParseError):
        json_format.ParseDict({"latency_ms": {"p50": 1}}, smp.PerformanceTestResult())
    with pytest.raises(json_format.ParseError):
        json_format.ParseDict({"labels": {"x": 1.5}}, smp.PerformanceTestResult())


def _latency(p50: float) -> dict[str, Any]:
    return {"completed": 1000, "elapsed_s": 2.0, "latency_us": {"p50": p50, "p90": 2 * p50,
            "p99": 3 * p50, "max": 4 * p50}, "send_lag_us": {"p50": 20, "p99": 80},
            "proxy_cpu_ms_per_1k": 500.0, "support_cpu_share": 0.01, "max_steal": 0.01,
            "foreign_cpu": 0.0, "attempts": 1, "errors": 0, "non_200": 0, "unfinished": 0}


def test_run_py_results(smp: ModuleType) -> None:
    from report import summarize
    run = {"latency": {"500": {n: _latency(p) for n, p in
                               (("none", 100), ("envoy", 600), ("gossamer", 650))}},
           "throughput": {n: {"rps": r} for n, r in (("none", 9e4), ("envoy", 6e3),
                                                     ("gossamer", 5.5e3))}}
    res = {"machine": MACHINE, "started": 1.7e9, "wall_s": 60,
           "settings": {"rates": [500], "duration_s": 2, "wrk_duration_s": 3, "runs": 1,
                        "connections": 16, "sched": "SCHED_OTHER", "max_steal": 0.05},
           "runs": [run], "peak_rss_kib": {"none": [], "envoy": [65000, 66000],
                                           "gossamer": [67000, 68000]}}
    res["summary"] = summarize(res)
    doc = run_document(res)
    check(doc, smp)
    by_id = {r["id"]: r for r in doc["performance_test_results"]}
    assert by_id["gossamer-500"]["latencies_ms"]["p50"] == 0.65
    assert by_id["gossamer-500"]["actual_qps"] == 500
    assert by_id["gossamer-throughput"]["actual_qps"] == 5500
    sidecar = next(m for m in doc["service_mesh_configs"] if m["id"] == "gossamer-500")["sidecar"]
    assert sidecar == {"count": 2, "rps": 500, "cpu_mcores": 250, "mem_mb": 138}


def test_ablate_py_results(smp: ModuleType) -> None:
    rounds = [{n: {"cpu_ms_per_1k": c, "p50_us": 700.0, "rps": 5000.0} for n, c in
               (("base", 480.0), ("retry", 500.0), ("gossamer", 520.0))}]
    doc = ablate_document(rounds, {"rate": 1000, "duration": 3, "wrk_duration": 3}, MACHINE,
                          1.7e9, 1.7e9 + 60)
    check(doc, smp)
    retry = next(r for r in doc["performance_test_results"] if r["id"] == "retry")
    assert retry["labels"]["cpu_x_base"] == f"{500 / 480:.6g}"


def test_instructions_py_results(smp: ModuleType) -> None:
    from irreport import summarize

    def run(config: str, caller: float, callee: float) -> dict[str, Any]:
        side = {"worker_per_request": 1.0, "idle_per_s": 120000, "scrape": 2e6,
                "window": {"seconds": 15.0}}
        return {"config": config, "started": 1.7e9, "ended": 1.7e9 + 40,
                "caller": {**side, "per_request": caller},
                "callee": {**side, "per_request": callee}}
    runs = [run("envoy", 159300.0, 175200.0), run("gossamer", 167800.0, 186800.0)]
    res = {"machine": {**MACHINE, "valgrind": "valgrind-3.19.0", "commit": "abc"},
           "settings": {"requests": 2000, "warmup": 500, "repeats": 1,
                        "tool": "valgrind --tool=callgrind (Ir)", "scrape_interval_s": 3600},
           "runs": runs, "summary": summarize(runs)}
    doc = instructions_document(res)
    check(doc, smp)
    labels = next(r for r in doc["performance_test_results"] if r["id"] == "gossamer")["labels"]
    assert labels["instructions_per_request"] == "354600"
    assert labels["x_envoy"] == f"{354600 / 334500:.6g}"


def test_controlplane_results(smp: ModuleType) -> None:
    row = {"N": 1000, "S": 1000, "scoped": "no", "route_p50_ms": 30.0, "route_p90_ms": 40.0,
           "route_p99_ms": 60.0, "route_p100_ms": 70.0, "route_bytes_per_proxy": 900.0,
           "route_affected": 10, "ep_p50_ms": 10.0, "ep_p90_ms": 15.0, "ep_p99_ms": 20.0,
           "ep_p100_ms": 25.0, "ep_bytes_per_proxy": 300.0, "ep_affected": 10,
           "ep_unaffected_bytes": 0, "cp_cpu_s": 100.0, "cp_peak_rss_mib": 250.0,
           "churn_p50_ms": 30.0, "churn_p99_ms": 90.0, "churn_cpu_share": 0.5,
           "initial_sync_s": 7.0, "resync_s": 2.0, "lag_max_ms": 10.0, "rss_0_mib": 150.0,
           "rss_n_mib": 250.0, "kib_per_proxy": 102.4}
    doc = controlplane_document({"started": "20261206-120000", "runs": 3, "summary": [row],
                                 "scenarios": []}, MACHINE)
    check(doc, smp)
    route = next(r for r in doc["performance_test_results"] if r["id"] == "1000x1000-route")
    assert route["latencies_ms"] == {"p50": 30.0, "p90": 40.0, "p99": 60.0, "max": 70.0}
    cp = doc["service_mesh_configs"][0]["mesh_control_plane"]
    assert (cp["sidecars"], cp["services"], cp["mem_mb"]) == (1000, 1000, 262)
    sync = next(r for r in doc["performance_test_results"] if r["id"] == "1000x1000-sync")
    assert sync["labels"]["control_plane_kib_per_proxy"] == "102.4"


def test_replicas_results(smp: ModuleType) -> None:
    def part(p99: float) -> dict[str, Any]:
        return {"proxies": 500, "missing": 0, "p50": p99 / 2, "p90": p99 - 10, "p99": p99,
                "p100": p99 + 1}
    one = {"replicas": 1, "store": "sqlite", "n": 1000, "s": 100, "scoped": True,
           "runs": [{"all": part(80.0), "replica-0": part(80.0)}],
           "median": {"all": part(80.0), "replica-0": part(80.0)},
           "usage": [{"cpu_s": 11.2, "rss_mib": 260.0, "hwm_mib": 262.5}],
           "kib_per_proxy": [118.0]}
    two = {**one, "replicas": 2, "store": "postgresql",
           "median": {"all": part(90.0), "replica-0": part(85.0), "replica-1": part(90.0)},
           "usage": [{"cpu_s": 12.4, "rss_mib": 190.0, "hwm_mib": 195.4},
                     {"cpu_s": 9.2, "rss_mib": 195.0, "hwm_mib": 197.3}],
           "kib_per_proxy": [120.5, 121.5]}
    doc = replicas_document({"started": 1.7e9, "ended": 1.7e9 + 300, "sqlite-1": one,
                             "postgres-2": two, "store_delivery_ms": {"p50": 1.2}}, MACHINE)
    check(doc, smp)
    by_id = {r["id"]: r for r in doc["performance_test_results"]}
    assert by_id["postgres-2-replica-1"]["latencies_ms"]["p99"] == 90.0
    assert by_id["postgres-2-replica-1"]["labels"]["kib_per_proxy"] == "121.5"
    cp = next(m for m in doc["service_mesh_configs"] if m["id"] == "postgres-2")
    assert (cp["mesh_control_plane"]["count"], cp["mesh_control_plane"]["mem_mb"]) == (2, 207)


def test_firstrequest_document_validates(smp: ModuleType) -> None:
    def lat(p99: float) -> dict[str, float]:
        return {"n": 60, "p50_ms": 5.0, "p90_ms": 9.0, "p99_ms": p99, "max_ms": p99 + 1}
    doc = firstrequest_document({"kind": "firstrequest", "started": 1.7e9, "ended": 1.7e9 + 30,
                                 "services": 200, "calls": 60, "on_demand_first": lat(21.0),
                                 "on_demand_second": lat(8.0), "up_front_first": lat(12.0),
                                 "up_front_second": lat(8.0), "adds": {"p99_ms": 9.0}},
                                MACHINE)
    check(doc, smp)
    by_id = {r["id"]: r for r in doc["performance_test_results"]}
    assert by_id["on-demand-first"]["latencies_ms"]["p99"] == 21.0
    assert by_id["on-demand-first"]["labels"]["adds_p99_ms"] == "9"
    assert "adds_p99_ms" not in by_id["up-front-first"]["labels"]


def _kept_results() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in sorted((ROOT / "bench").rglob("*.json")):
        if path.name.endswith(".smp.json"):
            continue
        try:
            out.append((path, json.loads(path.read_text())))
        except (ValueError, UnicodeDecodeError):
            continue
    return out


def test_every_kept_result_converts(smp: ModuleType) -> None:
    """The result files under bench/ (whatever their names) as SMP documents."""
    seen = {"run": 0, "controlplane": 0, "instructions": 0, "replicas": 0, "firstrequest": 0}
    for _path, res in _kept_results():
        if isinstance(res, dict) and res.get("kind") == "dataplane-instructions":
            check(instructions_document(res), smp)
            seen["instructions"] += 1
        elif isinstance(res, dict) and "machine" in res and "summary" in res \
                and "latency" in res["summary"]:
            check(run_document(res), smp)
            seen["run"] += 1
        elif isinstance(res, dict) and isinstance(res.get("summary"), list) \
                and res["summary"] and "route_p99_ms" in res["summary"][0]:
            check(controlplane_document(res, MACHINE), smp)
            seen["controlplane"] += 1
        elif isinstance(res, dict) and "sqlite-1" in res:
            check(replicas_document(res, MACHINE), smp)
            seen["replicas"] += 1
        elif isinstance(res, dict) and res.get("kind") == "firstrequest":
            check(firstrequest_document(res, MACHINE), smp)
            seen["firstrequest"] += 1
    assert seen["run"] >= 1, seen
    assert seen["controlplane"] >= 1, seen
    assert seen["instructions"] >= 1, seen
    assert seen["replicas"] >= 1, seen
    assert seen["firstrequest"] >= 1, seen
