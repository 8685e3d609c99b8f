"""Would this request be allowed? Answered from the Envoy config a sidecar really runs.

`explain` walks the destination proxy's translated inbound listener the way
Envoy does: pick the filter chain (mTLS or plaintext), run jwt_authn on the
given claims, then the RBAC filters in order (DENY first, then ALLOW), with
the same matchers. Reading the translated config rather than the policy
documents means the answer includes every translation decision (ports, TCP
rules, trust domain), so `gossamer authz check` cannot disagree with Envoy on
anything translation emits. Matchers translation never emits are refused
(`Unsupported`) rather than guessed.

`check` builds the destination's config for a representative workload of the
destination Service and asks `explain`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from envoy.config.listener.v3.listener_components_pb2 import Filter, FilterChain
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3.route_components_pb2 import HeaderMatcher
from envoy.extensions.filters.http.jwt_authn.v3.config_pb2 import JwtAuthentication, JwtProvider
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac
from envoy.type.matcher.v3.metadata_pb2 import MetadataMatcher
from envoy.type.matcher.v3.string_pb2 import StringMatcher
from envoy.type.matcher.v3.value_pb2 import ValueMatcher
from google.protobuf.message import Message

from gossamer.contract.node import NodeMetadata
from gossamer.contract.spiffe import SpiffeId
from gossamer.translate import names
from gossamer.translate.jwt import JWT_FILTER, JWT_PAYLOAD
from gossamer.translate.mesh import MeshConfig
from gossamer.translate.protos import HCM, HTTP_RBAC, JWT_AUTHN, NETWORK_RBAC
from gossamer.translate.proxy import ProxyConfig, translate_proxy
from gossamer.xds.types import LISTENER

M = TypeVar("M", bound=Message)
CLOSED = 0  # Decision.status when there is no HTTP response: the connection is closed.


class Unsupported(ValueError):
    """The config uses an Envoy matcher this evaluator does not implement."""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    # 200 allowed, 403 denied by RBAC, 401 token rejected, 0 connection closed
    # (plaintext to a STRICT workload, a TCP denial, nothing to connect to).
    status: int
    # The Envoy RBAC policy (`<namespace>/<name>[rule-<i>]`) or JWT provider that decided.
    policy: str | None
    reason: str


@dataclass(frozen=True)
class _Request:
    peer: str | None  # the caller's proven URI SAN; None on plaintext
    port: int
    headers: Mapping[str, str]  # lowercase names, pseudo-headers included
    payload: Mapping[str, Any] | None = None  # the verified JWT payload
    tcp: bool = False

    @property
    def path(self) -> str:
        return self.headers.get(":path", "/").split("?", 1)[0]


@dataclass
class _Walk:
    """What evaluation learned so far, for the reason text."""

    notes: list[str] = field(default_factory=list)
    allowed_by: str | None = None


# ---------------------------------------------------------------- matchers


def _string(m: StringMatcher, value: str) -> bool:
    kind = m.WhichOneof("match_pattern")
    if kind == "safe_regex":  # RE2 in Envoy; the patterns emitted are Python-compatible
        return re.fullmatch(m.safe_regex.regex, value) is not None
    if kind not in ("exact", "prefix", "suffix", "contains"):
        raise Unsupported(f"string matcher {kind!r}")
    want: str = getattr(m, kind)
    have = value
    if m.ignore_case:
        want, have = want.lower(), have.lower()
    if kind == "exact":
        return have == want
    if kind == "prefix":
        return have.startswith(want)
    return have.endswith(want) if kind == "suffix" else want in have


def _header(m: HeaderMatcher, req: _Request) -> bool:
    value = req.headers.get(m.name.lower())
    kind = m.WhichOneof("header_match_specifier")
    result: bool
    if kind == "present_match":
        result = (value is not None) == bool(m.present_match)
    elif value is None:
        return False
    elif kind == "string_match":
        result = _string(m.string_match, value)
    elif kind == "exact_match":
        result = value == str(m.exact_match)
    else:
        raise Unsupported(f"header matcher {kind!r}")
    return result != bool(m.invert_match)


def _value(m: ValueMatcher, value: Any) -> bool:
    kind = m.WhichOneof("match_pattern")
    if kind == "present_match":
        return bool((value is not None and not isinstance(value, dict | list)) == m.present_match)
    if kind == "string_match":
        return isinstance(value, str) and _string(m.string_match, value)
    if kind == "list_match":
        return isinstance(value, list) and any(_value(m.list_match.one_of, v) for v in value)
    if kind == "or_match":
        return any(_value(v, value) for v in m.or_match.value_matchers)
    if kind == "bool_match":
        return bool(value is m.bool_match)
    if kind == "double_match" and m.double_match.WhichOneof("match_pattern") == "exact":
        return isinstance(value, int | float) and bool(float(value) == m.double_match.exact)
    raise Unsupported(f"value matcher {kind!r}")


def _metadata(m: MetadataMatcher, req: _Request) -> bool:
    if m.filter != JWT_FILTER:
        raise Unsupported(f"metadata of filter {m.filter!r}")
    keys = [seg.key for seg in m.path]
    node: Any = {JWT_PAYLOAD: req.payload} if req.payload is not None else {}
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    result = node is not None and _value(m.value, node)
    return result != bool(m.invert)


def _permission(p: rbac_pb2.Permission, req: _Request) -> bool:
    kind = p.WhichOneof("rule")
    if kind == "any":
        return bool(p.any)
    if kind == "and_rules":
        return all(_permission(r, req) for r in p.and_rules.rules)
    if kind == "or_rules":
        return any(_permission(r, req) for r in p.or_rules.rules)
    if kind == "not_rule":
        return not _permission(p.not_rule, req)
    if kind == "destination_port":
        return bool(req.port == p.destination_port)
    if kind == "header":
        return not req.tcp and _header(p.header, req)
    if kind == "url_path":
        return not req.tcp and _string(p.url_path.path, req.path)
    if kind == "sourced_metadata":
        return _metadata(p.sourced_metadata.metadata_matcher, req)
    raise Unsupported(f"permission {kind!r}")


def _principal(p: rbac_pb2.Principal, req: _Request) -> bool:
    kind = p.WhichOneof("identifier")
    if kind == "any":
        return bool(p.any)
    if kind == "and_ids":
        return all(_principal(i, req) for i in p.and_ids.ids)
    if kind == "or_ids":
        return any(_principal(i, req) for i in p.or_ids.ids)
    if kind == "not_id":
        return not _principal(p.not_id, req)
    if kind == "authenticated":
        if req.peer is None:
            return False
        name = p.authenticated.principal_name
        return not name.WhichOneof("match_pattern") or _string(name, req.peer)
    if kind == "header":
        return not req.tcp and _header(p.header, req)
    if kind == "sourced_metadata":
        return _metadata(p.sourced_metadata.metadata_matcher, req)
    raise Unsupported(f"principal {kind!r}")


def _matching(rules: rbac_pb2.RBAC, req: _Request) -> str | None:
    """The first matching policy in name order: Envoy keeps policies in a sorted map."""
    name: str
    for name in sorted(rules.policies):
        policy = rules.policies[name]
        if policy.HasField("condition") or policy.HasField("checked_condition"):
            raise Unsupported(f"policy {name!r} has a CEL condition")
        if (any(_permission(p, req) for p in policy.permissions)
                and any(_principal(p, req) for p in policy.principals)):
            return name
    return None


# ---------------------------------------------------------------- filters


def _unpack(f: Any, message: type[M], type_url: str) -> M | None:
    """A listener or HTTP filter's typed config, if it is of this type."""
    if f.typed_config.type_url != type_url:
        return None
    msg = message()
    f.typed_config.Unpack(msg)
    return msg


