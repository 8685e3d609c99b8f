"""Benchmark results as Service Mesh Performance (SMP) documents.

SMP (a CNCF project) describes a mesh benchmark with four messages of its
schema, `protos/service_mesh_performance.proto` (vendored in `protos/`, see
protos/README.md): the environment (`EnvironmentConfig`: nodes, workloads),
the mesh as configured and what it used (`ServiceMeshConfig`: mesh name and
version, mTLS, proxy concurrency and build, sidecars' and control plane's CPU
and memory), the performance profile (`PerformanceTestConfig`: load generator,
protocol, connections, requested rate, duration) and the results
(`PerformanceTestResult`: start and end, latencies in ms by percentile, actual
rate). The schema has no message holding the four together, so a document is
a JSON object with one key per message kind, each value (or list item) one
message in proto3's JSON form; results point at their profile, mesh config and
environment by id (`test_id`, `mesh_config_id`, `env_id`). Figures SMP has no
field for (instruction counts, ratios, steal) go into `labels`, whose values
the schema types as strings. tests/unit/test_smp.py parses every part with
protobuf's json_format into messages generated from the vendored .proto files.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

SMP_VERSION = "v0.6.1"  # the spec's release whose .proto files are in protos/
MESH = "gossamer"
KEYS = ("environment_config", "service_mesh_configs", "performance_test_configs",
        "performance_test_results")
Message = dict[str, Any]


def labels(values: dict[str, Any]) -> dict[str, str]:
    """SMP labels are strings; None values are left out, floats kept short."""
    out = {}
    for key, value in values.items():
        if value is None:
            continue
        out[key] = f"{value:.6g}" if isinstance(value, float) else str(value)
    return out


def timestamp(epoch: float) -> str:
    """google.protobuf.Timestamp in JSON form (RFC 3339, UTC)."""
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def gossamer_version() -> str:
    try:
        return importlib.metadata.version("gossamer-mesh")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def this_machine() -> dict[str, Any]:
    """The node, for results that did not record it (read when the document is written)."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo
                  if line.startswith("model name")), "unknown")
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {"cpus": os.cpu_count(), "model": model, "kernel": platform.release(),
            "mem_mb": mem_kib * 1024 // 10**6}


def environment(machine: dict[str, Any], workloads: list[tuple[str, int]],
                extra: dict[str, Any] | None = None) -> Message:
    """EnvironmentConfig (id `env`): one node, as `machine` (run.py's `machine()`) says;
    no Kubernetes (the benchmarks run processes on one VM)."""
    node: Message = {"type": str(machine.get("model", "unknown")),
                     "cores": int(machine.get("cpus") or 0)}
    if machine.get("mem_mb"):
        node["mem_mb"] = int(machine["mem_mb"])
    return {"smp_version": SMP_VERSION, "id": "env",
            "labels": labels({"kernel": machine.get("kernel"), "envoy": machine.get("envoy"),
                              "nginx": machine.get("nginx"), "valgrind": machine.get("valgrind"),
                              **(extra or {})}),
            "nodes": [node],
            "individual_workloads": [{"name": n, "count": c} for n, c in workloads]}


def mesh_config(config_id: str, mesh: str, *, proxy_build: str | None, mtls: bool,
                sidecar: Message | None = None, control_plane: Message | None = None,
                extra: dict[str, Any] | None = None) -> Message:
    """ServiceMeshConfig of one measured configuration. SMP's mesh enum has no entry
    for Gossamer (nor for "no mesh" or a hand-written Envoy pair): the type stays
    INVALID_MESH, the enum's "none of these", and the name is the `mesh` label."""
    out: Message = {"smp_version": SMP_VERSION, "id": config_id,
                    "labels": labels({"mesh": mesh, **(extra or {})}),
                    "mesh_type": {"type": "INVALID_MESH",
                                  "version": gossamer_version() if mesh == MESH else "",
                                  "labels": {"name": mesh}},
                    "mtls_enabled": mtls, "proxy_concurrency": 1 if proxy_build else 0,
                    "mesh_telemetry_enabled": mesh == MESH,
                    "mesh_build": f"{MESH} {gossamer_version()}" if mesh == MESH else ""}
    if proxy_build:
        out["proxy_build"] = f"envoy {proxy_build}"
    if sidecar is not None:
        out["sidecar"] = sidecar
    if control_plane is not None:
        out["mesh_control_plane"] = control_plane
    return out


def profile(test_id: str, name: str, duration: str, clients: list[Message],
                extra: dict[str, Any] | None = None) -> Message:
    """PerformanceTestConfig: the performance profile."""
    return {"smp_version": SMP_VERSION, "id": test_id, "name": name,
            "labels": labels(extra or {}), "clients": clients, "duration": duration}


def client(load_generator: str, *, connections: int, rps: int, protocol: str = "PROTOCOL_HTTP",
           endpoint: str | None = None, headers: dict[str, str] | None = None,
           options: str = "") -> Message:
    """A PerformanceTestConfig.Client; `rps` 0: as fast as it goes."""
    out: Message = {"internal": True, "load_generator": load_generator, "protocol": protocol,
                    "connections": connections, "rps": rps}
    if endpoint:
        out["endpoint_urls"] = [endpoint]
    if headers:
        out["headers"] = headers
    if options:
        out["additional_options"] = options
    return out


def result(result_id: str, test_id: str, mesh_config_id: str, *, start: float, end: float,
           latencies_ms: dict[str, float] | None = None, actual_qps: float | None = None,
           extra: dict[str, Any] | None = None) -> Message:
    """PerformanceTestResult; `latencies_ms` keys of SMP's Latency (min, average, p50,
    p90, p99, max)."""
    out: Message = {"smp_version": SMP_VERSION, "id": result_id, "test_id": test_id,
                    "mesh_config_id": mesh_config_id, "env_id": "env",
                    "start_time": timestamp(start), "end_time": timestamp(end),
                    "labels": labels(extra or {})}
    if latencies_ms:
        out["latencies_ms"] = {k: round(v, 4) for k, v in latencies_ms.items() if v is not None}
    if actual_qps is not None:
        out["actual_qps"] = round(actual_qps, 3)
    return out


def document(env: Message, meshes: list[Message], tests: list[Message],
             results: list[Message]) -> dict[str, Any]:
    return dict(zip(KEYS, (env, meshes, tests, results), strict=True))
