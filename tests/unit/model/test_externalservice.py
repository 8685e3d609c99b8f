"""ExternalService validation: good documents round-trip, bad ones are refused at
apply with the field and the reason, and no mutation of a good one crashes."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossamer.model import ExternalService, InvalidResource, kind_for, parse_document
from gossamer.model.externalservice import ExternalProtocol
from tests.model_helpers import jsonish, mutate, parses_or_is_rejected_cleanly, set_path

API = "mesh.gossamer.dev/v1alpha1"
GOOD: dict[str, Any] = {
    "apiVersion": API, "kind": "ExternalService",
    "metadata": {"name": "payments", "namespace": "shop"},
    "spec": {"hosts": ["api.payments.example", "eu.payments.example"],
             "ports": [{"port": 80, "protocol": "HTTP", "targetPort": 443, "name": "http"},
                       {"port": 5432, "protocol": "TCP"}],
             "endpoints": ["198.18.9.1", "lb.payments.example"],
             "virtualIP": "10.96.5.5",
             "tls": {"mode": "ORIGINATE", "caBundle": {"file": "/etc/ca.pem"},
                     "sni": "api.payments.example",
                     "subjectAltNames": ["api.payments.example"],
                     "clientCertificate": {"certificateFile": "/etc/c.pem",
                                           "privateKeyFile": "/etc/k.pem"}},
             "timeouts": {"connect": "2s", "request": "1m"}}}


def _with(path: str, value: Any) -> dict[str, Any]:
    return set_path(copy.deepcopy(GOOD), path, value)


def test_a_good_external_service_round_trips() -> None:
    res = parse_document(GOOD)
    assert isinstance(res, ExternalService)
    assert res.spec.ports[0].upstream_port == 443
    assert res.spec.ports[1].upstream_port == 5432
    assert res.spec.ports[0].protocol is ExternalProtocol.HTTP
    assert parse_document(res.to_document()) == res
    assert kind_for("es") is ExternalService
    assert kind_for("externalservices") is ExternalService


@pytest.mark.parametrize(("path", "value", "field", "reason"), [
    ("metadata.name", "pay.ments", "metadata.name", "DNS label"),
    ("spec.hosts", [], "spec.hosts", "at least 1"),
    ("spec.hosts[0]", "API.payments.example", "spec.hosts[0]", "not a host name"),
    ("spec.hosts[0]", "localhost", "spec.hosts[0]", "at least two"),
    ("spec.hosts[0]", "198.18.0.1", "spec.hosts[0]", "is an IP address"),
    ("spec.hosts[0]", "*.payments.example", "spec.hosts", "wildcard"),
    ("spec.hosts[1]", "api.payments.example", "spec.hosts", "listed twice"),
    ("spec.ports[0].port", 0, "spec.ports[0].port", "greater than or equal to 1"),
    ("spec.ports[0].protocol", "UDP", "spec.ports[0].protocol", "HTTP"),
    ("spec.ports[0].targetPort", 70000, "spec.ports[0].targetPort", "65535"),
    ("spec.ports[1].port", 80, "spec.ports", "listed twice"),
    ("spec.ports[1].protocol", "HTTPS", "spec.ports[1].protocol", "cannot originate TLS"),
    ("spec.endpoints[0]", "198.18.9.1:443", "spec.endpoints[0]", "neither an IPv4"),
    ("spec.virtualIP", "127.0.0.1", "spec.virtualIP", "cannot be a virtual IP"),
    ("spec.tls.mode", "PASSTHROUGH", "spec.tls.mode", "ORIGINATE"),
    ("spec.tls.caBundle", {}, "spec.tls.caBundle", "exactly one of pem and file"),
    ("spec.tls.caBundle.pem", "hello", "spec.tls.caBundle.pem", "not PEM"),
    ("spec.tls.caBundle", {"pem": "-----BEGIN CERTIFICATE-----\nxx\n"},
     "spec.tls.caBundle.pem", "not PEM certificates"),
    ("spec.tls.caBundle.file", "ca.pem", "spec.tls.caBundle.file", "absolute path"),
    ("spec.tls.sni", "*.payments.example", "spec.tls.sni", "not a host name"),
    ("spec.tls.subjectAltNames[0]", "no spaces.example", "spec.tls.subjectAltNames[0]",
     "not a host name"),
    ("spec.tls.clientCertificate.privateKeyFile", "k.pem",
     "spec.tls.clientCertificate.privateKeyFile", "absolute path"),
    ("spec.timeouts.connect", "2 seconds", "spec.timeouts.connect", "not a duration"),
    ("spec.tls.verify", False, "spec.tls.verify", "unknown field"),
])
def test_a_bad_external_service_is_refused_with_field_and_reason(
        path: str, value: Any, field: str, reason: str) -> None:
    with pytest.raises(InvalidResource) as err:
        parse_document(_with(path, value))
    found = {e.path: e.reason for e in err.value.errors}
    assert field in found, found
    assert reason in found[field], found


VALUES = jsonish(["HTTP", "HTTPS", "TLS", "TCP", "GRPC", "ORIGINATE", "api.example",
                  "*.example.com", "/etc/x.pem", "10s", "198.18.0.1", "a..b", "", "0"],
                 70000)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_external_services_parse_or_are_rejected_cleanly(data: st.DataObject) -> None:
    doc = copy.deepcopy(GOOD)
    mutate(data.draw, doc, VALUES)
    parses_or_is_rejected_cleanly(doc)


def _resilience(target: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "ResiliencePolicy", "metadata": {"name": "p"},
            "spec": {"targetRef": target, **spec}}


@pytest.mark.parametrize(("target", "spec", "field", "reason"), [
    ({"kind": "Gizmo", "name": "payments"}, {"timeouts": {"request": "1s"}},
     "spec.targetRef.kind", "or an ExternalService"),
    ({"group": "core", "kind": "ExternalService", "name": "payments"},
     {"timeouts": {"request": "1s"}}, "spec.targetRef.kind", "ExternalService"),
    ({"kind": "ExternalService", "name": "pay.ments"}, {"timeouts": {"request": "1s"}},
     "spec.targetRef.name", "ExternalService name"),
    ({"kind": "ExternalService", "name": "payments"},
     {"hedging": {"delay": "10ms"}},
     "spec.hedging", "does not apply to an ExternalService"),
    ({"kind": "ExternalService", "name": "payments"},
     {"adaptiveConcurrency": {"minRtt": "10ms"}},
     "spec.adaptiveConcurrency", "does not apply to an ExternalService"),
])
def test_a_resilience_policy_on_an_external_service_is_checked(
        target: dict[str, Any], spec: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(InvalidResource) as err:
        parse_document(_resilience(target, **spec))
    found = {e.path: e.reason for e in err.value.errors}
    assert field in found, found
    assert reason in found[field], found


def test_a_resilience_policy_may_target_an_external_service() -> None:
    res = parse_document(_resilience({"group": "mesh.gossamer.dev", "kind": "ExternalService",
                                      "name": "payments"}, retries={"attempts": 2}))
    assert res.spec.target_ref.external  # type: ignore[attr-defined]


WILD: dict[str, Any] = {
    "apiVersion": API, "kind": "ExternalService", "metadata": {"name": "wild"},
    "spec": {"hosts": ["*.wild.example"], "ports": [{"port": 80, "protocol": "HTTP"}]}}


@pytest.mark.parametrize(("path", "value", "field", "reason"), [
    ("spec.hosts", ["*.wild.example", "api.wild.example"], "spec.hosts", "cannot mix"),
    ("spec.ports[0].protocol", "TCP", "spec.ports[0].protocol", "HTTP or GRPC only"),
    ("spec.endpoints", ["198.18.0.1"], "spec.endpoints", "not with wildcard hosts"),
    ("spec.virtualIP", "10.96.0.9", "spec.virtualIP", "not with wildcard hosts"),
    ("spec.egress", {"via": "egress"}, "spec.egress", "not with wildcard hosts"),
    ("spec.tls", {"mode": "ORIGINATE", "caBundle": {"file": "/ca.pem"}, "sni": "a.b.c"},
     "spec.tls", "leave sni and subjectAltNames out"),
])
def test_a_bad_wildcard_external_service_is_refused(path: str, value: Any, field: str,
                                                    reason: str) -> None:
    with pytest.raises(InvalidResource) as err:
        parse_document(set_path(copy.deepcopy(WILD), path, value))
    found = {e.path: e.reason for e in err.value.errors}
    assert field in found, found
    assert reason in found[field], found


def test_a_wildcard_external_service_parses() -> None:
    res = parse_document(WILD)
    assert isinstance(res, ExternalService)
    assert res.spec.wildcard