def _rbac(rules: rbac_pb2.RBAC, req: _Request, walk: _Walk) -> Decision | None:
    """None: the filter lets the request through."""
    matched = _matching(rules, req)
    denied_status = CLOSED if req.tcp else 403
    closed = "connection closed: " if req.tcp else ""
    if rules.action == rbac_pb2.RBAC.DENY:
        if matched is not None:
            return _denied(walk, denied_status, matched,
                           f"{closed}denied by DENY policy {matched}")
        walk.notes.append(f"no DENY policy matched ({len(rules.policies)} checked)")
        return None
    if matched is None:
        checked = ", ".join(sorted(rules.policies))
        why = f"checked {checked}" if checked else "ALLOW policies without rules: default deny"
        return _denied(walk, denied_status, None, f"{closed}no ALLOW policy matched ({why})")
    walk.notes.append(f"allowed by ALLOW policy {matched}")
    walk.allowed_by = matched
    return None


def _denied(walk: _Walk, status: int, policy: str | None, why: str) -> Decision:
    return Decision(False, status, policy, "; ".join([*walk.notes, why]))


def _audiences(claims: Mapping[str, Any]) -> list[str]:
    aud = claims.get("aud")
    return [aud] if isinstance(aud, str) else [a for a in aud or [] if isinstance(a, str)]


