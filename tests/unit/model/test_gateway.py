"""Gateway, TLSRoute and TLS Secret documents: what apply takes and refuses, by field.

Every bad Gateway is refused with the field that is wrong, never with another error;
a Gateway that is valid but cannot be served as written (conflicting listeners, an
unsupported protocol, a missing certificate) is taken, and its status says why
(tests/unit/index/test_gateways.py)."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossamer.model import Gateway, InvalidResource, Secret, TLSRoute, parse_document
from gossamer.model.gateway import XFF_HOPS
from tests.gateway_docs import GW, gateway, parent, self_signed, tls_secret
from tests.model_helpers import nodes, set_path
from tests.unit.model.documents import assert_error


def test_a_gateway_with_every_listener_kind_is_taken() -> None:
    gw = parse_document(gateway())
    assert isinstance(gw, Gateway)
    assert [lis.protocol for lis in gw.spec.listeners] == ["HTTP", "HTTPS", "HTTPS", "TLS",
                                                           "TCP"]
    assert gw.setting(XFF_HOPS) == 0


@pytest.mark.parametrize(("path", "value", "error_path", "fragment"), [
    ("spec.listeners[0].tls", {"mode": "Passthrough"}, "spec.listeners[0].tls",
     "must not be specified for protocol HTTP"),
    ("spec.listeners[4].hostname", "x.example.com", "spec.listeners[4].hostname",
     "must not be specified for protocol TCP"),
    ("spec.listeners[1].tls", {"mode": "Passthrough"}, "spec.listeners[1].tls.mode",
     "must be Terminate for protocol HTTPS"),
    ("spec.listeners[1].tls", {"mode": "Terminate"}, "spec.listeners[1].tls.certificateRefs",
     "certificateRefs or options must be specified"),
    ("spec.listeners[3].tls", None, "spec.listeners[3].tls", "tls mode must be set"),
    ("spec.listeners[2].name", "a", "spec.listeners[2].name", "must be unique"),
    ("spec.listeners[2].hostname", "a.example.com", "spec.listeners[2]",
     "port, protocol and hostname must be unique"),
    ("spec.listeners[0].port", 0, "spec.listeners[0].port", "greater than or equal to 1"),
    ("spec.listeners[0].protocol", "http over smoke", "spec.listeners[0].protocol",
     "pattern"),
    ("spec.listeners[0].hostname", "Bad_Host", "spec.listeners[0].hostname",
     "not a valid hostname"),
    ("spec.listeners[0].name", "Web", "spec.listeners[0].name", "RFC 1123"),
    ("spec.gatewayClassName", "", "spec.gatewayClassName", "at least 1"),
    ("spec.listeners", [], "spec.listeners", "at least 1"),
    ("spec.listeners[0].allowedRoutes", {"namespaces": {"from": "Selector"}},
     "spec.listeners[0].allowedRoutes.namespaces.selector", "required when from is Selector"),
    ("spec.listeners[0].allowedRoutes", {"namespaces": {"from": "Selector", "selector": {
        "matchExpressions": [{"key": "team", "operator": "Near"}]}}},
     "spec.listeners[0].allowedRoutes.namespaces.selector.matchExpressions[0].operator",
     "'In', 'NotIn', 'Exists' or 'DoesNotExist'"),
    ("spec.listeners[0].allowedRoutes", {"namespaces": {"from": "Selector", "selector": {
        "matchExpressions": [{"key": "team", "operator": "In"}]}}},
     "spec.listeners[0].allowedRoutes.namespaces.selector.matchExpressions[0].values",
     "required for operator In"),
])
def test_a_bad_gateway_is_refused_with_its_field(path: str, value: Any, error_path: str,
                                                 fragment: str) -> None:
    doc = gateway()
    set_path(doc, path, value)
    assert_error(doc, error_path, fragment)


def test_gateway_settings_are_checked_annotations() -> None:
    doc = gateway(annotations={XFF_HOPS: "2"})
    gw = parse_document(doc)
    assert isinstance(gw, Gateway)
    assert gw.setting(XFF_HOPS) == 2
    assert_error(gateway(annotations={XFF_HOPS: "many"}), "metadata.annotations",
                 XFF_HOPS, "whole number from 0 to 16")


def test_a_listener_of_another_protocol_is_taken_for_the_status_to_report() -> None:
    doc = gateway(listeners=[{"name": "u", "port": 53, "protocol": "UDP"},
                             {"name": "x", "port": 80, "protocol": "example.com/quic"}])
    assert isinstance(parse_document(doc), Gateway)


def test_a_tls_secret_holds_a_certificate_and_its_key() -> None:
    cert, key = self_signed("a.example.com")
    secret = parse_document(tls_secret("a", cert, key))
    assert isinstance(secret, Secret)
    assert secret.certificate_pem == cert
    _, other = self_signed("b.example.com")
    assert_error(tls_secret("a", cert, other), "data.tls.key", "is not the key")
    bad = tls_secret("a", cert, key)
    bad["data"]["tls.crt"] = "not base64!"
    assert_error(bad, "data.tls.crt", "not valid base64")
    bad["data"]["tls.crt"] = base64.b64encode(b"-----BEGIN NOTHING-----").decode()
    assert_error(bad, "data.tls.crt", "not a PEM certificate")
    del bad["data"]["tls.key"]
    assert_error(bad, "data.tls.key", "required")
    opaque = tls_secret("a", cert, key) | {"type": "Opaque"}
    assert_error(opaque, "type", "kubernetes.io/tls")


def test_a_tlsroute_attaches_to_a_gateway_only() -> None:
    doc = {"apiVersion": f"{GW}/v1alpha2", "kind": "TLSRoute", "metadata": {"name": "t"},
           "spec": {"parentRefs": [parent("pass")], "hostnames": ["db.example.com"],
                    "rules": [{"backendRefs": [{"name": "db", "port": 5432}]}]}}
    assert isinstance(parse_document(doc), TLSRoute)
    service_parent = copy.deepcopy(doc)
    service_parent["spec"]["parentRefs"] = [{"group": "", "kind": "Service", "name": "db"}]
    assert_error(service_parent, "spec.parentRefs[0].kind", "attaches to a Gateway")


WORDS = ["", "HTTP", "HTTPS", "TLS", "TCP", "UDP", "Terminate", "Passthrough", "Secret",
         "a.example.com", "*.example.com", "*", "All", "Same", "Selector", "None", 0, 80,
         65536, -1, True, None, [], {}, "x" * 300, "a", "web"]


@st.composite
def mutated_gateways(draw: st.DrawFn) -> dict[str, Any]:
    doc = gateway()
    for _ in range(draw(st.integers(1, 3))):
        places = [loc for loc in nodes(doc["spec"]) if loc]
        if not places:
            break
        loc = draw(st.sampled_from(places))
        node: Any = doc["spec"]
        for part in loc[:-1]:
            node = node[part]
        if isinstance(node, dict) and draw(st.booleans()):
            del node[loc[-1]]
        else:
            node[loc[-1]] = draw(st.sampled_from(WORDS))
    return doc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_gateways())
def test_a_malformed_gateway_is_refused_by_field_or_taken(doc: dict[str, Any]) -> None:
    """Never another exception; every refusal names a field under spec."""
    errors = []
    try:
        parse_document(doc)
    except InvalidResource as exc:
        errors = exc.errors or [None]
    assert all(e is not None and e.path.startswith("spec") for e in errors), errors


def test_a_grpcroute_takes_a_gateway_parent() -> None:
    doc = {"apiVersion": f"{GW}/v1", "kind": "GRPCRoute", "metadata": {"name": "g"},
           "spec": {"parentRefs": [parent("http")],
                    "rules": [{"backendRefs": [{"name": "rpc", "port": 80}]}]}}
    assert parse_document(doc).spec.parent_refs[0].is_gateway


def test_a_reference_grant_and_a_namespace_are_checked_by_field() -> None:
    grant = {"apiVersion": f"{GW}/v1beta1", "kind": "ReferenceGrant",
             "metadata": {"name": "g", "namespace": "store"},
             "spec": {"from": [{"group": GW, "kind": "HTTPRoute", "namespace": "shop"}],
                      "to": [{"group": "", "kind": "Service"}]}}
    parsed = parse_document(grant)
    assert parsed.key.namespace == "store"
    assert_error({**grant, "spec": {**grant["spec"], "to": []}}, "spec.to", "at least 1")
    assert_error({**grant, "spec": {"from": [{"group": GW, "kind": "HTTPRoute"}],
                                    "to": grant["spec"]["to"]}},
                 "spec.from[0].namespace", "required")
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop",
                                                               "labels": {"team": "a"}}}
    assert parse_document(ns).key.namespace == "gossamer-system"
    assert_error({**ns, "metadata": {"name": "Shop"}}, "metadata.name", "RFC 1123")
    assert_error({**ns, "metadata": {"name": "a.b"}}, "metadata.name", "DNS label")
    assert_error({**ns, "metadata": {"name": "shop", "namespace": "x"}},
                 "metadata.namespace", "cluster-wide")
