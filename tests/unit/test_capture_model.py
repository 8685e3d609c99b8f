"""Issue 21's resource fields: the Mesh kind, Service.spec.virtualIP and
Sidecar.spec.outboundTrafficPolicy, each refused at apply with field and reason."""

from __future__ import annotations

from typing import Any

import pytest

from gossamer.model import InvalidResource, Mesh, Service, Sidecar, kind_for, parse_document
from gossamer.model.mesh import OutboundMode

API = "mesh.gossamer.dev/v1alpha1"


def doc(kind: str, spec: dict[str, Any] | None, **meta: str) -> dict[str, Any]:
    out: dict[str, Any] = {"apiVersion": API, "kind": kind, "metadata": meta}
    if spec is not None:
        out["spec"] = spec
    return out


def errors(document: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(InvalidResource) as err:
        parse_document(document)
    return {e.path: e.reason for e in err.value.errors}


def test_the_mesh_is_one_cluster_wide_resource_with_defaults() -> None:
    mesh = parse_document(doc("Mesh", None, name="default"))
    assert isinstance(mesh, Mesh)
    assert mesh.metadata.namespace == "gossamer-system"
    assert mesh.spec.outbound_traffic_policy.mode is OutboundMode.ALLOW_ANY
    assert mesh.spec.dns_domain == "mesh"
    assert kind_for("meshes") is Mesh
    assert Mesh.CLUSTER_NAMESPACE == "gossamer-system"
    again = parse_document(mesh.to_document())  # as `get -o yaml` shows it
    assert again == mesh


@pytest.mark.parametrize(("meta", "spec", "field", "reason"), [
    ({"name": "prod"}, {}, "metadata.name", "must be named 'default'"),
    ({"name": "default", "namespace": "shop"}, {}, "metadata.namespace", "leave the namespace"),
    ({"name": "default"}, {"outboundTrafficPolicy": {"mode": "DENY"}},
     "spec.outboundTrafficPolicy.mode", "REGISTRY_ONLY"),
    ({"name": "default"}, {"dnsDomain": "Mesh.Local."}, "spec.dnsDomain", "not a DNS domain"),
    ({"name": "default"}, {"dnsDomain": "cluster.local"}, "spec.dnsDomain", "already one"),
    ({"name": "default"}, {"dns": "x"}, "spec.dns", "unknown field"),
])
def test_a_bad_mesh_is_refused(meta: dict[str, str], spec: dict[str, Any], field: str,
                               reason: str) -> None:
    found = errors(doc("Mesh", spec, **meta))
    assert field in found, found
    assert reason in found[field], found


def test_a_service_may_set_its_virtual_ip() -> None:
    svc = parse_document(doc("Service", {"ports": [{"port": 80}], "virtualIP": "10.96.0.10"},
                             name="catalog"))
    assert isinstance(svc, Service)
    assert svc.spec.virtual_ip == "10.96.0.10"
    assert svc.to_document()["spec"]["virtualIP"] == "10.96.0.10"


@pytest.mark.parametrize(("value", "reason"), [
    ("fd00::1", "not an IPv4 address"), ("10.0.0", "not an IPv4 address"),
    ("010.0.0.1", "not an IPv4 address"), ("127.0.0.5", "never redirected"),
    ("0.0.0.0", "never redirected"), ("224.0.0.1", "never redirected"),
    ("169.254.1.1", "never redirected"), ("255.255.255.255", "never redirected"),
])
def test_a_bad_virtual_ip_is_refused(value: str, reason: str) -> None:
    found = errors(doc("Service", {"ports": [{"port": 80}], "virtualIP": value}, name="x"))
    assert reason in found["spec.virtualIP"], found


def test_a_sidecar_may_set_only_the_outbound_policy_and_then_scopes_nothing() -> None:
    sc = parse_document(doc("Sidecar", {"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}},
                            name="strict", namespace="shop"))
    assert isinstance(sc, Sidecar)
    assert sc.spec.outbound_traffic_policy is not None
    assert sc.spec.outbound_traffic_policy.mode is OutboundMode.REGISTRY_ONLY
    assert sc.host_patterns() == [("*", "*")]


def test_a_sidecar_with_neither_egress_nor_policy_is_refused() -> None:
    found = errors(doc("Sidecar", {}, name="empty"))
    assert "required unless outboundTrafficPolicy" in found["spec.egress"], found