def _check_token(provider: JwtProvider, claims: Mapping[str, Any]) -> str | None:
    """Why jwt_authn rejects a validly signed token with these claims, if it does."""
    if provider.audiences and not set(provider.audiences) & set(_audiences(claims)):
        return "Audiences in Jwt are not allowed"
    now = time.time()
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if isinstance(exp, int | float) and exp < now:
        return "Jwt is expired"
    if isinstance(nbf, int | float) and nbf > now:
        return "Jwt not yet valid"
    return None


def _jwt(config: JwtAuthentication | None, claims: Mapping[str, Any] | None,
         walk: _Walk) -> tuple[Mapping[str, Any] | None, Decision | None]:
    """The payload RBAC will see, or the 401 jwt_authn answers."""
    if not claims:
        walk.notes.append("no token")
        return None, None
    if config is None:
        walk.notes.append("no RequestAuthentication covers the workload: the token is "
                          "not verified and its claims are not used")
        return None, None
    providers = [(n, p) for n, p in sorted(config.providers.items())
                 if p.issuer == claims.get("iss")]
    if not providers:
        return None, _denied(walk, 401, None, "token rejected: Jwt issuer is not configured")
    problems = [(n, _check_token(p, claims)) for n, p in providers]
    for name, problem in problems:
        if problem is None:
            walk.notes.append(f"token accepted by {name}")
            return claims, None
    name, problem = problems[0]
    return None, _denied(walk, 401, name, f"token rejected by {name}: {problem}")


def _http(hcm: hcm_pb2.HttpConnectionManager, req: _Request, claims: Mapping[str, Any] | None,
          walk: _Walk) -> Decision:
    jwt_config: JwtAuthentication | None = None
    for f in hcm.http_filters:
        jwt_config = _unpack(f, JwtAuthentication, JWT_AUTHN) or jwt_config
    payload, rejected = _jwt(jwt_config, claims, walk)
    if rejected is not None:
        return rejected
    req = _Request(req.peer, req.port, req.headers, payload)
    for f in hcm.http_filters:
        rbac = _unpack(f, http_rbac.RBAC, HTTP_RBAC)
        if rbac is not None and (denied := _rbac(rbac.rules, req, walk)):
            return denied
    return _allowed(walk)


def _tcp(filters: Sequence[Filter], req: _Request, walk: _Walk) -> Decision:
    walk.notes.append("TCP: only the connection is checked")
    for f in filters:
        rbac = _unpack(f, network_rbac.RBAC, NETWORK_RBAC)
        if rbac is not None and (denied := _rbac(rbac.rules, req, walk)):
            return denied
    return _allowed(walk)


def _allowed(walk: _Walk) -> Decision:
    if walk.allowed_by is None:
        walk.notes.append("no ALLOW policy covers the workload")
    return Decision(True, 200, walk.allowed_by, "; ".join(walk.notes))


# ---------------------------------------------------------------- entry points


def _chain(listener: Listener, source: SpiffeId | None,
           walk: _Walk) -> tuple[FilterChain | None, str | None]:
    by_transport = {c.filter_chain_match.transport_protocol: c for c in listener.filter_chains}
    if source is not None and "tls" in by_transport:
        walk.notes.append(f"mTLS as {source}")
        return by_transport["tls"], str(source)
    plain = by_transport.get("raw_buffer") or by_transport.get("")
    if plain is None:
        return None, None
    if source is not None:
        walk.notes.append(f"plaintext (mTLS is off): {source} is not a proven identity")
    else:
        walk.notes.append("plaintext caller (no identity)")
    return plain, None


