"""metadata: names, namespaces, labels and resourceVersion, as every kind takes them.

Every rejection is checked for the dotted field path it reports and for a reason
that names the problem, because that text is what `gossamer apply` shows users.
"""

from __future__ import annotations

import pytest

from gossamer.model import parse_document
from tests.unit.model.documents import assert_error, edit, parse_service, service_doc, workload_doc


@pytest.mark.parametrize("name", ["catalog-1.shop", "a.b.c", "a" * 253])
def test_workload_names_may_be_dns_subdomains(name: str) -> None:
    doc = workload_doc()
    doc["metadata"]["name"] = name
    assert parse_document(doc).metadata.name == name


@pytest.mark.parametrize(
    "labels",
    [
        {"app": "x"},
        {"example.com/app": "x"},
        {"a": ""},
        {"A_b.c-d": "V_1.2-3"},
        {"k" * 63: "v" * 63},
        {"a.b/" + "k" * 63: "v"},
    ],
)
def test_accepted_labels(labels: dict[str, str]) -> None:
    doc = service_doc()
    doc["metadata"]["labels"] = labels
    doc["spec"]["selector"] = labels
    svc = parse_service(doc)
    assert svc.metadata.labels == labels
    assert svc.spec.selector == labels


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("Web", "lowercase"),
        ("web_1", "lowercase"),
        ("-web", "starting and ending"),
        ("web-", "starting and ending"),
        ("web\n", "lowercase"),
        ("a..b", "lowercase"),
        ("", "at least 1"),
        ("a" * 254, "at most 253"),
    ],
)
def test_bad_names(name: str, fragment: str) -> None:
    doc = workload_doc()
    doc["metadata"]["name"] = name
    assert_error(doc, "metadata.name", fragment)


@pytest.mark.parametrize("name", ["catalog.shop", "a" * 64])
def test_service_name_must_be_dns_label(name: str) -> None:
    doc = service_doc()
    doc["metadata"]["name"] = name
    assert_error(doc, "metadata.name", "Service name must be a DNS label")


@pytest.mark.parametrize(
    ("namespace", "fragment"),
    [
        ("Shop", "DNS label"),
        ("shop.eu", "DNS label"),
        ("-shop", "DNS label"),
        ("shop\n", "DNS label"),
        ("", "at least 1"),
        ("a" * 64, "at most 63"),
        (7, "valid string"),
    ],
)
def test_bad_namespaces(namespace: object, fragment: str) -> None:
    doc = service_doc()
    doc["metadata"]["namespace"] = namespace
    assert_error(doc, "metadata.namespace", fragment)


@pytest.mark.parametrize(
    "key",
    [
        "-app",
        "app-",
        "has space",
        "Example.com/app",
        "a/b/c",
        "/app",
        "app/",
        "",
        "k" * 64,
        "a" * 300 + "/" + "k" * 20,
        "app\n",
    ],
)
@pytest.mark.parametrize("where", ["metadata.labels", "spec.selector"])
def test_bad_label_keys(key: str, where: str) -> None:
    doc = service_doc()
    edit(doc, where, {key: "v"})
    assert_error(doc, where, "label key", repr(key))


@pytest.mark.parametrize("value", ["-v", "v-", "has space", "a/b", "v" * 64, "v\n"])
@pytest.mark.parametrize("where", ["metadata.labels", "spec.selector"])
def test_bad_label_values(value: str, where: str) -> None:
    doc = service_doc()
    edit(doc, where, {"app": value})
    assert_error(doc, where, "label value", repr(value), "'app'")


def test_label_values_must_be_strings() -> None:
    doc = service_doc()
    doc["metadata"]["labels"] = {"replicas": 3}
    assert_error(doc, "metadata.labels.replicas", "valid string")
    doc = service_doc()
    doc["metadata"]["annotations"] = {"note": None}
    assert_error(doc, "metadata.annotations.note", "valid string")


def test_resource_version_must_be_a_string() -> None:
    doc = service_doc()
    doc["metadata"]["resourceVersion"] = 12
    assert_error(doc, "metadata.resourceVersion", "valid string")


@pytest.mark.parametrize("version", ["abc", "-1", " 4", "4 ", "1.0", "", "\uff14\uff12", "1" * 19])
def test_resource_version_must_be_a_revision_number(version: str) -> None:
    # The API turns it into the store's expected revision, an integer.
    doc = service_doc()
    doc["metadata"]["resourceVersion"] = version
    assert_error(doc, "metadata.resourceVersion", repr(version), "not a revision")


@pytest.mark.parametrize("version", ["0", "1", "42", "9" * 18])
def test_resource_version_accepts_revision_numbers(version: str) -> None:
    doc = service_doc()
    doc["metadata"]["resourceVersion"] = version
    assert parse_service(doc).metadata.resource_version == version
