"""The security policy kinds at the model edge: good documents parse and round-trip,
bad ones are refused with the field's path and a reason, and nothing else escapes."""

from __future__ import annotations

import base64
import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from gossamer.model import (
    AuthorizationPolicy,
    InvalidResource,
    PeerAuthentication,
    RequestAuthentication,
    kind_for,
    parse_document,
    parse_documents,
)
from gossamer.model.policy import MESH_ROOT_NAMESPACE, Scope, policy_scope
from tests.model_helpers import (
    DELETE,
    jsonish,
    mutate,
    parses_or_is_rejected_cleanly,
    set_path,
)

MESH = "mesh.gossamer.dev/v1alpha1"
# A 2048-bit odd modulus: Envoy refuses an RSA key under 512 bits or with an even one.
RSA_N = base64.urlsafe_b64encode(((1 << 2047) + 1).to_bytes(256, "big")).rstrip(b"=").decode()
JWKS = json.dumps({"keys": [{"kty": "RSA", "kid": "k1", "n": RSA_N, "e": "AQAB"}]})


def peer_doc() -> dict[str, Any]:
    return {"apiVersion": MESH, "kind": "PeerAuthentication",
            "metadata": {"name": "catalog-mtls", "namespace": "shop"},
            "spec": {"targetRef": {"kind": "Service", "name": "catalog"},
                     "mtls": {"mode": "STRICT"}}}


def authz_doc() -> dict[str, Any]:
    return {"apiVersion": MESH, "kind": "AuthorizationPolicy",
            "metadata": {"name": "catalog-readers", "namespace": "shop"},
            "spec": {
                "targetRef": {"group": "", "kind": "Service", "name": "catalog"},
                "action": "ALLOW",
                "rules": [{
                    "from": [{"source": {
                        "principals": ["spiffe://gossamer.local/ns/shop/sa/web",
                                       "gossamer.local/ns/shop/sa/admin"],
                        "notPrincipals": ["gossamer.local/ns/shop/sa/bot"],
                        "requestPrincipals": ["https://issuer.example/*"],
                        "notRequestPrincipals": ["*/mallory"],
                        "namespaces": ["shop", "*"],
                        "notNamespaces": ["sandbox"],
                    }}],
                    "to": [{"operation": {
                        "ports": [8080, "9090"], "notPorts": [15000],
                        "methods": ["GET", "HEAD"], "notMethods": ["DELETE"],
                        "paths": ["/api/*", "*.json", "/healthz", "*"],
                        "notPaths": ["/api/internal/*"],
                    }}],
                    "when": [
                        {"key": "request.headers[x-tenant]", "values": ["acme", "a*"]},
                        {"key": "request.auth.claims[groups]", "values": ["admins"]},
                        {"key": "request.auth.claims[realm][role]", "notValues": ["guest"]},
                        {"key": "request.auth.principal", "values": ["https://i/alice"]},
                        {"key": "request.auth.audiences", "values": ["catalog"]},
                        {"key": "request.auth.presenter", "values": ["cli"]},
                        {"key": "source.principal", "values": ["*"]},
                        {"key": "source.namespace", "values": ["shop"]},
                        {"key": "destination.port", "values": ["8080"]},
                    ],
                }],
            }}


def requestauthn_doc() -> dict[str, Any]:
    return {"apiVersion": MESH, "kind": "RequestAuthentication",
            "metadata": {"name": "jwt", "namespace": "shop"},
            "spec": {"targetRef": {"kind": "Service", "name": "catalog"}, "jwtRules": [
                {"issuer": "https://issuer.example", "audiences": ["catalog"], "jwks": JWKS,
                 "forwardOriginalToken": True,
                 "outputClaimToHeaders": [{"header": "x-user", "claim": "sub"}],
                 "outputPayloadToHeader": "x-jwt-payload",
                 "fromHeaders": [{"name": "x-token", "prefix": "Bearer "}],
                 "fromParams": ["token"]},
                {"issuer": "https://idp.example.com",
                 "jwksUri": "https://idp.example.com:8443/keys.json", "timeout": "2s"},
            ]}}


