"""What the validator accepts, Envoy accepts: routes and JWT rules that pass `apply`
become config that `envoy --mode validate` takes, with the runtime the agent's
bootstrap gives it.

A document the model accepts but Envoy refuses is the worst kind of bad input: every
sidecar of the namespace NACKs the shared route config and keeps its old routes until
someone fixes the document. The cases below are those found so far, each either
refused at apply with its field or accepted by Envoy; the property test then throws
generated routes (regexes near RE2's limits, header values and paths with the
characters Envoy treats specially) at both.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

from gossamer.agent.bootstrap import layered_runtime
from gossamer.contract.names import MAX_PROGRAM_SIZE, PROGRAM_SIZE_RUNTIME_KEY
from gossamer.model import InvalidResource, Resource, parse_document, parse_documents
from gossamer.model.regex import program_size
from tests.unit.translate import test_security as security
from tests.unit.translate.test_routing import ROUTING, mesh_of, snapshot
from tests.unit.translate.test_security import _static_bootstrap, assert_envoy_accepts

GW = "gateway.networking.k8s.io/v1"
REALISTIC = r"^(?:[a-z0-9]{1,100}\.){1,10}$"  # program size 3011, Envoy's default limit 100
AT_THE_LIMIT = "/" + "[a-z]{1000}" * 8 + "a" * 187  # program size 8192, MAX_PROGRAM_SIZE


def _route(rule: dict[str, Any], name: str = "probe", parent: str = "echo") -> dict[str, Any]:
    return {"apiVersion": GW, "kind": "HTTPRoute", "metadata": {"name": name},
            "spec": {"parentRefs": [{"name": parent}],
                     "rules": [{"backendRefs": [{"name": parent}], **rule}]}}


def _grpc(method: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": GW, "kind": "GRPCRoute", "metadata": {"name": "probe"},
            "spec": {"parentRefs": [{"name": "rpc-v1"}], "rules": [
                {"matches": [{"method": method}], "backendRefs": [{"name": "rpc-v1"}]}]}}


def _headers(kind: str, **mod: Any) -> dict[str, Any]:
    field = kind[0].lower() + kind[1:]
    return {"filters": [{"type": kind, field: mod}]}


def _path_regex(value: str) -> dict[str, Any]:
    return {"matches": [{"path": {"type": "RegularExpression", "value": value}}]}


def _header_regex(value: str) -> dict[str, Any]:
    return {"matches": [{"headers": [{"type": "RegularExpression", "name": "x-host",
                                      "value": value}]}]}


def _rewrite(kind: str, path: str, prefix: str = "/api") -> dict[str, Any]:
    field = "replaceFullPath" if kind == "ReplaceFullPath" else "replacePrefixMatch"
    return {"matches": [{"path": {"type": "PathPrefix", "value": prefix}}],
            "filters": [{"type": "URLRewrite", "urlRewrite": {
                "path": {"type": kind, field: path}}}]}


def _redirect(path: str) -> dict[str, Any]:
    return {"backendRefs": [], "filters": [{"type": "RequestRedirect", "requestRedirect": {
        "path": {"type": "ReplaceFullPath", "replaceFullPath": path}}}]}


def _rate_limit(path_regex: str) -> dict[str, Any]:
    return {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "RateLimitPolicy",
            "metadata": {"name": "probe"},
            "spec": {"targetRef": {"kind": "Service", "name": "echo"}, "global": {"rules": [
                {"match": {"path": {"type": "RegularExpression", "value": path_regex}},
                 "requests": 10, "per": "1m"}]}}}


LONG = "a" * 600
# (document, None when Envoy must accept it, else the field and reason refusing it).
CASES: dict[str, tuple[dict[str, Any], tuple[str, str] | None]] = {
    "nested-repeats": (_route(_path_regex("(a{1000}){1000}")),
                       ("spec.rules[0].matches[0].path.value", "invalid repetition size")),
    "program-too-large": (_route(_header_regex(".{1000}" * 5)),
                          ("spec.rules[0].matches[0].headers[0].value", "RE2 program size")),
    "realistic-regex": (_route(_header_regex(REALISTIC)), None),
    "at-the-limit": (_route(_path_regex(AT_THE_LIMIT)), None),
    "one-over-the-limit": (_route(_path_regex(AT_THE_LIMIT + "a")),
                           ("spec.rules[0].matches[0].path.value", "program size is 8193")),
    "header-value-crlf": (
        _route(_headers("RequestHeaderModifier", set=[{"name": "x-a", "value": "a\r\nb"}])),
        ("spec.rules[0].filters[0].requestHeaderModifier.set[0].value", "CR or LF")),
    "header-value-nul": (
        _route(_headers("ResponseHeaderModifier", add=[{"name": "x-a", "value": "a\0b"}])),
        ("spec.rules[0].filters[0].responseHeaderModifier.add[0].value", "NUL")),
    "header-value-lone-percent": (
        _route(_headers("RequestHeaderModifier", set=[{"name": "x-a", "value": "100%"}])), None),
    "header-value-format-command": (
        _route(_headers("ResponseHeaderModifier", add=[{"name": "x-a", "value": "%FOO%"}])),
        None),
    "rewrite-path-lf": (_route(_rewrite("ReplaceFullPath", "/a\nb")),
                        ("spec.rules[0].filters[0].urlRewrite.path.replaceFullPath", "LF")),
    "prefix-rewrite-cr": (
        _route(_rewrite("ReplacePrefixMatch", "/v2\r")),
        ("spec.rules[0].filters[0].urlRewrite.path.replacePrefixMatch", "CR")),
    "redirect-path-nul": (
        _route(_redirect("/a\0")),
        ("spec.rules[0].filters[0].requestRedirect.path.replaceFullPath", "NUL")),
    "rewrite-path-backslash": (_route(_rewrite("ReplacePrefixMatch", "/x\\1\\")), None),
    "long-prefix-rewrite": (_route(_rewrite("ReplacePrefixMatch", "/x", "/" + "é" * 1000)),
                            None),
    "grpc-regexes-over-1024-together": (
        _grpc({"type": "RegularExpression", "service": LONG, "method": LONG}), None),
    "grpc-long-exact-method": (_grpc({"method": "m" * 1024}), None),
    "grpc-regexes-too-large-together": (
        _grpc({"type": "RegularExpression", "service": ".{1000}" * 3,
               "method": ".{1000}" * 2}),
        ("spec.rules[0].matches[0].method.service", "as one path regex")),
    # Envoy matches `:path` with the query: the regex it compiles is a bit larger.
    "rate-limit-path-regex-with-its-query": (
        _rate_limit(AT_THE_LIMIT), ("spec.global.rules[0].match.path.value", "program size")),
    # Envoy's RE2 reads patterns as Latin-1 (Python's RE2 module, UTF-8, took these).
    "escape-above-latin-1": (_route(_path_regex(r"/\x{10FFFF}")),
                             ("spec.rules[0].matches[0].path.value", "invalid escape")),
    "class-range-in-latin-1": (_route(_path_regex("/[ü-é]")), None),
}


def _envoy_accepts(resources: list[Resource]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        assert_envoy_accepts(_static_bootstrap(snapshot(mesh_of(resources))), Path(tmp))


def _assert_refused(doc: dict[str, Any], path: str, reason: str) -> None:
    with pytest.raises(InvalidResource) as info:
        parse_document(copy.deepcopy(doc))
    errors = {e.path: e.reason for e in info.value.errors}
    assert path in errors, errors
    assert reason in errors[path], errors


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_refused_at_apply_or_accepted_by_envoy(case: str) -> None:
    doc, refused = CASES[case]
    if refused is not None:
        _assert_refused(doc, *refused)
        return
    _envoy_accepts([*parse_documents(ROUTING), parse_document(doc)])


def test_the_bootstrap_runtime_allows_what_the_validator_does() -> None:
    [layer, admin] = layered_runtime()["layers"]
    assert layer["staticLayer"] == {PROGRAM_SIZE_RUNTIME_KEY: MAX_PROGRAM_SIZE}
    assert admin == {"name": "admin", "adminLayer": {}}  # runtime overrides stay last
    assert program_size(REALISTIC) == 3011
    assert program_size(AT_THE_LIMIT) == MAX_PROGRAM_SIZE


# ---------------------------------------------------------------- JWT rules (inbound)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(keys: list[dict[str, Any]], prefix: str = "Bearer ") -> dict[str, Any]:
    return {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "RequestAuthentication",
            "metadata": {"name": "probe"},
            "spec": {"targetRef": {"kind": "Service", "name": "catalog"}, "jwtRules": [{
                "issuer": "https://issuer.example", "jwks": json.dumps({"keys": keys}),
                "fromHeaders": [{"name": "x-token", "prefix": prefix}]}]}}


_P256 = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
EC_KEY = {"kty": "EC", "x": _b64(_P256.x.to_bytes(32, "big")),
          "y": _b64(_P256.y.to_bytes(32, "big"))}
RSA = {"kty": "RSA", "e": "AQAB", "n": _b64(((1 << 2047) + 1).to_bytes(256, "big"))}
JWKS_FIELD = "spec.jwtRules[0].jwks"
# Envoy reads the inline JWKS when it loads the listener: one it can use no key of is a
# NACK (its JWT library's rules; a JWKS it can use some keys of is taken).
JWT_CASES: dict[str, tuple[dict[str, Any], tuple[str, str] | None]] = {
    "rsa-modulus-too-small": (_jwt([{**RSA, "n": "AQAB"}]), (JWKS_FIELD, "512 to 16384 bits")),
    "rsa-even-modulus": (_jwt([{**RSA, "n": _b64((1 << 2047).to_bytes(256, "big"))}]),
                         (JWKS_FIELD, "must be odd")),
    "rsa-without-n": (_jwt([{"kty": "RSA", "e": "AQAB"}]), (JWKS_FIELD, '"n" is missing')),
    "rsa-exponent-5": (_jwt([{**RSA, "e": "BQ"}]), (JWKS_FIELD, "3 or 65537")),
    "rsa-pss-alg": (_jwt([{**RSA, "alg": "PS256"}]), (JWKS_FIELD, "must start with RS")),
    "ec-point-off-the-curve": (_jwt([{**EC_KEY, "y": _b64(b"\1" * 32)}]),
                               (JWKS_FIELD, "not a point of P-256")),
    "ec-alg-and-curve-disagree": (_jwt([{**EC_KEY, "alg": "ES256", "crv": "P-384"}]),
                                  (JWKS_FIELD, "does not go with")),
    "okp-short-key": (_jwt([{"kty": "OKP", "crv": "Ed25519", "x": _b64(b"k" * 31)}]),
                      (JWKS_FIELD, "32 bytes")),
    "unknown-kty": (_jwt([{"kty": "foo"}]), (JWKS_FIELD, "not RSA, EC, oct or OKP")),
    "token-prefix-crlf": (_jwt([RSA], prefix="Bearer\r\n"),
                          ("spec.jwtRules[0].fromHeaders[0].prefix", "CR or LF")),
    "usable-keys": (_jwt([RSA, EC_KEY, {"kty": "oct", "k": "c2VjcmV0"},
                          {"kty": "OKP", "crv": "Ed25519", "x": _b64(b"k" * 32)}]), None),
    "one-usable-key-is-enough": (_jwt([{"kty": "RSA"}, {"kty": "foo"}, EC_KEY]), None),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(JWT_CASES))
def test_jwt_rules_refused_at_apply_or_accepted_by_envoy(case: str, tmp_path: Path) -> None:
    doc, refused = JWT_CASES[case]
    if refused is not None:
        _assert_refused(doc, *refused)
        return
    resources = [*security.docs(), parse_document(doc)]
    snap = security.snapshot(security.mesh_of(resources), "catalog")
    assert_envoy_accepts(_static_bootstrap(snap), tmp_path)


def _envoy_program_size(pattern: str, tmp_path: Path) -> int:
    """The size Envoy's own RE2 gives `pattern`, from its NACK under a limit of 1."""
    router = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
    hcm = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager."
           "v3.HttpConnectionManager")
    bootstrap = {
        "admin": {"address": {"socketAddress": {"address": "127.0.0.1", "portValue": 0}}},
        "layeredRuntime": {"layers": [{"name": "tight", "staticLayer": {
            PROGRAM_SIZE_RUNTIME_KEY: 1}}]},
        "staticResources": {"listeners": [{
            "name": "probe", "address": {"socketAddress": {"address": "127.0.0.1",
                                                           "portValue": 1}},
            "filterChains": [{"filters": [{"name": "hcm", "typedConfig": {
                "@type": hcm, "statPrefix": "probe",
                "httpFilters": [{"name": "router", "typedConfig": {"@type": router}}],
                "routeConfig": {"virtualHosts": [{
                    "name": "probe", "domains": ["*"],
                    "routes": [{"match": {"safeRegex": {"regex": pattern}},
                                "directResponse": {"status": 200}}]}]}}}]}]}]}}
    with pytest.raises(AssertionError) as info:
        assert_envoy_accepts(bootstrap, tmp_path)
    found = re.search(r"RE2 program size of (\d+) > max program size of 1 ", str(info.value))
    assert found, str(info.value)[-500:]
    return int(found.group(1))


