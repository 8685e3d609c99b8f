"""k8s/controller.py k8s_status: the index's status in each kind's own shape, with
observedGeneration and a lastTransitionTime that moves only with the status."""

from __future__ import annotations

from typing import Any

from gossamer.k8s.controller import k8s_status

GW = "gateway.networking.k8s.io"
OLD = "2026-01-01T00:00:00Z"


def _cond(kind: str, status: str) -> dict[str, Any]:
    return {"type": kind, "status": status, "reason": kind, "message": ""}


def test_a_gateway_keeps_its_own_conditions_and_its_listeners() -> None:
    obj = {"apiVersion": f"{GW}/v1", "kind": "Gateway",
           "metadata": {"name": "edge", "namespace": "shop", "generation": 3},
           "status": {"conditions": [{**_cond("Accepted", "True"), "lastTransitionTime": OLD}],
                      "listeners": [{"name": "https", "conditions": [
                          {**_cond("Programmed", "False"), "lastTransitionTime": OLD}]}]}}
    index = {"conditions": [_cond("Accepted", "True"), _cond("Programmed", "True")],
             "listeners": [{"name": "https", "attachedRoutes": 1, "supportedKinds": [],
                            "conditions": [_cond("Programmed", "True")]}]}
    out = k8s_status(index, obj)
    assert "parents" not in out
    accepted, programmed = out["conditions"]
    assert accepted["lastTransitionTime"] == OLD  # still True: unchanged
    assert programmed["lastTransitionTime"] != OLD
    assert accepted["observedGeneration"] == 3
    (listener,) = out["listeners"]
    assert listener["attachedRoutes"] == 1
    assert listener["conditions"][0]["observedGeneration"] == 3
    assert listener["conditions"][0]["lastTransitionTime"] != OLD  # False -> True


def test_a_route_gets_the_gateways_parent_status_and_the_meshs() -> None:
    gw_ref = {"group": GW, "kind": "Gateway", "name": "edge", "sectionName": "https"}
    svc_ref = {"group": "", "kind": "Service", "name": "echo", "port": 80}
    obj = {"apiVersion": f"{GW}/v1", "kind": "HTTPRoute",
           "metadata": {"name": "r", "namespace": "shop", "generation": 2},
           "spec": {"parentRefs": [gw_ref, svc_ref]}}
    index = {"conditions": [_cond("Accepted", "True")],
             "parents": [{"parentRef": {**gw_ref, "namespace": "shop"},
                          "controllerName": "gateway.gossamer.dev/controller",
                          "conditions": [_cond("Accepted", "False")]}]}
    gw, svc = k8s_status(index, obj)["parents"]
    assert gw["parentRef"] == gw_ref
    assert gw["controllerName"] == "gateway.gossamer.dev/controller"
    assert gw["conditions"][0]["status"] == "False"
    assert svc["controllerName"] == "gossamer.dev/mesh"
    assert svc["conditions"][0]["status"] == "True"
    assert svc["conditions"][0]["observedGeneration"] == 2
