"""Workload: its address, port, health and lease.

Every rejection is checked for the dotted field path it reports and for a reason
that names the problem, because that text is what `gossamer apply` shows users.
"""

from __future__ import annotations

import pytest

from tests.unit.model.documents import assert_error, parse_workload, workload_doc


@pytest.mark.parametrize(
    "address", ["10.0.0.1", "0.0.0.0", "255.255.255.255", "::1", "fd00::7", "fe80::1%eth0"]
)
def test_accepted_addresses(address: str) -> None:
    doc = workload_doc()
    doc["spec"]["address"] = address
    assert parse_workload(doc).spec.address == address


@pytest.mark.parametrize("ttl", [0, 86400])
def test_ttl_bounds(ttl: int) -> None:
    doc = workload_doc()
    doc["spec"]["ttlSeconds"] = ttl
    assert parse_workload(doc).spec.ttl_seconds == ttl


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.300",
        "10.0.0",
        "catalog.shop",
        "",
        " 10.0.0.1",
        "10.0.0.1\n",
        "10.0.0.1/32",
        "10.0.0.1:80",
        "::g",
        "10.0.0.1%eth0",
    ],
)
def test_bad_ip_address(address: str) -> None:
    doc = workload_doc()
    doc["spec"]["address"] = address
    assert_error(doc, "spec.address", repr(address), "not an IPv4 or IPv6 address")


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("port", 0, "greater than or equal to 1"),
        ("port", 70000, "less than or equal to 65535"),
        ("appPort", 0, "greater than or equal to 1"),
        ("appPort", 65536, "less than or equal to 65535"),
        ("ttlSeconds", -1, "greater than or equal to 0"),
        ("ttlSeconds", 86401, "less than or equal to 86400"),
        ("health", "healthy", "'Healthy', 'Unhealthy' or 'Unknown'"),
        ("health", "Dead", "'Healthy', 'Unhealthy' or 'Unknown'"),
        ("service", "Catalog", "Service name"),
        ("service", "catalog.shop", "Service name"),
        ("service", "", "Service name"),
        ("proxy", 5, "valid string"),
    ],
)
def test_bad_workload_fields(field: str, value: object, fragment: str) -> None:
    doc = workload_doc()
    doc["spec"][field] = value
    assert_error(doc, f"spec.{field}", fragment)


@pytest.mark.parametrize("field", ["service", "address", "port"])
def test_workload_required_fields(field: str) -> None:
    doc = workload_doc()
    del doc["spec"][field]
    assert_error(doc, f"spec.{field}", "required")
