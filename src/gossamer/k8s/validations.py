"""What the models check beyond their field types, as a CRD schema says it: patterns
(RE2, as the API server matches them) and CEL rules (`x-kubernetes-validations`).

Each validator of the models is listed in `VALIDATORS` with where it went: into the
CRD ("crd"), or nowhere a CRD can hold it ("control plane: ...", checked only when
the control plane reads the object). tests/unit/k8s/test_crds.py checks that every
validator reachable from a kind is listed, so a validator added to a model without
a CRD counterpart fails a test instead of silently making the CRD weaker.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from gossamer.contract import checks
from gossamer.model import (
    adaptiveconcurrency,
    authorizationpolicy,
    faultpolicy,
    meta,
    ratelimitpolicy,
    requestauthentication,
    resiliencepolicy,
    sidecar,
)
from gossamer.model.meta import HEADER_NAME, MESH_GROUP, METHODS
from gossamer.model.policy import check_path_pattern

Schema = dict[str, Any]


def re2(pattern: re.Pattern[str]) -> str:
    """A model's Python pattern (anchored with `\\Z`) as RE2 writes it."""
    return pattern.pattern.removesuffix(r"\Z").removesuffix("$") + "$"


def lit(text: str) -> str:
    """`text` as a CEL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def rule(expr: str, message: str) -> dict[str, str]:
    return {"rule": expr, "message": message}


def has_items(*fields: str) -> str:
    return " || ".join(f"(has(self.{f}) && size(self.{f}) > 0)" for f in fields)


# Python's `\s` and str.strip(): every code point for which str.isspace() holds.
SPACE = (r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}"
         r"\x{202f}\x{205f}\x{3000}")
DNS_LABEL = re2(checks.DNS_LABEL)
DNS_SUBDOMAIN = re2(meta.DNS_SUBDOMAIN)
LABEL_KEY = re2(checks.LABEL_KEY)
LABEL_VALUE = re2(checks.LABEL_VALUE)
HEADER = re2(HEADER_NAME)
GEP_2257 = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_TRUST_DOMAIN = r"[a-z0-9]([-a-z0-9.]{0,253}[a-z0-9])?"
PRINCIPAL = rf"^(\*|(spiffe://)?{_TRUST_DOMAIN}/ns/{_LABEL}/sa/{_LABEL})$"
REQUEST_PRINCIPAL = r"^(\*|\*/[^*/]+|[^*]+/[^*/]+|[^*]+/\*)$"
NAMESPACE_OR_ANY = rf"^(\*|{_LABEL})$"
STAR_PATTERN = r"^(\*|\*[^*]+|[^*]+\*?)$"
PATH_PATTERN = rf"^(\*|\*[^*{SPACE}?#]+|/[^*{SPACE}?#]*\*?)$"
NOT_SPACE = rf"^[^{SPACE}]{{1,256}}$"
PORT_NUMBER = (r"0*([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}"
               r"|655[0-2][0-9]|6553[0-5])")
CONDITION_KEY = (
    r"^(request\.headers\[[A-Za-z0-9!#$%&'*+\-.^_`|~]{1,256}\]"
    rf"|request\.auth\.claims(\[[^\[\]]*[^\[\]{SPACE}][^\[\]]*\]){{1,8}}"
    r"|source\.principal|source\.namespace|destination\.port|request\.auth\.principal"
    r"|request\.auth\.audiences|request\.auth\.presenter)$")
HOST_PORT = re2(re.compile(r"^" + r"[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?"
                           r"(\.[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?)*:[0-9]{1,10}\Z"))
V6_PORT = r"^\[.+\]:[0-9]{1,10}$"


def unique(key: str = "{}", of: str = "self") -> str:
    """Every element of the list `of` is unique by `key` (`{}` stands for the element)."""
    a, b = key.replace("{}", "a"), key.replace("{}", "b")
    return f"{of}.all(a, {of}.exists_one(b, {b} == {a}))"


DURATION: Schema = {"pattern": GEP_2257}
POSITIVE_DURATION: Schema = {"pattern": GEP_2257, "x-kubernetes-validations": [
    rule("self.matches('[1-9]')", "must be longer than 0")]}
HEADER_NAME_SCHEMA: Schema = {"pattern": HEADER, "maxLength": 256}
LABELS: Schema = {
    "additionalProperties": {"pattern": LABEL_VALUE},
    "x-kubernetes-validations": [rule(f"self.all(k, size(k) <= 317 && k.matches({lit(LABEL_KEY)}))",
                                      "keys must be Kubernetes label keys")]}
_RESERVED = "^(?i)(host|content-length|transfer-encoding|connection|te|upgrade)$"
_PORT_RULE = rule(
    "type(self) == string ? (self.matches('^[0-9]{1,5}$') && int(self) >= 1 && "
    "int(self) <= 65535) : (self >= 1 && self <= 65535)", "a port number (1-65535)")
_GRPC_RULE = rule(
    f"type(self) == string ? self in [{', '.join(lit(s) for s in faultpolicy.GRPC_STATUS)}]"
    " : (self >= 0 && self <= 16)", "a gRPC status: 0-16 or its name")

# By validator function: the patch of each value an Annotated type runs it on.
VALUE_PATCHES: dict[Callable[..., Any], Schema] = {
    meta.check_service_name: {"pattern": DNS_LABEL, "maxLength": 63},
    meta.check_header_value: {"pattern": r"^[^\x00\r\n]*$"},
    authorizationpolicy.check_principal: {"pattern": PRINCIPAL},
    authorizationpolicy.check_request_principal: {"pattern": REQUEST_PRINCIPAL,
                                                  "maxLength": 1024},
    authorizationpolicy.check_namespace: {"pattern": NAMESPACE_OR_ANY, "maxLength": 63},
    authorizationpolicy.check_method: {"pattern": r"^(\*|[A-Z][A-Z_-]{0,31})$"},
    authorizationpolicy._port: {"x-kubernetes-int-or-string": True,
                                "x-kubernetes-validations": [_PORT_RULE]},
    check_path_pattern: {"pattern": PATH_PATTERN, "maxLength": 1024},
    requestauthentication._header_name: {**HEADER_NAME_SCHEMA, "x-kubernetes-validations": [
        rule(f"!self.matches({lit(_RESERVED)})", "a header the sidecar owns")]},
    resiliencepolicy.check_duration: DURATION,
    resiliencepolicy.check_positive_duration: POSITIVE_DURATION,
    adaptiveconcurrency._positive_duration: POSITIVE_DURATION,
    ratelimitpolicy.check_window: POSITIVE_DURATION,
    resiliencepolicy.check_retry_on: {"enum": list(resiliencepolicy.RETRY_ON)},
    resiliencepolicy.check_hc_path: {"pattern": re2(resiliencepolicy._HC_PATH),
                                     "maxLength": 1024},
    resiliencepolicy.check_header: HEADER_NAME_SCHEMA,
    resiliencepolicy.check_cookie: {"pattern": re2(resiliencepolicy._COOKIE_NAME)},
    resiliencepolicy.check_label_keys: {
        "items": {"pattern": LABEL_KEY, "maxLength": 317},
        "x-kubernetes-validations": [rule(unique(), "lists a label twice")]},
    faultpolicy.grpc_code: {"x-kubernetes-int-or-string": True,
                            "x-kubernetes-validations": [_GRPC_RULE]},
    sidecar._check_host: {"pattern": rf"^(\.|\*|{_LABEL})/(\*|[a-z0-9]([-a-z0-9]{{0,61}}"
                                     r"[a-z0-9])?)$"},
}


def _hedging(t_has: str, t: str, h_has: str, h: str) -> str:
    """ResiliencePolicy's check_hedging on timeouts `t` and hedging `h` (expressions)."""
    request = f"{t}.request"
    return (f"!({h_has}) || ((!({t_has}) || !has({t}.perTry)) && (!({t_has}) || "
            f"!has({request}) || duration({request}) == duration('0s') || "
            f"duration({h}.delay) < duration({request})))")