@pytest.mark.slow
def test_program_sizes_are_envoys(tmp_path: Path) -> None:
    """Sizes where UTF-8 and Latin-1 RE2 differ most, and the issue's regex."""
    for pattern in (".{20}", r"\pL", "[^/]{3}", "(?i)k", "é", "[ü-é]", REALISTIC,
                    r"\w{1,10}\.\d+$"):
        assert program_size(pattern) == _envoy_program_size(pattern, tmp_path), pattern


@pytest.mark.slow
def test_envoy_refuses_what_the_runtime_limit_refuses(tmp_path: Path) -> None:
    """The validator's number is the one Envoy enforces: without the runtime layer
    (Envoy's default of 100) the realistic regex is a NACK, so the layer matters."""
    doc = parse_document(_route(_header_regex(REALISTIC)))
    bootstrap = _static_bootstrap(snapshot(mesh_of([*parse_documents(ROUTING), doc])))
    del bootstrap["layeredRuntime"]
    with pytest.raises(AssertionError, match="program size of 3011 > max program size of 100"):
        assert_envoy_accepts(bootstrap, tmp_path)


# ---------------------------------------------------------------- generated routes

ATOMS = st.sampled_from(["a", "é", ".", r"\d", r"\w", "[a-z0-9]", "[^/]", r"\pL", r"\.",
                         "/", "^", "$", r"\b", "(?i:x)", "[[:alpha:]]", r"\x{10FFFF}"])
