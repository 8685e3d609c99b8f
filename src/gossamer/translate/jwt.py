"""RequestAuthentication -> Envoy's jwt_authn filter, first on the inbound HCM.

Istio semantics: every rule of every covering policy is a provider, and the
requirement is "any of them, or no token at all" (`allow_missing`), so a
request without a token passes on to authorization while a bad token gets
401. Every provider writes the verified payload to the same dynamic metadata
key, where RBAC matches `requestPrincipals` and `request.auth.*`, and the
failure status to another, which tells the inbound local-reply mapper that a
403 came from jwt_authn (a wrong audience) so it can answer 401 instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from envoy.config.cluster.v3.cluster_pb2 import Cluster

from gossamer.model import RequestAuthentication
from gossamer.model.duration import parse_duration_ms
from gossamer.model.requestauthentication import JwksUri, JwtRule
from gossamer.translate import names
from gossamer.translate.protos import JWT_AUTHN, build, seconds, socket_address
from gossamer.translate.tls import server_tls

JWT_FILTER = "envoy.filters.http.jwt_authn"  # also the dynamic metadata namespace
JWT_PAYLOAD = "jwt_payload"
JWT_FAILURE = "jwt_failure"
JWKS_CACHE = "600s"
# jwt_authn's status code for "no token" (allowed through by allow_missing);
# any larger one in the failure metadata means jwt_authn rejected the request.
JWT_MISSING_CODE = 1


def _jwks_cluster_name(uri: JwksUri) -> str:
    return names.jwks_cluster(uri.host, uri.port)


def _provider(rule: JwtRule) -> dict[str, Any]:
    out: dict[str, Any] = {"issuer": rule.issuer, "forward": rule.forward_original_token,
                           "payloadInMetadata": JWT_PAYLOAD,
                           "failedStatusInMetadata": JWT_FAILURE}
    if rule.audiences:
        out["audiences"] = list(rule.audiences)
    uri = rule.uri
    if uri is None:
        out["localJwks"] = {"inlineString": rule.jwks}
    else:
        out["remoteJwks"] = {"httpUri": {"uri": rule.jwks_uri,
                                         "cluster": _jwks_cluster_name(uri),
                                         "timeout": seconds(parse_duration_ms(rule.timeout))},
                             "cacheDuration": JWKS_CACHE}
    if rule.output_claim_to_headers:
        out["claimToHeaders"] = [{"headerName": c.header, "claimName": c.claim}
                                 for c in rule.output_claim_to_headers]
    if rule.output_payload_to_header:
        out["forwardPayloadHeader"] = rule.output_payload_to_header
    if rule.from_headers:
        out["fromHeaders"] = [{"name": h.name, "valuePrefix": h.prefix}
                              for h in rule.from_headers]
    if rule.from_params:
        out["fromParams"] = list(rule.from_params)
    return out


def jwt_filter(policies: Sequence[RequestAuthentication]) -> dict[str, Any] | None:
    providers = {
        names.jwt_provider(p.metadata.namespace, p.metadata.name, i): _provider(rule)
        for p in policies for i, rule in enumerate(p.spec.jwt_rules)
    }
    if not providers:
        return None
    requirements: list[dict[str, Any]] = [{"providerName": n} for n in providers]
    requirements.append({"allowMissing": {}})
    return {"name": JWT_FILTER, "typedConfig": {
        "@type": JWT_AUTHN,
        "providers": providers,
        "rules": [{"match": {"prefix": "/"},
                   "requires": {"requiresAny": {"requirements": requirements}}}],
    }}


def jwks_cluster(uri: JwksUri, ca_file: str | None) -> Cluster:
    """A plain cluster to the JWKS server (DNS or a static IP), TLS for https."""
    name = _jwks_cluster_name(uri)
    config: dict[str, Any] = {
        "name": name,
        "type": "STATIC" if uri.is_ip else "STRICT_DNS",
        "connectTimeout": "5s",
        "loadAssignment": {"clusterName": name, "endpoints": [{"lbEndpoints": [
            {"endpoint": {"address": socket_address(uri.host, uri.port)}}]}]},
    }
    if not uri.is_ip:
        config["dnsLookupFamily"] = "V4_PREFERRED"
    if uri.scheme == "https":
        config["transportSocket"] = server_tls(uri.host, is_ip=uri.is_ip, ca_file=ca_file)
    return build(Cluster, config)


def jwks_uris(policies: Sequence[RequestAuthentication]) -> list[JwksUri]:
    """The remote key sets these policies need, each host:port once."""
    seen: dict[str, JwksUri] = {}
    for p in policies:
        for rule in p.spec.jwt_rules:
            if (uri := rule.uri) is not None:
                seen.setdefault(_jwks_cluster_name(uri), uri)
    return [seen[k] for k in sorted(seen)]