_SECTION = {f: f"(has(r.{f}) ? r.{f} : self.{f})" for f in ("timeouts", "hedging")}
_SECTION_HAS = {f: f"has(r.{f}) || has(self.{f})" for f in ("timeouts", "hedging")}
_VALUES = "((has(self.values) ? self.values : []) + (has(self.notValues) ? self.notValues : []))"
_VALUE_CHECK = (
    f"self.key == 'source.principal' ? v.matches({lit(PRINCIPAL)}) : "
    f"self.key == 'source.namespace' ? (v.matches({lit(NAMESPACE_OR_ANY)}) && size(v) <= 63) : "
    f"self.key == 'request.auth.principal' ? (v.matches({lit(REQUEST_PRINCIPAL)}) && "
    "size(v) <= 1024) : self.key == 'destination.port' ? (v.matches('^[0-9]{1,10}$') && "
    "int(v) >= 1 && int(v) <= 65535) : "
    f"(v.matches({lit(STAR_PATTERN)}) && size(v) <= 1024)")
_OUT_HEADERS = ("((has(self.outputClaimToHeaders) ? self.outputClaimToHeaders.map(c, "
                "c.header.lowerAscii()) : []) + (has(self.outputPayloadToHeader) ? "
                "[self.outputPayloadToHeader.lowerAscii()] : []))")