COUNTS = st.sampled_from(["", "*", "+", "?", "*?", "{2}", "{1,63}", "{0,100}", "{1,1000}",
                          "{1000}", "{1001}", "{1,10}", "{2,}", "{1,500}"])
REGEX = st.recursive(ATOMS, lambda inner: (
    st.tuples(inner, COUNTS).map(lambda t: f"(?:{t[0]}){t[1]}")
    | st.lists(inner, min_size=2, max_size=4).map("".join)
    | st.lists(inner, min_size=2, max_size=3).map(lambda xs: f"(?:{'|'.join(xs)})")),
    max_leaves=6)
# Pieces of header values and paths: what Envoy reads specially, and plain text.
PIECES = st.sampled_from(["a", "/", "%", "%%", "%FOO%", "%REQ(x-a)%", "%START_TIME%", "\\",
                          "\\1", "\r", "\n", "\0", "\t", " ", "é", "\x7f", "$1", "{", "?",
                          "#", "\u2028", "\U0001f600"])
TEXT = st.lists(PIECES, max_size=5).map("".join)
PATH = TEXT.map(lambda t: "/" + t)
HEADER = st.sampled_from(["x-a", "X-Upper", "x_under", "x.dot", "te", "connection",
                          "x-envoy-foo", "content-type", "host", ":path", "a" * 256])