def _inbound(config: ProxyConfig | Listener) -> Listener | None:
    if isinstance(config, Listener):
        return config
    res = config.snapshot.resources.get(LISTENER, {}).get(names.INBOUND_LISTENER)
    return None if res is None else Listener.FromString(res.payload)


def explain(config: ProxyConfig | Listener, *, source: SpiffeId | None, port: int | None = None,
            method: str = "GET", path: str = "/", headers: Mapping[str, str] | None = None,
            claims: Mapping[str, Any] | None = None) -> Decision:
    """Evaluate one request against a proxy's inbound listener.

    `source`: the caller's identity, or None for a caller without a sidecar
    (plaintext). `port`: the destination port of the connection, by default
    the listener's. `claims`: the payload of a correctly signed token the
    caller presents (None: no token); jwt_authn's issuer, audience and time
    checks are applied to it.
    """
    listener = _inbound(config)
    if listener is None:
        return Decision(False, CLOSED, None, "the proxy takes no inbound traffic")
    walk = _Walk()
    chain, peer = _chain(listener, source, walk)
    if chain is None:
        return Decision(False, CLOSED, None,
                        "plaintext connection closed: mTLS is STRICT for this workload")
    hdrs = {k.lower(): v for k, v in (headers or {}).items()}
    hdrs |= {":method": method, ":path": path}
    req = _Request(peer, port or listener.address.socket_address.port_value, hdrs)
    for f in chain.filters:
        hcm = _unpack(f, hcm_pb2.HttpConnectionManager, HCM)
        if hcm is not None:
            return _http(hcm, req, claims, walk)
    return _tcp(list(chain.filters), _Request(peer, req.port, hdrs, tcp=True), walk)


def _representative(mesh: MeshConfig, namespace: str, service: str) -> NodeMetadata:
    """A proxy of the service: its first registered workload (healthy first), else a
    made-up one with the service's default identity."""
    index = mesh.index
    candidates = [w for w in index.workloads
                  if (namespace, service) in index.workload_services.get(
                      (w.metadata.namespace, w.metadata.name), ())]
    candidates.sort(key=lambda w: (w.spec.health.value != "Healthy", w.metadata.name))
    meta: dict[str, object] = {"service": service, "namespace": namespace,
                               "inbound_port": 15006, "app_port": 8080, "outbound_port": 0}
    if candidates:
        w = candidates[0]
        meta |= {"service": w.spec.service, "workload": w.metadata.name,
                 "inbound_port": w.spec.port, "inbound_address": w.spec.address,
                 "app_port": w.spec.app_port or w.spec.port, "service_account": w.account}
    return NodeMetadata.from_metadata(f"authz-check~{namespace}~{service}", meta)


def check(mesh: MeshConfig, *, from_service: str | None, from_namespace: str = "default",
          to_service: str, to_namespace: str = "default", port: int | None = None,
          method: str = "GET", path: str = "/", headers: Mapping[str, str] | None = None,
          claims: Mapping[str, Any] | None = None) -> Decision:
    """May `from_service` (None: a caller without a sidecar) call `to_service`?

    `port` is a port of the destination Service (0 or None: its first port).
    The caller's identity is that of its first workload's account (the
    service name if it has none).
    """
    svc = mesh.index.service(to_namespace, to_service)
    if svc is None:
        return Decision(False, CLOSED, None, f"no Service {to_namespace}/{to_service}")
    if port and svc.port(port) is None:
        return Decision(False, CLOSED, None, f"Service {to_namespace}/{to_service} has no "
                        f"port {port}")
    proxy = _representative(mesh, to_namespace, to_service)
    source = None
    if from_service is not None:
        account = mesh.index.service_accounts(from_namespace, from_service)[0]
        source = SpiffeId(mesh.settings.trust_domain, from_namespace, account)
    decision = explain(translate_proxy(mesh, proxy), source=source, method=method, path=path,
                       headers=headers, claims=claims)
    where = f"at {proxy.workload} ({to_namespace}/{to_service})"
    return Decision(decision.allowed, decision.status, decision.policy,
                    f"{decision.reason}; {where}")