VALID = {"PeerAuthentication": peer_doc, "AuthorizationPolicy": authz_doc,
         "RequestAuthentication": requestauthn_doc}


@pytest.mark.parametrize("kind", sorted(VALID))
def test_valid_documents_parse_and_round_trip(kind: str) -> None:
    resource = parse_document(VALID[kind]())
    assert resource.kind == kind
    assert parse_document(resource.to_document()) == resource


def test_kind_aliases() -> None:
    assert kind_for("authz") is AuthorizationPolicy
    assert kind_for("peerauthentications") is PeerAuthentication
    assert kind_for("ra") is RequestAuthentication


def test_ports_accept_numbers_and_numeric_strings() -> None:
    policy = parse_document(authz_doc())
    assert isinstance(policy, AuthorizationPolicy)
    assert policy.spec.rules[0].to[0].operation.ports == [8080, 9090]


def test_empty_spec_is_an_allow_policy_without_rules() -> None:
    doc = {"apiVersion": MESH, "kind": "AuthorizationPolicy",
           "metadata": {"name": "deny-all", "namespace": MESH_ROOT_NAMESPACE}, "spec": {}}
    policy = parse_document(doc)
    assert isinstance(policy, AuthorizationPolicy)
    assert policy.spec.action.value == "ALLOW"
    assert policy.spec.rules == []
    assert policy_scope(policy) is Scope.MESH


def test_scopes() -> None:
    peer = parse_document(peer_doc())
    assert policy_scope(peer) is Scope.SERVICE
    doc = peer_doc()
    del doc["spec"]["targetRef"]
    assert policy_scope(parse_document(doc)) is Scope.NAMESPACE


def test_workload_service_account() -> None:
    spec: dict[str, Any] = {"service": "web", "address": "10.0.0.1", "port": 1}
    doc = {"apiVersion": MESH, "kind": "Workload", "metadata": {"name": "w"}, "spec": spec}
    assert parse_document(doc).account == "web"  # type: ignore[attr-defined]
    spec["serviceAccount"] = "web-sa"
    assert parse_document(doc).account == "web-sa"  # type: ignore[attr-defined]
    spec["serviceAccount"] = "Web_SA"
    with pytest.raises(InvalidResource) as err:
        parse_document(doc)
    assert err.value.errors[0].path == "spec.serviceAccount"


_set = set_path


SRC = "spec.rules[0].from[0].source"
OP = "spec.rules[0].to[0].operation"
WHEN = "spec.rules[0].when[0]"
JWT = "spec.jwtRules[0]"

