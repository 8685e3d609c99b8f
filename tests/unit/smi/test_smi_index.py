"""The index reads SMI resources as what they map to (smi/expand.py): the native
routes and policies appear, and each SMI resource gets an Accepted condition."""

from __future__ import annotations

from gossamer.index.build import build_index
from gossamer.model import HTTPRoute, ResourceKey
from gossamer.model.registry import parse_documents

SMI = """
apiVersion: mesh.gossamer.dev/v1alpha1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80, protocol: http}]}
---
apiVersion: mesh.gossamer.dev/v1alpha1
kind: Service
metadata: {name: web-v1}
spec: {ports: [{port: 80, protocol: http}]}
---
apiVersion: mesh.gossamer.dev/v1alpha1
kind: Service
metadata: {name: web-v2}
spec: {ports: [{port: 80, protocol: http}]}
---
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: good}
spec:
  service: web
  backends: [{service: web-v1, weight: 1}, {service: web-v2, weight: 1}]
---
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: dangling}
spec:
  service: web
  matches: [{kind: HTTPRouteGroup, name: missing}]
  backends: [{service: web-v1, weight: 1}]
"""


def test_smi_takes_effect_as_native_resources_with_conditions() -> None:
    index = build_index(parse_documents(SMI), revision=1)
    routes = {r.metadata.name for r in index.routes if isinstance(r, HTTPRoute)}
    assert routes == {"smi-good"}
    good = index.conditions[ResourceKey("TrafficSplit", "default", "good")]
    assert [(c.type, c.status) for c in good] == [("Accepted", "True")]
    bad = index.conditions[ResourceKey("TrafficSplit", "default", "dangling")]
    assert [(c.type, c.status, c.reason) for c in bad] == [("Accepted", "False", "Invalid")]
    assert "spec.matches[0].name" in (bad[0].message or "")
