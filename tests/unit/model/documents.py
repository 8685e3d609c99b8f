"""Documents and helpers the model tests share: a full Service, Workload and HTTPRoute,
and editing, parsing and asserting on a refusal."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from gossamer.model import FieldError, HTTPRoute, InvalidResource, Service, Workload, parse_document

MESH = "mesh.gossamer.dev/v1alpha1"
GATEWAY = "gateway.networking.k8s.io/v1"


def service_doc() -> dict[str, Any]:
    return {
        "apiVersion": MESH,
        "kind": "Service",
        "metadata": {
            "name": "catalog",
            "namespace": "shop",
            "labels": {"app": "catalog", "gossamer.dev/tier": "backend"},
            "annotations": {"owner": "team-shop", "free text": "anything: goes"},
        },
        "spec": {
            "selector": {"app": "catalog"},
            "ports": [
                {"port": 80, "name": "http", "protocol": "http"},
                {"port": 9090, "name": "grpc", "protocol": "grpc"},
                {"port": 8081, "protocol": "http2"},
                {"port": 5432, "name": "db", "protocol": "tcp"},
            ],
        },
    }


def workload_doc() -> dict[str, Any]:
    return {
        "apiVersion": MESH,
        "kind": "Workload",
        "metadata": {"name": "catalog-1", "namespace": "shop", "labels": {"app": "catalog"}},
        "spec": {
            "service": "catalog",
            "address": "10.0.0.7",
            "port": 15006,
            "appPort": 8080,
            "health": "Healthy",
            "proxy": "sidecar~10.0.0.7~catalog-1.shop",
            "ttlSeconds": 30,
        },
    }


def route_doc() -> dict[str, Any]:
    """An HTTPRoute that uses every field at least once."""
    return {
        "apiVersion": GATEWAY,
        "kind": "HTTPRoute",
        "metadata": {"name": "catalog-canary", "namespace": "shop"},
        "spec": {
            "parentRefs": [
                {"group": "", "kind": "Service", "name": "catalog", "port": 80},
                {"name": "catalog-alias", "namespace": "shop", "sectionName": "http"},
            ],
            "hostnames": ["catalog.shop.example.com", "*.example.com"],
            "rules": [
                {
                    "name": "api",
                    "matches": [
                        {
                            "path": {"type": "PathPrefix", "value": "/api"},
                            "headers": [
                                {"name": "x-env", "value": "canary"},
                                {
                                    "type": "RegularExpression",
                                    "name": "user-agent",
                                    "value": "^curl/.*",
                                },
                            ],
                            "queryParams": [
                                {"name": "debug", "value": "1"},
                                {"type": "RegularExpression", "name": "v", "value": "[0-9]+"},
                            ],
                            "method": "GET",
                        },
                        {"path": {"type": "PathPrefix", "value": "/v2/api/"}},
                    ],
                    "filters": [
                        {
                            "type": "RequestHeaderModifier",
                            "requestHeaderModifier": {
                                "set": [{"name": "x-route", "value": "canary"}],
                                "add": [{"name": "x-trace", "value": "on"}],
                                "remove": ["x-internal"],
                            },
                        },
                        {
                            "type": "ResponseHeaderModifier",
                            "responseHeaderModifier": {
                                "set": [{"name": "cache-control", "value": "no-store"}]
                            },
                        },
                        {
                            "type": "URLRewrite",
                            "urlRewrite": {
                                "hostname": "catalog.internal",
                                "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"},
                            },
                        },
                    ],
                    "backendRefs": [
                        {"name": "catalog", "port": 80, "weight": 90},
                        {
                            "group": "core",
                            "kind": "Service",
                            "name": "catalog-v2",
                            "namespace": "shop",
                            "port": 8080,
                            "weight": 10,
                        },
                        {"name": "catalog-v3", "weight": 0},
                    ],
                    "timeouts": {"request": "10s", "backendRequest": "2s500ms"},
                },
                {
                    "name": "legacy",
                    "matches": [{"path": {"type": "Exact", "value": "/old"}}],
                    "filters": [
                        {
                            "type": "RequestRedirect",
                            "requestRedirect": {
                                "scheme": "https",
                                "hostname": "new.example.com",
                                "port": 8443,
                                "path": {"type": "ReplaceFullPath", "replaceFullPath": "/new"},
                                "statusCode": 301,
                            },
                        }
                    ],
                },
                {
                    "matches": [{"path": {"type": "RegularExpression", "value": "^/v[0-9]+/.*"}}],
                    "filters": [
                        {
                            "type": "URLRewrite",
                            "urlRewrite": {
                                "path": {"type": "ReplaceFullPath", "replaceFullPath": "/latest"}
                            },
                        }
                    ],
                    "backendRefs": [{"name": "catalog"}],
                },
                {"backendRefs": [{"name": "catalog"}]},
                {"name": "broken-on-purpose"},
            ],
        },
    }


def minimal_docs() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": MESH,
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"ports": [{"port": 80}]},
        },
        {
            "apiVersion": MESH,
            "kind": "Workload",
            "metadata": {"name": "web-1"},
            "spec": {"service": "web", "address": "::1", "port": 8080},
        },
        {
            "apiVersion": GATEWAY,
            "kind": "HTTPRoute",
            "metadata": {"name": "r"},
            "spec": {"parentRefs": [{"name": "web"}]},
        },
    ]


FULL = {"service": service_doc, "workload": workload_doc, "route": route_doc}
_SEGMENT = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


def walk(path: str) -> Iterator[str | int]:
    pos = 0
    while pos < len(path):
        m = _SEGMENT.match(path, pos)
        assert m, f"bad test path {path!r}"
        yield m.group(1) if m.group(1) is not None else int(m.group(2))
        pos = m.end()


def edit(doc: dict[str, Any], path: str, value: Any = ..., *, delete: bool = False) -> None:
    """Set (or delete) the node at a dotted path such as `spec.rules[0].matches`."""
    parts = list(walk(path))
    node: Any = doc
    for part in parts[:-1]:
        node = node[part]
    if delete:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value


def rejected(doc: object) -> InvalidResource:
    with pytest.raises(InvalidResource) as info:
        parse_document(doc)
    assert info.value.errors, "InvalidResource without errors"
    return info.value


def parse_route(doc: dict[str, Any]) -> HTTPRoute:
    route = parse_document(doc)
    assert isinstance(route, HTTPRoute)
    return route


def parse_service(doc: dict[str, Any]) -> Service:
    svc = parse_document(doc)
    assert isinstance(svc, Service)
    return svc


def parse_workload(doc: dict[str, Any]) -> Workload:
    wl = parse_document(doc)
    assert isinstance(wl, Workload)
    return wl


def assert_error(doc: object, path: str, *fragments: str) -> FieldError:
    """The document is refused with an error at exactly `path` naming every fragment."""
    exc = rejected(doc)
    at = [e for e in exc.errors if e.path == path]
    assert at, f"no error at {path!r}; got {[str(e) for e in exc.errors]}"
    reason = at[0].reason
    for fragment in fragments:
        assert fragment.lower() in reason.lower(), f"{fragment!r} not in {reason!r}"
    return at[0]


def rule_doc(rule: dict[str, Any]) -> dict[str, Any]:
    doc = route_doc()
    doc["spec"]["rules"] = [rule]
    return doc


def match_doc(match: dict[str, Any]) -> dict[str, Any]:
    return rule_doc({"matches": [match], "backendRefs": [{"name": "catalog"}]})


def filter_doc(*filters: dict[str, Any], **rule: Any) -> dict[str, Any]:
    body = {
        "matches": [{"path": {"type": "PathPrefix", "value": "/a"}}],
        "backendRefs": [{"name": "catalog"}],
    }
    body.update(rule)
    body["filters"] = list(filters)
    return rule_doc(body)


def header_filter(kind: str = "RequestHeaderModifier", **mod: Any) -> dict[str, Any]:
    field = kind[0].lower() + kind[1:]
    return {"type": kind, field: mod}


def timeouts_doc(**timeouts: Any) -> dict[str, Any]:
    return rule_doc({"backendRefs": [{"name": "catalog"}], "timeouts": timeouts})
