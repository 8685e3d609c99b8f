"""Turn untrusted documents into typed resources, or say exactly what is wrong."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml
from pydantic import ValidationError
from yaml.constructor import ConstructorError

from gossamer.model.authorizationpolicy import AuthorizationPolicy
from gossamer.model.errors import FieldError, InvalidResource
from gossamer.model.externalservice import ExternalService
from gossamer.model.faultpolicy import FaultPolicy
from gossamer.model.gateway import Gateway
from gossamer.model.grpcroute import GRPCRoute
from gossamer.model.httproute import HTTPRoute
from gossamer.model.limits import limit_errors, text_errors
from gossamer.model.mesh import Mesh
from gossamer.model.meta import Resource
from gossamer.model.namespace import Namespace
from gossamer.model.peerauthentication import PeerAuthentication
from gossamer.model.ratelimitpolicy import RateLimitPolicy
from gossamer.model.referencegrant import ReferenceGrant
from gossamer.model.requestauthentication import RequestAuthentication
from gossamer.model.resiliencepolicy import ResiliencePolicy
from gossamer.model.secret import Secret
from gossamer.model.service import Service
from gossamer.model.sidecar import Sidecar
from gossamer.model.smi import SMI_KINDS
from gossamer.model.tcproute import TCPRoute
from gossamer.model.telemetry import Telemetry
from gossamer.model.tlsroute import TLSRoute
from gossamer.model.workload import Workload

_NATIVE: tuple[type[Resource], ...] = (
    Service, Workload, HTTPRoute, PeerAuthentication, AuthorizationPolicy,
    RequestAuthentication, ResiliencePolicy, RateLimitPolicy, FaultPolicy, GRPCRoute,
    TCPRoute, Telemetry, Sidecar, Mesh, ExternalService, Gateway, TLSRoute, Secret,
    ReferenceGrant, Namespace)
KINDS: dict[str, type[Resource]] = {cls.KIND: cls for cls in (*_NATIVE, *SMI_KINDS)}
_KIND_ALIASES = {k.lower(): k for k in KINDS} | {
    "services": "Service",
    "svc": "Service",
    "workloads": "Workload",
    "httproutes": "HTTPRoute",
    "route": "HTTPRoute",
    "routes": "HTTPRoute",
    "peerauthentications": "PeerAuthentication",
    "pa": "PeerAuthentication",
    "authorizationpolicies": "AuthorizationPolicy",
    "authz": "AuthorizationPolicy",
    "ap": "AuthorizationPolicy",
    "requestauthentications": "RequestAuthentication",
    "ra": "RequestAuthentication",
    "resiliencepolicies": "ResiliencePolicy",
    "resilience": "ResiliencePolicy",
    "rp": "ResiliencePolicy",
    "ratelimitpolicies": "RateLimitPolicy",
    "ratelimit": "RateLimitPolicy",
    "rlp": "RateLimitPolicy",
    "faultpolicies": "FaultPolicy",
    "fault": "FaultPolicy",
    "fp": "FaultPolicy",
    "grpcroutes": "GRPCRoute",
    "tcproutes": "TCPRoute",
    "telemetries": "Telemetry",
    "sidecars": "Sidecar",
    "meshes": "Mesh",
    "externalservices": "ExternalService",
    "es": "ExternalService",
    "gateways": "Gateway",
    "gtw": "Gateway",
    "tlsroutes": "TLSRoute",
    "secrets": "Secret",
    "referencegrants": "ReferenceGrant",
    "namespaces": "Namespace",
    "ns": "Namespace",
    "trafficsplits": "TrafficSplit",
    "traffictargets": "TrafficTarget",
    "httproutegroups": "HTTPRouteGroup",
    "tcproutes.specs.smi-spec.io": "TCPRoute.specs.smi-spec.io",
}
# A document's `kind` names one or more classes (SMI's TCPRoute and the Gateway API's
# share the name); its apiVersion picks one.
_BY_DOCUMENT_KIND: dict[str, list[type[Resource]]] = {}
for _cls in KINDS.values():
    _BY_DOCUMENT_KIND.setdefault(str(_cls.model_fields["kind"].default), []).append(_cls)
DOCUMENT_KINDS = list(_BY_DOCUMENT_KIND)
# Validators in this package phrase errors about a sub-field as "field: reason".
_SUBFIELD = re.compile(r"^([a-zA-Z][\w]*(?:\[\d+\])?(?:\.[a-zA-Z][\w]*(?:\[\d+\])?)*): (.+)$", re.S)


def kind_for(name: str) -> type[Resource]:
    """The resource class for a kind name as a user types it (`httproute`, `svc`...)."""
    canonical = (KINDS.get(name) and name) or _KIND_ALIASES.get(name.lower())
    if canonical is None:
        raise InvalidResource(
            [FieldError("kind", f"unknown kind {name!r}; known kinds: {', '.join(KINDS)}")]
        )
    return KINDS[canonical]


def _class_for(kind: str, api_version: object) -> type[Resource] | None:
    """The class of a document's kind and apiVersion; None for an apiVersion no class
    of that kind has."""
    return next((c for c in _BY_DOCUMENT_KIND[kind] if api_version in c.API_VERSIONS), None)


def _path(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith("function-") or part in {"literal[...]"}:
            continue
        else:
            out += f".{part}" if out else part
    return out


def _field_errors(exc: ValidationError) -> list[FieldError]:
    errors = []
    for err in exc.errors(include_url=False):
        path, msg = _path(err["loc"]), str(err["msg"]).removeprefix("Value error, ")
        sub = _SUBFIELD.match(msg)
        if sub:
            path = f"{path}.{sub.group(1)}" if path else sub.group(1)
            msg = sub.group(2)
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        errors.append(FieldError(path, msg))
    return errors


def parse_document(doc: object, *, stored: bool = False) -> Resource:
    """Validate one document; raises InvalidResource listing every bad field.

    `stored`: a document read back from the store. It is not held to the size limits,
    which apply to writes, so that a limit added later never drops what is already
    stored (and serving)."""
    if not isinstance(doc, Mapping):
        raise InvalidResource([FieldError("", "a resource must be a mapping (YAML object)")])
    kind = doc.get("kind")
    if not isinstance(kind, str):
        raise InvalidResource([FieldError("kind", "required; one of "
                                          + ", ".join(DOCUMENT_KINDS))])
    if kind not in _BY_DOCUMENT_KIND:
        raise InvalidResource([FieldError(
            "kind", f"unknown kind {kind!r}; known kinds: {', '.join(DOCUMENT_KINDS)}")])
    meta = doc.get("metadata")
    name = str(meta.get("name", "")) if isinstance(meta, Mapping) else ""
    cls = _class_for(kind, doc.get("apiVersion"))
    if cls is None:
        wanted = " or ".join(c.API_VERSIONS[0] for c in _BY_DOCUMENT_KIND[kind])
        raise InvalidResource(
            [FieldError("apiVersion", f"{kind} needs apiVersion {wanted}")],
            kind=kind,
            name=name,
        )
    body = {k: v for k, v in doc.items() if k != "status"}
    bad_text = text_errors(body)
    if bad_text:
        raise InvalidResource(bad_text, kind=kind, name=name)
    try:
        res = cls.model_validate(body)
    except ValidationError as exc:
        raise InvalidResource(_field_errors(exc), kind=kind, name=name) from exc
    too_big = [] if stored else limit_errors(res.to_document())
    if too_big:
        raise InvalidResource(too_big, kind=kind, name=name)
    return res


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line (PyYAML's own text spans several): the problem and where it is."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if not problem:
        return " ".join(str(exc).split())
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    context = getattr(exc, "context", None)
    return f"{context}: {problem}{where}" if context else f"{problem}{where}"


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key given twice in one mapping is an error (PyYAML
    keeps the last silently, so a typo'd second `port:` would win unnoticed), and so is
    an integer too long for Python to convert (a ValueError PyYAML does not wrap)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base`: keys it brings in may be overridden
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:
                continue  # unhashable: the base class reports it
            if first is not key_node.start_mark:
                raise ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found duplicate key {key!r} (first at line {first.line + 1})",
                    key_node.start_mark)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError as exc:
            raise ConstructorError(None, None, f"integer too large ({len(str(node.value))} "
                                   "characters)", node.start_mark) from exc


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


def load_yaml_documents(text: str) -> list[Any]:
    """The non-empty documents of a YAML or JSON stream, or one clear error."""
    try:
        return [d for d in yaml.load_all(text, Loader=_Loader) if d is not None]
    except yaml.YAMLError as exc:
        raise InvalidResource([FieldError("", f"not valid YAML: {_yaml_problem(exc)}")]) from exc
    except RecursionError as exc:
        raise InvalidResource([FieldError("", "not valid YAML: nested too deeply")]) from exc


def parse_documents(text: str) -> list[Resource]:
    """Every document of a YAML or JSON stream; the first bad one raises."""
    docs = load_yaml_documents(text)
    out = []
    for i, doc in enumerate(docs):
        try:
            out.append(parse_document(doc))
        except InvalidResource as exc:
            if len(docs) > 1:
                where = f"document {i + 1}"
                errors = [
                    FieldError(f"{where}: {e.path}" if e.path else where, e.reason)
                    for e in exc.errors
                ]
                raise InvalidResource(errors, kind=exc.kind, name=exc.name) from exc
            raise
    return out


def dump_document(resource: Resource, status: Mapping[str, Any] | None = None) -> dict[str, Any]:
    doc = resource.to_document()
    if status:
        doc["status"] = dict(status)
    return doc