# (kind, path to change, new value, path reported, words of the reason)
REJECTIONS: list[tuple[str, str, Any, str, str]] = [
    ("PeerAuthentication", "spec.mtls.mode", "DISABLE", "spec.mtls.mode", "STRICT"),
    ("PeerAuthentication", "spec.mtls", DELETE, "spec.mtls", "required"),
    ("PeerAuthentication", "spec.targetRef.kind", "Deployment", "spec.targetRef.kind",
     "attaches to a Service"),
    ("PeerAuthentication", "spec.targetRef.name", "Catalog", "spec.targetRef.name",
     "DNS label"),
    ("PeerAuthentication", "spec.portLevelMtls", {}, "spec.portLevelMtls", "unknown field"),
    ("AuthorizationPolicy", "spec.action", "AUDIT", "spec.action", "ALLOW"),
    ("AuthorizationPolicy", "spec.targetRef.group", "apps", "spec.targetRef.kind",
     "attaches to a Service"),
    ("AuthorizationPolicy", f"{SRC}.principals[0]", "web", f"{SRC}.principals[0]",
     "is not a principal"),
    ("AuthorizationPolicy", f"{SRC}.principals[0]", "spiffe://x/ns/a/sa/b/c",
     f"{SRC}.principals[0]", "is not a principal"),
    ("AuthorizationPolicy", f"{SRC}.notPrincipals[0]", "Bad_Domain/ns/a/sa/b",
     f"{SRC}.notPrincipals[0]", "is not a principal"),
    ("AuthorizationPolicy", f"{SRC}.namespaces[0]", "Shop", f"{SRC}.namespaces[0]",
     "namespace"),
    ("AuthorizationPolicy", f"{SRC}.requestPrincipals[0]", "alice",
     f"{SRC}.requestPrincipals[0]", "request principal"),
    ("AuthorizationPolicy", f"{SRC}.requestPrincipals[0]", "iss*/sub",
     f"{SRC}.requestPrincipals[0]", "whole issuer or subject"),
    ("AuthorizationPolicy", SRC, {}, SRC, "at least one field"),
    ("AuthorizationPolicy", f"{OP}.paths[0]", "/api/*/items", f"{OP}.paths[0]",
     "'*' may only be"),
    ("AuthorizationPolicy", f"{OP}.paths[0]", "*api*", f"{OP}.paths[0]", "'*' may only be"),
    ("AuthorizationPolicy", f"{OP}.paths[0]", "api", f"{OP}.paths[0]", "starts with '/'"),
    ("AuthorizationPolicy", f"{OP}.paths[0]", "/a?b=1", f"{OP}.paths[0]", "query"),
    ("AuthorizationPolicy", f"{OP}.methods[0]", "get", f"{OP}.methods[0]", "uppercase"),
    ("AuthorizationPolicy", f"{OP}.ports[0]", 0, f"{OP}.ports[0]", "greater than"),
    ("AuthorizationPolicy", f"{OP}.ports[0]", "http", f"{OP}.ports[0]", "integer"),
    ("AuthorizationPolicy", f"{OP}.ports[0]", True, f"{OP}.ports[0]", "integer"),
    ("AuthorizationPolicy", OP, {}, OP, "at least one field"),
    ("AuthorizationPolicy", f"{WHEN}.key", "request.headers[bad name]", f"{WHEN}.key",
     "not a valid HTTP header name"),
    ("AuthorizationPolicy", f"{WHEN}.key", "request.auth.claims[]", f"{WHEN}.key",
     "claim name must not be empty"),
    ("AuthorizationPolicy", f"{WHEN}.key", "request.auth.claims[a][ ]", f"{WHEN}.key",
     "claim name must not be empty"),
    ("AuthorizationPolicy", f"{WHEN}.key", "connection.sni", f"{WHEN}.key",
     "unsupported key"),
    ("AuthorizationPolicy", f"{WHEN}.values", [], f"{WHEN}.values", "values or notValues"),
    ("AuthorizationPolicy", f"{WHEN}.values[0]", "a*b", f"{WHEN}.values[0]",
     "'*' may only be"),
    ("AuthorizationPolicy", "spec.rules[0].when[6].values[0]", "nobody",
     "spec.rules[0].when[6].values[0]", "is not a principal"),
    ("AuthorizationPolicy", "spec.rules[0].when[8].values[0]", "99999",
     "spec.rules[0].when[8].values[0]", "port number"),
    ("AuthorizationPolicy", "spec.rules[0].from[0].sources", [], "spec.rules[0].from[0].sources",
     "unknown field"),
    ("RequestAuthentication", "spec.jwtRules", [], "spec.jwtRules", "at least 1"),
    ("RequestAuthentication", f"{JWT}.jwks", "{not json", f"{JWT}.jwks", "not valid JSON"),
    ("RequestAuthentication", f"{JWT}.jwks", '{"keys": []}', f"{JWT}.jwks",
     'non-empty "keys"'),
    ("RequestAuthentication", f"{JWT}.jwks", '{"keys": [{"n": 1}]}', f"{JWT}.jwks",
     "is not a JWK"),
    ("RequestAuthentication", f"{JWT}.jwksUri", "https://x/keys", f"{JWT}.jwks",
     "exactly one of"),
    ("RequestAuthentication", "spec.jwtRules[1].jwksUri", "ftp://idp/keys",
     "spec.jwtRules[1].jwksUri", "http:// or https://"),
    ("RequestAuthentication", "spec.jwtRules[1].jwksUri", "https://user:pw@idp/keys",
     "spec.jwtRules[1].jwksUri", "no user info"),
    ("RequestAuthentication", "spec.jwtRules[1].jwksUri", "https://bad_host/keys",
     "spec.jwtRules[1].jwksUri", "not a host name"),
    ("RequestAuthentication", "spec.jwtRules[1].jwksUri", DELETE, "spec.jwtRules[1].jwks",
     "exactly one of"),
    ("RequestAuthentication", "spec.jwtRules[1].timeout", "0s", "spec.jwtRules[1].timeout",
     "longer than 0s"),
    ("RequestAuthentication", f"{JWT}.issuer", "", f"{JWT}.issuer", "at least 1"),
    ("RequestAuthentication", f"{JWT}.outputClaimToHeaders[0].header", "x user",
     f"{JWT}.outputClaimToHeaders[0].header", "not a valid HTTP header name"),
    ("RequestAuthentication", f"{JWT}.outputClaimToHeaders[0].header", "Host",
     f"{JWT}.outputClaimToHeaders[0].header", "cannot be used"),
    ("RequestAuthentication", f"{JWT}.outputClaimToHeaders[0].claim", "",
     f"{JWT}.outputClaimToHeaders[0].claim", "claim name"),
    ("RequestAuthentication", f"{JWT}.outputPayloadToHeader", "x-user",
     f"{JWT}.outputClaimToHeaders", "only once"),
    ("RequestAuthentication", f"{JWT}.fromHeaders[0].name", "bad:name",
     f"{JWT}.fromHeaders[0].name", "not a valid HTTP header name"),
]