DURATION = st.sampled_from(["0s", "1ms", "10s", "99999h99999h99999h99999h", "1h30m"])


def _one_of_filters(draw: st.DrawFn, prefix_match: bool) -> list[dict[str, Any]]:
    kind = draw(st.sampled_from(["RequestHeaderModifier", "ResponseHeaderModifier",
                                 "URLRewrite", "RequestRedirect", "CORS", "none"]))
    if kind.endswith("HeaderModifier"):
        values = st.fixed_dictionaries({"name": HEADER, "value": TEXT})
        return [{"type": kind, kind[0].lower() + kind[1:]: {
            "set": draw(st.lists(values, max_size=2)), "add": draw(st.lists(values, max_size=2)),
            "remove": draw(st.lists(HEADER, max_size=1))}}]
    modifier = ({"type": "ReplacePrefixMatch", "replacePrefixMatch": draw(PATH)}
                if prefix_match and draw(st.booleans())
                else {"type": "ReplaceFullPath", "replaceFullPath": draw(PATH)})
    if kind == "URLRewrite":
        return [{"type": kind, "urlRewrite": {"path": modifier, "hostname": "b.example"}}]
    if kind == "RequestRedirect":
        return [{"type": kind, "requestRedirect": {"path": modifier, "statusCode": 301}}]
    if kind == "CORS":
        origin = draw(st.sampled_from(["*", "https://*.example.org", "http://a.b:8080"]))
        return [{"type": kind, "cors": {"allowOrigins": [origin],
                                        "allowHeaders": draw(st.lists(HEADER, max_size=2))}}]
    return []