_HASHES = "(has(self.policy) && (self.policy == 'RingHash' || self.policy == 'Maglev'))"
_PATH_OK = ("(has(self.type) && self.type == 'RegularExpression') || !has(self.value) || "
            "(self.value.startsWith('/') && !self.value.contains('//') && "
            "!self.value.contains('/./') && !self.value.contains('/../') && "
            "!self.value.contains('?') && !self.value.contains('#'))")
_UNIQUE_HEADERS = rule(unique(key="{}.name.lowerAscii()"),
                       "each header name may be matched only once")

# By model class name: the patch of that object's schema.
CLASS_PATCHES: dict[str, Schema] = {
    "ServicePort": {"properties": {"name": {"pattern": DNS_LABEL}}},
    "ServiceSpec": {"properties": {"selector": LABELS, "ports": {"x-kubernetes-validations": [
        rule(unique(key="{}.port"), "a port is listed twice")]}}},
    "TargetRef": {"properties": {"group": {"enum": ["", "core"]}, "kind": {"enum": ["Service"]},
                                 "name": {"pattern": DNS_LABEL}}},
    "ResilienceTargetRef": {
        "properties": {"group": {"enum": ["", "core", MESH_GROUP]},
                       "kind": {"enum": ["Service", "ExternalService"]},
                       "name": {"pattern": DNS_LABEL}},
        "x-kubernetes-validations": [rule(
            "has(self.kind) && self.kind == 'ExternalService' ? (!has(self.group) || "
            f"self.group in ['', '{MESH_GROUP}']) : (!has(self.group) || "
            "self.group in ['', 'core'])",
            "a Service is in group \"\" (or core), an ExternalService in \"\" or "
            f"{MESH_GROUP}")]},
    # RequestAuthentication also targets a Gateway (JWT at the edge).
    "EdgeTargetRef": {
        "properties": {"group": {"enum": ["", "core", "gateway.networking.k8s.io"]},
                       "kind": {"enum": ["Service", "Gateway"]}},
        "x-kubernetes-validations": [rule(
            "(has(self.kind) && self.kind == 'Gateway') ? (has(self.group) && "
            "self.group == 'gateway.networking.k8s.io') : ((!has(self.group) || self.group "
            f"!= 'gateway.networking.k8s.io') && self.name.matches(r'{DNS_LABEL}') && "
            "size(self.name) <= 63)",
            "a Service (group \"\", a DNS label) or a Gateway (group "
            "gateway.networking.k8s.io)")]},
    # RateLimitPolicy also targets an ExternalService (limits on calls to the outside).
    "RateLimitTargetRef": {
        "properties": {"group": {"enum": ["", "core", "gateway.networking.k8s.io",
                                          MESH_GROUP]},
                       "kind": {"enum": ["Service", "Gateway", "ExternalService"]}},
        "x-kubernetes-validations": [rule(
            "(has(self.kind) && self.kind == 'Gateway') ? (has(self.group) && "
            "self.group == 'gateway.networking.k8s.io') : ((has(self.kind) && self.kind == "
            f"'ExternalService') ? (!has(self.group) || self.group in ['', '{MESH_GROUP}']) "
            ": (!has(self.group) || self.group in ['', 'core'])) && "
            f"self.name.matches(r'{DNS_LABEL}') && size(self.name) <= 63",
            "a Service (group \"\", a DNS label), a Gateway (group "
            f"gateway.networking.k8s.io) or an ExternalService (group \"\" or {MESH_GROUP})")]},
    "Source": {"x-kubernetes-validations": [rule(has_items(
        "principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals",
        "namespaces", "notNamespaces"), "a source needs at least one field")]},
    "Operation": {"x-kubernetes-validations": [rule(has_items(
        "ports", "notPorts", "methods", "notMethods", "paths", "notPaths", "hosts",
        "notHosts"),
        "an operation needs at least one field")]},
    "RuleCondition": {"properties": {"key": {"pattern": CONDITION_KEY}},
                      "x-kubernetes-validations": [
        rule(has_items("values", "notValues"), "a condition needs values or notValues"),
        rule(f"{_VALUES}.all(v, {_VALUE_CHECK})", "a value does not fit the key")]},
    "JwtRule": {"properties": {
        "audiences": {"items": {"minLength": 1, "maxLength": 1024}},
        "timeout": POSITIVE_DURATION, "fromParams": {"items": {"pattern": NOT_SPACE}}},
        "x-kubernetes-validations": [
            rule("has(self.jwks) != has(self.jwksUri)", "give exactly one of jwks and jwksUri"),
            rule(f"{_OUT_HEADERS}.all(h, {_OUT_HEADERS}.filter(x, x == h).size() == 1)",
                 "each header may be written only once")]},
    "ClaimToHeader": {"properties": {"claim": {"pattern": NOT_SPACE}}},
    "Timeouts": {"x-kubernetes-validations": [rule(
        "!has(self.request) || !has(self.perTry) || duration(self.request) == duration('0s') "
        "|| duration(self.perTry) <= duration(self.request)",
        "perTry must not be longer than request")]},
    "Backoff": {"x-kubernetes-validations": [rule(
        "!has(self.maxInterval) || duration(self.maxInterval) >= duration(self.baseInterval)",
        "maxInterval must not be shorter than baseInterval")]},
    "Retries": {"properties": {"retryOn": {"x-kubernetes-validations": [
        rule(unique(), "lists a value twice")]}},
        "x-kubernetes-validations": [rule(
            "(has(self.retryOn) && 'retriable-status-codes' in self.retryOn) == "
            f"({has_items('retriableStatusCodes')})",
            "retriableStatusCodes go with retryOn 'retriable-status-codes'")]},
    "OutlierDetection": {"x-kubernetes-validations": [rule(
        "has(self.consecutive5xx) || has(self.consecutiveGatewayErrors) || "
        "has(self.successRate)", "needs consecutive5xx, consecutiveGatewayErrors or "
        "successRate")]},
    "HealthCheck": {"x-kubernetes-validations": [rule(
        "has(self.http) != has(self.tcp)", "needs exactly one of http or tcp")]},
    "HashOn": {"x-kubernetes-validations": [rule(
        "(has(self.header) ? 1 : 0) + (has(self.cookie) ? 1 : 0) + (has(self.sourceIP) ? 1 : 0)"
        " == 1", "needs exactly one of header, cookie or sourceIP")]},
    "LoadBalancer": {"x-kubernetes-validations": [
        rule(f"{_HASHES} == has(self.hashOn)", "hashOn goes with policy RingHash or Maglev"),
        rule("!has(self.slowStart) || !has(self.policy) || self.policy == 'RoundRobin' || "
             "self.policy == 'LeastRequest'", "slowStart needs RoundRobin or LeastRequest")]},
    "RouteSection": {"x-kubernetes-validations": [
        rule("has(self.timeouts) || has(self.retries) || has(self.hedging)",
             "sets at least one of timeouts, retries or hedging"),
        rule("!has(self.timeouts) || !has(self.timeouts.connect)",
             "timeouts.connect is a setting of the Service, not of a route")]},
    "ResiliencePolicySpec": {"x-kubernetes-validations": [
        rule(_hedging("has(self.timeouts)", "self.timeouts", "has(self.hedging)",
                      "self.hedging"), "hedging.delay: must be shorter than timeouts.request, "
             "and replaces timeouts.perTry"),
        rule("!has(self.routes) || self.routes.all(r, "
             + _hedging(_SECTION_HAS["timeouts"], _SECTION["timeouts"],
                        _SECTION_HAS["hedging"], _SECTION["hedging"]) + ")",
             "routes: hedging.delay must be shorter than timeouts.request, and replaces "
             "timeouts.perTry"),
        rule("!has(self.routes) || " + unique(
            key="[{}.httpRoute, has({}.rule) ? {}.rule : '']", of="self.routes"),
             "a second section for one route and rule"),
        rule("!(has(self.circuitBreaker) && has(self.circuitBreaker.maxRetries) && "
             "has(self.retries) && has(self.retries.budget))",
             "circuitBreaker.maxRetries and retries.budget exclude each other")]},
    "AdaptiveConcurrency": {"x-kubernetes-validations": [rule(
        "!has(self.minRtt) || !has(self.minRttCalcParams) || (!has(self.minRttCalcParams"
        ".interval) && !has(self.minRttCalcParams.requestCount) && "
        "!has(self.minRttCalcParams.jitter))", "minRttCalcParams.interval, requestCount and "
        "jitter are only used when the minRTT is measured")]},
    "RateLimitPolicySpec": {"x-kubernetes-validations": [rule(
        "has(self.local) || has(self.global)", "needs local, global or both")]},
    "LocalLimit": {"x-kubernetes-validations": [
        rule("duration(self.per) >= duration('50ms')", "per: must be at least 50ms"),
        rule("!has(self.burst) || self.requests + self.burst <= 4294967295",
             "requests + burst must not exceed 4294967295")]},
    "GlobalRule": {"x-kubernetes-validations": [rule(
        "duration(self.per) >= duration('1s')", "per: must be at least 1s")]},
    "RateLimitMatch": {"properties": {"method": {"enum": list(METHODS)},
                                      "headers": {"x-kubernetes-validations": [_UNIQUE_HEADERS]}}},
    "PathMatch": {"x-kubernetes-validations": [rule(
        _PATH_OK, "an Exact or PathPrefix path starts with '/', is normalized, and has no "
                  "query or fragment")]},
    "HeaderMatch": {"properties": {"name": HEADER_NAME_SCHEMA}},
    "RateLimitKey": {"x-kubernetes-validations": [
        rule("has(self.header) == (self.type == 'header')", "header goes with type header"),
        rule("!has(self.header) || !self.header.startsWith(':')",
             "pseudo-headers cannot be keys")]},
    "FaultAbort": {"x-kubernetes-validations": [rule(
        "has(self.httpStatus) != has(self.grpcStatus)",
        "needs exactly one of httpStatus or grpcStatus")]},
    "FaultPolicySpec": {"x-kubernetes-validations": [rule(
        "has(self.delay) || has(self.abort)", "needs at least one of delay or abort")]},
    "Collector": {"properties": {"address": {"x-kubernetes-validations": [rule(
        f"((self.matches({lit(HOST_PORT)}) && self.matches('^[^:]{{1,253}}:')) || "
        f"self.matches({lit(V6_PORT)})) && self.matches({lit(':' + PORT_NUMBER + '$')})",
        "host:port (or [IPv6]:port), port 1-65535")]}}},
    "WorkloadSelector": {"properties": {"matchLabels": LABELS}},
    # SMI's kinds (k8s/crds.py smi_crds), as model/smi.py checks them.
    "GroupRef": {"properties": {"apiGroup": {"enum": ["", "specs.smi-spec.io"]}}},
    "Subject": {"properties": {"kind": {"enum": ["ServiceAccount"]}}},
    "TrafficTargetRule": {"x-kubernetes-validations": [rule(
        "self.kind != 'TCPRoute' || !has(self.matches) || size(self.matches) == 0",
        "matches: a TCPRoute rule has no named matches")]},
    "TrafficSplitSpec": {
        "x-kubernetes-validations": [rule("self.backends.all(b, b.service != self.service)",
                                          "a split cannot send to its root Service")],
        "properties": {"backends": {"x-kubernetes-validations": [
            rule(unique(key="{}.service"), "a backend Service is listed twice")]}}},
    "HTTPMatch": {"properties": {
        "methods": {"items": {"enum": ["*", *METHODS]}},
        "headers": {"x-kubernetes-validations": [
            rule(f"self.all(k, size(k) <= 256 && k.matches({lit(HEADER)}))",
                 "a header name is not valid"),
            rule("self.all(a, self.exists_one(b, b.lowerAscii() == a.lowerAscii()))",
                 "a header name is given twice (names are case-insensitive)")]}}},
    "HTTPRouteGroupSpec": {"properties": {"matches": {"x-kubernetes-validations": [
        rule(unique(key="{}.name"), "a match's name is used twice")]}}},
}
# Only on the root of these kinds: metadata.name (the one field of metadata a CRD
# schema may constrain); other kinds' names follow `ObjectMeta._name`.
NAME_SCHEMA: Schema = {"type": "string", "pattern": DNS_SUBDOMAIN, "maxLength": 253}
NAME_SCHEMAS: Mapping[str, Schema] = {
    "Service": {"type": "string", "pattern": DNS_LABEL, "maxLength": 63}}