@pytest.mark.parametrize(("kind", "path", "value", "reported", "reason"), REJECTIONS,
                         ids=[f"{k}:{p}={v!r}"[:80] for k, p, v, _, _ in REJECTIONS])
def test_bad_field_is_rejected_with_its_path_and_reason(
        kind: str, path: str, value: Any, reported: str, reason: str) -> None:
    doc = _set(VALID[kind](), path, value)
    with pytest.raises(InvalidResource) as err:
        parse_document(doc)
    found = {e.path: e.reason for e in err.value.errors}
    assert reported in found, found
    assert reason in found[reported], found


# ---------------------------------------------------------------- property: never crash

WORDS = ["STRICT", "PERMISSIVE", "ALLOW", "DENY", "*", "*.json", "/api/*", "a*b", "GET",
         "get", "80", "0", "Service", "Pod", "spiffe://gossamer.local/ns/a/sa/b",
         "gossamer.local/ns/a/sa/b", "request.headers[x]", "request.auth.claims[g]",
         "request.auth.claims[]", "source.namespace", "https://x/keys", "ftp://x", JWKS,
         '{"keys": []}', "{", "iss/sub", "", "5s", "0s"]
JSONISH = jsonish(WORDS, 70000)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    kind = draw(st.sampled_from(sorted(VALID)))
    doc = copy.deepcopy(VALID[kind]())
    mutate(draw, doc, JSONISH)
    return kind, doc


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_policies_parse_or_raise_invalid_resource(case: tuple[str, Any]) -> None:
    _, doc = case
    note(json.dumps(doc, default=str)[:2000])
    parses_or_is_rejected_cleanly(doc)


# ---------------------------------------------------------------- the docs

DOCS = Path(__file__).parents[3] / "docs"


@pytest.mark.parametrize("page", ["resources.md", "security.md"])
def test_security_examples_in_the_docs_are_valid(page: str) -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", (DOCS / page).read_text(), re.S)
    kinds = {r.kind for block in blocks if not block.startswith("# invalid")
             for r in parse_documents(block)}
    assert {"PeerAuthentication", "AuthorizationPolicy", "RequestAuthentication"} <= kinds