@st.composite
def http_routes(draw: st.DrawFn, name: str) -> dict[str, Any]:
    match: dict[str, Any] = {}
    path_kind = draw(st.sampled_from(["RegularExpression", "PathPrefix", "Exact", None]))
    if path_kind is not None:
        value = draw(REGEX) if path_kind == "RegularExpression" else draw(PATH)
        match["path"] = {"type": path_kind, "value": value}
    if draw(st.booleans()):
        match["headers"] = [{"type": "RegularExpression", "name": "x-h", "value": draw(REGEX)}]
    if draw(st.booleans()):
        match["queryParams"] = [{"type": "RegularExpression", "name": "q", "value": draw(REGEX)}]
    filters = _one_of_filters(draw, path_kind == "PathPrefix")
    redirect = bool(filters) and filters[0]["type"] == "RequestRedirect"
    weights = draw(st.lists(st.sampled_from([0, 1, 1_000_000]), min_size=1, max_size=3))
    rule = {"matches": [match], "filters": filters,
            "backendRefs": [] if redirect else [{"name": n, "weight": w} for n, w in
                                                 zip(["echo", "shadow", "audit"], weights,
                                                     strict=False)],
            "timeouts": {"request": draw(DURATION)}}
    return _route(rule, name)


@st.composite
def grpc_routes(draw: st.DrawFn, name: str) -> dict[str, Any]:
    method: dict[str, Any] = {"type": "RegularExpression"}
    for field in draw(st.sampled_from([["service"], ["method"], ["service", "method"]])):
        method[field] = draw(REGEX)
    doc = _grpc(method)
    doc["metadata"]["name"] = name
    return doc


def _accepted(docs: list[dict[str, Any]]) -> list[Resource]:
    out = []
    for doc in docs:
        try:
            out.append(parse_document(doc))
        except InvalidResource as exc:
            note(f"refused: {exc}")
    return out


@pytest.mark.slow
@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.lists(st.sampled_from([http_routes, grpc_routes]), min_size=2, max_size=6)
       .flatmap(lambda kinds: st.tuples(*(k(f"gen{i}") for i, k in enumerate(kinds)))))
def test_generated_routes_the_validator_accepts_envoy_accepts(docs: tuple[Any, ...]) -> None:
    accepted = _accepted(list(docs))
    assume(accepted)
    for resource in accepted:
        note(f"accepted: {resource.to_document()}")
    _envoy_accepts([*parse_documents(ROUTING), *accepted])
