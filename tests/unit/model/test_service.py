"""Service: its ports, their protocols and names.

Every rejection is checked for the dotted field path it reports and for a reason
that names the problem, because that text is what `gossamer apply` shows users.
"""

from __future__ import annotations

import pytest

from gossamer.model import parse_document
from tests.unit.model.documents import assert_error, parse_service, rejected, service_doc


@pytest.mark.parametrize("name", ["a", "web", "web-v2", "a" * 63, "0abc", "x9"])
def test_accepted_service_names(name: str) -> None:
    doc = service_doc()
    doc["metadata"]["name"] = name
    assert parse_document(doc).metadata.name == name


@pytest.mark.parametrize("port", [1, 65535])
def test_port_bounds_are_inclusive(port: int) -> None:
    doc = service_doc()
    doc["spec"]["ports"] = [{"port": port}]
    assert parse_service(doc).spec.ports[0].port == port


@pytest.mark.parametrize(
    ("port", "fragment"),
    [
        (0, "greater than or equal to 1"),
        (-80, "greater than or equal to 1"),
        (65536, "less than or equal to 65535"),
        ("http", "valid integer"),
        (80.5, "valid integer"),
        (None, "valid integer"),
    ],
)
def test_service_port_out_of_range(port: object, fragment: str) -> None:
    doc = service_doc()
    doc["spec"]["ports"][2]["port"] = port
    assert_error(doc, "spec.ports[2].port", fragment)


def test_duplicate_service_ports() -> None:
    doc = service_doc()
    doc["spec"]["ports"].append({"port": 9090, "protocol": "tcp"})
    assert_error(doc, "spec.ports", "port 9090", "twice")


@pytest.mark.parametrize("protocol", ["udp", "HTTP", "https", "", 1])
def test_unknown_protocol(protocol: object) -> None:
    doc = service_doc()
    doc["spec"]["ports"][1]["protocol"] = protocol
    assert_error(doc, "spec.ports[1].protocol", "'http', 'http2', 'grpc' or 'tcp'")


def test_service_needs_ports() -> None:
    doc = service_doc()
    doc["spec"]["ports"] = []
    assert_error(doc, "spec.ports", "at least 1")
    del doc["spec"]["ports"]
    assert_error(doc, "spec.ports", "required")
    doc["spec"]["ports"] = [{"port": p} for p in range(1, 34)]
    assert_error(doc, "spec.ports", "at most 32")


@pytest.mark.parametrize("name", ["HTTP", "web_port", "a" * 64, "-x"])
def test_bad_service_port_name(name: str) -> None:
    doc = service_doc()
    doc["spec"]["ports"][0]["name"] = name
    exc = rejected(doc)
    assert [e.path for e in exc.errors] == ["spec.ports[0].name"]
