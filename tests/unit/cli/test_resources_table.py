"""`gossamer get`'s table: which kinds show a VIRTUAL IP column, and what it shows."""

from __future__ import annotations

from gossamer.cli.resources import _wildcard, table_columns


def test_services_and_external_services_show_their_virtual_ip() -> None:
    assert "VIRTUAL IP" in table_columns("Service")
    assert "VIRTUAL IP" in table_columns("ExternalService")
    assert "VIRTUAL IP" not in table_columns("HTTPRoute")


def test_a_wildcard_external_service_has_no_address_to_wait_for() -> None:
    assert _wildcard({"spec": {"hosts": ["*.wild.example"]}})
    assert not _wildcard({"spec": {"hosts": ["api.payments.example"]}})
    assert not _wildcard({"kind": "Service", "spec": {"ports": []}})