CRD = "crd"
# Checked by the control plane only, when it reads an object (the API at `apply`, the
# Kubernetes source when it lists and watches): no CRD schema can say these.
CONTROL_PLANE_ONLY: dict[str, str] = {
    "gossamer.model.workload.WorkloadSpec._address":
        "spec.address is an IPv4 or IPv6 address as Python's ipaddress reads it",
    "gossamer.model.requestauthentication.JwtRule._jwks":
        "spec.jwtRules[].jwks is a JSON JWKS with a key Envoy can use (a JSON and "
        "cryptographic check)",
    "gossamer.model.requestauthentication.JwtRule._jwks_uri":
        "spec.jwtRules[].jwksUri is an http(s) URL with a host name or IP address and a "
        "port, without user info or fragment",
    "gossamer.model.httproute._ValueMatch._regex":
        "a header match of type RegularExpression (RateLimitPolicy and FaultPolicy "
        "matches) compiles in RE2 within the program size Envoy takes",
    "gossamer.model.ratelimitpolicy.RateLimitMatch._unique":
        "a RateLimitPolicy path match of type RegularExpression compiles in RE2 within the "
        "program size Envoy takes (its header uniqueness is in the CRD)",
    "gossamer.model.httproute.PathMatch._value":
        "a path match of type RegularExpression compiles in RE2 within the program size "
        "Envoy takes (the Exact/PathPrefix rules are in the CRD)",
    "gossamer.model.telemetry.Collector._address":
        "a collector address in brackets holds an IPv6 address (host:port and the port "
        "range are in the CRD)",
    "gossamer.model.meta.ObjectMeta._labels":
        "metadata.labels: validated by the API server as Kubernetes labels, not by the CRD",
    "gossamer.model.meta.ObjectMeta._namespace":
        "metadata.namespace: a namespace the API server knows",
    "gossamer.model.meta.ObjectMeta._resource_version":
        "metadata.resourceVersion: the API server's own, opaque to clients",
    "gossamer.model.meta.Resource._cluster_wide":
        "a cluster-wide kind without a namespace is stored in its one (a cluster-scoped CRD)",
    "gossamer.model.mesh.Mesh._singleton":
        "there is one Mesh, named default",
    "gossamer.model.mesh.MeshSpec._domain":
        "spec.dnsDomain is a DNS domain other than the names every Service already has "
        "(svc, cluster.local, svc.cluster.local)",
    "gossamer.model.service.ServiceSpec._virtual_ip":
        "spec.virtualIP is a plain unicast IPv4 address that capture redirects",
    "gossamer.model.sidecar.SidecarSpec._says_something":
        "a Sidecar sets egress, outboundTrafficPolicy or both",
    "gossamer.model.externalservice.ExternalService._name_is_dns_label":
        "an ExternalService name is a DNS label",
    "gossamer.model.externalservice.ExternalServiceSpec._coherent":
        "an ExternalService lists each host and port once, keeps wildcard hosts to "
        "themselves (HTTP and GRPC ports, no endpoints, virtual IP, egress, SNI or SANs), "
        "originates TLS only on HTTP, GRPC and TCP ports, and sends only HTTP and GRPC "
        "ports through an egress gateway",
    "gossamer.model.externalservice.ExternalServiceSpec._virtual_ip":
        "spec.virtualIP is a plain unicast IPv4 address that capture redirects",
    "gossamer.model.externalservice.ExternalPort._name":
        "spec.ports[].name is a DNS label",
    "gossamer.model.authorizationpolicy._check_host_pattern":
        "spec.rules[].to[].operation.hosts and notHosts are exact, prefix* or *suffix host "
        "patterns without spaces, '/', '?' or '#'",
    "gossamer.model.resiliencepolicy.ResiliencePolicySpec._external_target":
        "a ResiliencePolicy on an ExternalService sets no adaptiveConcurrency, routes, "
        "healthCheck, hedging or loadBalancer.locality",
    "gossamer.model.externalservice.Egress._via":
        "spec.egress.via is a Service name (a DNS label)",
    "gossamer.model.externalservice.CaBundle._one":
        "spec.tls.caBundle gives exactly one of pem and file",
    "gossamer.model.externalservice.ExternalTls._sni":
        "spec.tls.sni is a host name",
    "gossamer.model.externalservice._check_pem":
        "spec.tls.caBundle.pem holds PEM certificates (a cryptographic parse)",
    "gossamer.model.externalservice._check_path":
        "file paths are absolute",
    "gossamer.model.externalservice._check_duration":
        "spec.timeouts are Gateway API durations",
    "gossamer.model.externalservice._check_endpoint":
        "spec.endpoints[] are IPv4 addresses or DNS names",
    "gossamer.model.externalservice.check_host_name":
        "spec.hosts[] are DNS names of two labels or more, optionally after '*.', not IP "
        "addresses",
}
VALIDATORS: dict[str, str] = {
    **{f"{f.__module__}.{f.__qualname__}": CRD for f in VALUE_PATCHES},
    **dict.fromkeys((
        "gossamer.model.meta.ObjectMeta._name", "gossamer.model.service.Service."
        "_service_name_is_dns_label", "gossamer.model.service.ServiceSpec._selector",
        "gossamer.model.service.ServiceSpec._unique_ports",
        "gossamer.model.service.ServicePort._name", "gossamer.model.policy.TargetRef._is_service",
        "gossamer.model.resiliencepolicy.ResilienceTargetRef._is_service",
        "gossamer.model.policy.EdgeTargetRef._kind",
        "gossamer.model.ratelimitpolicy.RateLimitTargetRef._kind",
        "gossamer.model.authorizationpolicy.Source._not_empty",
        "gossamer.model.authorizationpolicy.Operation._not_empty",
        "gossamer.model.authorizationpolicy.RuleCondition._key_and_values",
        "gossamer.model.requestauthentication.JwtRule._audiences",
        "gossamer.model.requestauthentication.JwtRule._timeout",
        "gossamer.model.requestauthentication.JwtRule._params",
        "gossamer.model.requestauthentication.JwtRule._one_key_source",
        "gossamer.model.requestauthentication.ClaimToHeader._claim",
        "gossamer.model.resiliencepolicy.ResiliencePolicySpec._hedging",
        "gossamer.model.resiliencepolicy.ResiliencePolicySpec._budget_or_max_retries",
        "gossamer.model.resiliencepolicy.Timeouts._order",
        "gossamer.model.resiliencepolicy.Retries._codes",
        "gossamer.model.resiliencepolicy.Backoff._order",
        "gossamer.model.resiliencepolicy.OutlierDetection._some_detector",
        "gossamer.model.resiliencepolicy.HealthCheck._one_kind",
        "gossamer.model.resiliencepolicy.LoadBalancer._consistent",
        "gossamer.model.resiliencepolicy.HashOn._one",
        "gossamer.model.resiliencepolicy.RouteSection._something",
        "gossamer.model.adaptiveconcurrency.AdaptiveConcurrency._fixed_or_measured",
        "gossamer.model.ratelimitpolicy.RateLimitPolicySpec._some_limit",
        "gossamer.model.ratelimitpolicy.LocalLimit._window",
        "gossamer.model.ratelimitpolicy.GlobalRule._window",
        "gossamer.model.ratelimitpolicy.RateLimitKey._header",
        "gossamer.model.meta.check_method", "gossamer.model.meta.check_header_name",
        "gossamer.model.faultpolicy.FaultPolicySpec._some_fault",
        "gossamer.model.faultpolicy.FaultAbort._one_status",
        "gossamer.model.sidecar.WorkloadSelector._labels",
    ), CRD),
    **{k: f"control plane: {v}" for k, v in CONTROL_PLANE_ONLY.items()},
}
