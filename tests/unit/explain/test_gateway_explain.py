"""Explain for requests that came in through an ingress gateway: the gateway's own
entry (logged on its downstream side) stands where a caller's sidecar's would."""

from __future__ import annotations

from gossamer.explain.reasons import explain
from gossamer.explain.records import Reporter
from gossamer.translate.names import NO_HOST_ROUTE
from tests.unit.explain.test_explain import ECHO, _doc, _index, entry

EDGE = Reporter("edge-0.default", "default", "edge", "edge-0", "edge")
EDGE_ID = "spiffe://gossamer.local/ns/default/sa/edge"


def test_an_unknown_host_is_the_gateways_own_404() -> None:
    why = explain([entry(EDGE, "inbound", 404, details="direct_response", cluster="",
                         route=NO_HOST_ROUTE, authority="elsewhere.example.com")], _index())
    assert why.failed_at == "the gateway (edge-0)"
    assert why.policy == "Gateway default/edge"
    assert "has no route for host elsewhere.example.com" in why.cause
    assert why.summary.startswith("a client of Gateway default/edge (via edge-0) -> "
                                  "host elsewhere.example.com: GET /x answered 404")


def test_a_refused_token_names_the_gateways_request_authentication() -> None:
    jwt = _doc("RequestAuthentication", "edge-jwt", {
        "targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"},
        "jwtRules": [{"issuer": "https://idp.example",
                      "jwksUri": "https://idp.example/jwks.json"}]})
    why = explain([entry(EDGE, "inbound", 401, details="jwt_authn_access_denied{Jwt_is_missing}",
                         cluster="", route="")], _index(jwt))
    assert why.failed_at == "the gateway (edge-0)"
    assert why.policy == "RequestAuthentication default/edge-jwt"
    assert "JWT was refused at the edge (jwt_authn_access_denied{Jwt_is_missing})" in why.cause


def test_a_denial_at_the_callee_names_the_gateways_identity() -> None:
    allow = _doc("AuthorizationPolicy", "only-web", {"action": "ALLOW", "rules": [
        {"from": [{"source": {"principals": ["spiffe://gossamer.local/ns/default/sa/web"]}}]}]})
    denied = "rbac_access_denied_matched_policy[none]"
    why = explain([entry(EDGE, "inbound", 403),
                   entry(ECHO, "inbound", 403, details=denied, peer_principal=EDGE_ID)],
                  _index(allow))
    assert why.failed_at == "the callee's sidecar (echo-0)"
    assert why.policy == "AuthorizationPolicy default/only-web"
    assert f"admits {EDGE_ID}" in why.cause
    assert why.summary.startswith("a client of Gateway default/edge (via edge-0) -> "
                                  "echo.default: GET /x answered 403")
