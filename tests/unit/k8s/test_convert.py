"""k8s/convert.py: a cluster's objects as the documents the store gets (golden).

`GOSSAMER_UPDATE_GOLDEN=1 pytest tests/unit/k8s/test_convert.py` rewrites the golden file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from gossamer.k8s.convert import MESH_KINDS_GROUPS, Cluster, desired, endpoint_health, port_protocol
from gossamer.model.registry import parse_document

HERE = Path(__file__).parent
GOLDEN = HERE.parent / "golden" / "k8s" / "convert-cluster.json"


def cluster_of(objects: list[dict[str, Any]]) -> Cluster:
    cluster = Cluster()
    for obj in objects:
        api_version, kind = obj["apiVersion"], obj["kind"]
        group = api_version.rsplit("/", 1)[0]
        key = f"{group}/{kind}" if group in MESH_KINDS_GROUPS else kind
        meta = obj["metadata"]
        cluster.of(key)[(meta.get("namespace", ""), meta["name"])] = obj
    return cluster


def test_cluster_maps_to_the_golden_documents() -> None:
    objects = yaml.safe_load((HERE / "testdata" / "cluster.yaml").read_text())
    want = desired(cluster_of(objects))
    got = {"documents": {str(k): v for k, v in sorted(want.documents.items())},
           "problems": [str(p) for p in want.problems]}
    if os.environ.get("GOSSAMER_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    assert got == json.loads(GOLDEN.read_text())
    for doc in want.documents.values():  # what the store gets, apply takes
        parse_document(doc)


@pytest.mark.parametrize(("port", "protocol"), [
    ({"port": 80}, "tcp"),
    ({"port": 80, "name": "http"}, "http"),
    ({"port": 80, "name": "http-web"}, "http"),
    ({"port": 80, "name": "grpc-api"}, "grpc"),
    ({"port": 80, "name": "web", "appProtocol": "http"}, "http"),
    ({"port": 80, "name": "grpc", "appProtocol": "kubernetes.io/h2c"}, "http2"),
    ({"port": 443, "name": "https"}, "tcp"),
    ({"port": 80, "name": "http", "appProtocol": "example.com/custom"}, "http"),
    ({"port": 53, "name": "dns", "protocol": "UDP"}, None),
])
def test_port_protocol(port: dict[str, Any], protocol: str | None) -> None:
    assert port_protocol(port) == protocol


def test_a_pod_not_ready_in_any_slice_is_unhealthy() -> None:
    def eps(ready: bool | None) -> dict[str, Any]:
        cond = {} if ready is None else {"ready": ready}
        return {"metadata": {"namespace": "ns"}, "endpoints": [
            {"addresses": ["10.0.0.1"], "conditions": cond,
             "targetRef": {"kind": "Pod", "name": "p"}}]}

    assert endpoint_health([eps(None)]) == {("ns", "p"): "Healthy"}
    assert endpoint_health([eps(True), eps(False)]) == {("ns", "p"): "Unhealthy"}
    assert endpoint_health([eps(False), eps(True)]) == {("ns", "p"): "Unhealthy"}
