"""Gateways in the index: which listeners serve, which routes attach to each, and the
status conditions the Gateway API specifies for Gateways, listeners and routes.

A Gateway that cannot be served as written is reported, never refused and never a
crash: a listener whose protocol Gossamer does not serve is `Accepted: False,
UnsupportedProtocol`; two listeners on one port with protocols that cannot share it
are `Conflicted: True, ProtocolConflict` (the first listener on the port keeps it);
a certificate that is missing or of another kind is `ResolvedRefs: False`
(`InvalidCertificateRef`), and so is one in another namespace that no ReferenceGrant
there opens to the Gateway (`RefNotPermitted`). Only listeners that are accepted,
unconflicted and resolved are programmed (`serving`).

A route attaches to a listener only from the namespaces its `allowedRoutes` admit
(`Same`, `All`, or those whose labels the `Selector` matches). A route's backendRef
to a Service of another namespace needs a ReferenceGrant there too; without one the
route is `ResolvedRefs: False, RefNotPermitted` and that backend is treated as
missing (its share of requests gets 500): `GatewayView.refused`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gossamer.model import (
    Condition,
    Gateway,
    GRPCRoute,
    HTTPRoute,
    ReferenceGrant,
    ResourceKey,
    Secret,
    Service,
    TCPRoute,
    TLSRoute,
)
from gossamer.model.gateway import GATEWAY_CLASS, SUPPORTED_PROTOCOLS, FromNamespaces, Listener
from gossamer.model.httproute import ParentRef
from gossamer.model.meta import GATEWAY_GROUP
from gossamer.model.namespace import labels_of

CONTROLLER = "gateway.gossamer.dev/controller"
SvcKey = tuple[str, str]  # (namespace, name), as index/view.py has it
GatewayRoute = HTTPRoute | GRPCRoute | TLSRoute | TCPRoute
# The route kinds each protocol takes (a listener's supportedKinds by default).
_KINDS = {"HTTP": ("HTTPRoute", "GRPCRoute"), "HTTPS": ("HTTPRoute", "GRPCRoute"),
          "TLS": ("TLSRoute",),
          "TCP": ("TCPRoute",)}
# Protocols that can share a port: TLS routes and terminates by SNI beside HTTPS.
_FAMILY = {"HTTP": "http", "HTTPS": "tls", "TLS": "tls", "TCP": "tcp"}


@dataclass(frozen=True)
class ListenerView:
    """A listener the gateway serves, and what attaches to it: each route with the
    hostnames it is served under there (the intersection with the listener's)."""

    listener: Listener
    routes: tuple[tuple[GatewayRoute, tuple[str, ...]], ...] = ()
    certificates: tuple[Secret, ...] = ()


@dataclass(frozen=True)
class GatewayView:
    gateway: Gateway
    serving: tuple[ListenerView, ...]
    # Per route: the backend Services of other namespaces no ReferenceGrant opens to it.
    refused: Mapping[ResourceKey, frozenset[SvcKey]] = field(default_factory=dict)

    def services_for(self, route: GatewayRoute,
                     services: Mapping[SvcKey, Service]) -> Mapping[SvcKey, Service]:
        """The Services `route` may send to from this gateway: a refused backend is
        as good as missing (the Gateway API's 500 for an invalid backendRef)."""
        refused = self.refused.get(route.key)
        if not refused:
            return services
        return {k: v for k, v in services.items() if k not in refused}

    @property
    def key(self) -> SvcKey:
        return self.gateway.metadata.namespace, self.gateway.metadata.name


@dataclass
class _Listening:
    """One listener's conditions while they are worked out."""

    listener: Listener
    accepted: Condition
    conflicted: Condition
    resolved: Condition
    certificates: tuple[Secret, ...] = ()
    routes: list[tuple[GatewayRoute, tuple[str, ...]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.accepted.status == "True" and self.conflicted.status == "False"
                and self.resolved.status == "True")


def _cond(type_: str, ok: bool, reason: str, message: str = "") -> Condition:
    return Condition(type=type_, status="True" if ok else "False", reason=reason,
                     message=message)


@dataclass(frozen=True)
class _Refs:
    """What references resolve against: Secrets, ReferenceGrants by namespace, and
    namespaces' labels."""

    secrets: Mapping[SvcKey, Secret]
    grants: Mapping[str, tuple[ReferenceGrant, ...]]
    labels: Mapping[str, Mapping[str, str]]

    def permitted(self, kind: str, namespace: str, to_kind: str, target: SvcKey) -> bool:
        """Whether a `kind` of `namespace` may refer to `target` (a core `to_kind`):
        always within a namespace, else by a ReferenceGrant in the target's."""
        if target[0] == namespace:
            return True
        return any(g.permits(GATEWAY_GROUP, kind, namespace, "", to_kind, target[1])
                   for g in self.grants.get(target[0], ()))


def _certificates(gw: Gateway, lis: Listener,
                  refs: _Refs) -> tuple[Condition, tuple[Secret, ...]]:
    ns = gw.metadata.namespace
    found: list[Secret] = []
    for i, ref in enumerate(lis.tls.certificate_refs if lis.tls else ()):
        where = f"tls.certificateRefs[{i}]"
        if ref.group not in ("", "core") or ref.kind != "Secret":
            return _cond("ResolvedRefs", False, "InvalidCertificateRef",
                         f"{where}: only Secrets (group \"\") are supported"), ()
        target = (ref.namespace or ns, ref.name)
        if not refs.permitted("Gateway", ns, "Secret", target):
            return _cond("ResolvedRefs", False, "RefNotPermitted",
                         f"{where}: Secret {target[0]}/{target[1]} is in another namespace "
                         f"and no ReferenceGrant in {target[0]!r} lets Gateways of "
                         f"{ns!r} use it"), ()
        secret = refs.secrets.get(target)
        if secret is None:
            return _cond("ResolvedRefs", False, "InvalidCertificateRef",
                         f"{where}: Secret {ref.name!r} not found"), ()
        found.append(secret)
    if lis.protocol == "HTTPS" and not found:
        return _cond("ResolvedRefs", False, "InvalidCertificateRef",
                     "no certificateRefs: Gossamer takes certificates only from them"), ()
    for i, kind in enumerate(lis.allowed_routes.kinds):
        if kind.group != GATEWAY_GROUP or kind.kind not in _KINDS.get(lis.protocol, ()):
            return _cond("ResolvedRefs", False, "InvalidRouteKinds",
                         f"allowedRoutes.kinds[{i}]: {kind.kind} cannot attach to a "
                         f"{lis.protocol} listener"), ()
    return _cond("ResolvedRefs", True, "ResolvedRefs"), tuple(found)


def _listeners(gw: Gateway, refs: _Refs) -> list[_Listening]:
    out: list[_Listening] = []
    family_of_port: dict[int, str] = {}
    hosts_of_port: dict[int, set[str | None]] = {}
    for lis in gw.spec.listeners:
        resolved, certs = _certificates(gw, lis, refs)
        no_conflict = _cond("Conflicted", False, "NoConflicts")
        if lis.protocol not in SUPPORTED_PROTOCOLS:
            out.append(_Listening(lis, _cond("Accepted", False, "UnsupportedProtocol",
                                             f"protocol {lis.protocol!r}: Gossamer serves "
                                             + ", ".join(SUPPORTED_PROTOCOLS)),
                                  no_conflict, resolved))
            continue
        family = _FAMILY[lis.protocol]
        conflicted = no_conflict
        first = family_of_port.setdefault(lis.port, family)
        hosts = hosts_of_port.setdefault(lis.port, set())
        if first != family:
            conflicted = _cond("Conflicted", True, "ProtocolConflict",
                               f"port {lis.port} is already a {first} port of an earlier "
                               f"listener; {lis.protocol} cannot share it")
        elif family != "http" and lis.hostname in hosts:
            conflicted = _cond("Conflicted", True, "HostnameConflict",
                               f"an earlier listener on port {lis.port} has hostname "
                               f"{lis.hostname or '(any)'}")
        else:
            hosts.add(lis.hostname)
        out.append(_Listening(lis, _cond("Accepted", True, "Accepted"), conflicted,
                              resolved, certs))
    return out


def _wild(pattern: str, host: str) -> bool:
    suffix = pattern[1:]
    return host.endswith(suffix) and len(host) > len(suffix)


def intersect(listener: str | None, route: Iterable[str]) -> tuple[str, ...]:
    """The hostnames a route is served under on a listener (Gateway API: a route
    without hostnames takes the listener's; a wildcard matches one or more labels)."""
    names = list(route)
    if not names:
        return (listener or "*",)
    if listener is None:
        return tuple(names)
    out: list[str] = []
    for h in names:
        if h == listener or (listener.startswith("*.") and _wild(listener, h)):
            out.append(h)
        elif h.startswith("*.") and _wild(h, listener):
            out.append(listener)
    return tuple(dict.fromkeys(out))


def _matches(ref: ParentRef, lis: Listener) -> bool:
    return ref.section_name in (None, lis.name) and ref.port in (None, lis.port)


def _allowed(lis: Listener, gw: Gateway, route: GatewayRoute, refs: _Refs) -> bool:
    kinds = [k.kind for k in lis.allowed_routes.kinds] or list(_KINDS.get(lis.protocol, ()))
    if route.kind not in kinds:
        return False
    namespaces = lis.allowed_routes.namespaces
    if namespaces.from_ is FromNamespaces.ALL:
        return True
    if namespaces.from_ is FromNamespaces.SELECTOR:
        return namespaces.selector is not None and namespaces.selector.matches(
            labels_of(refs.labels, route.metadata.namespace))
    return route.metadata.namespace == gw.metadata.namespace


def _parent_status(ref: ParentRef, accepted: Condition, resolved: Condition) -> dict[str, Any]:
    return {"parentRef": ref.model_dump(by_alias=True, exclude_none=True, mode="json"),
            "controllerName": CONTROLLER,
            "conditions": [accepted.model_dump(mode="json"), resolved.model_dump(mode="json")]}


def _attach(route: GatewayRoute, ref: ParentRef, gw: Gateway | None,
            listening: list[_Listening], resolved: Condition, refs: _Refs) -> dict[str, Any]:
    """Attach the route to the parent's matching listeners; its parent status."""
    if gw is None:
        return _parent_status(ref, _cond("Accepted", False, "NoMatchingParent",
                                         f"Gateway {ref.name!r} not found"), resolved)
    candidates = [lst for lst in listening if _matches(ref, lst.listener) and lst.ok]
    if not candidates:
        return _parent_status(ref, _cond("Accepted", False, "NoMatchingParent",
                                         "no programmed listener matches sectionName "
                                         f"{ref.section_name} port {ref.port}"), resolved)
    allowed = [lst for lst in candidates if _allowed(lst.listener, gw, route, refs)]
    if not allowed:
        return _parent_status(ref, _cond("Accepted", False, "NotAllowedByListeners",
                                         f"no matching listener takes a {route.kind} from "
                                         f"namespace {route.metadata.namespace!r}"), resolved)
    taken = 0
    for lst in allowed:
        hosts = intersect(lst.listener.hostname, getattr(route.spec, "hostnames", ()))
        if isinstance(route, TCPRoute) and lst.routes:
            continue  # one TCPRoute per TCP listener: the first by name
        if hosts:
            lst.routes.append((route, hosts))
            taken += 1
    if not taken:
        return _parent_status(ref, _cond("Accepted", False, "NoMatchingListenerHostname",
                                         "no hostname of the route matches a matching "
                                         "listener's hostname"), resolved)
    return _parent_status(ref, _cond("Accepted", True, "Accepted"), resolved)


def _gateway_status(gw: Gateway, listening: list[_Listening]) -> dict[str, Any]:
    ours = gw.spec.gateway_class_name == GATEWAY_CLASS
    accepted = _cond("Accepted", True, "Accepted") if ours else Condition(
        type="Accepted", status="Unknown", reason="Pending",
        message=f"gatewayClassName {gw.spec.gateway_class_name!r}: Gossamer serves "
                f"{GATEWAY_CLASS!r}")
    if ours and not any(lst.ok for lst in listening):
        accepted = _cond("Accepted", False, "ListenersNotValid", "no listener can be served")
    listeners = []
    for lst in listening:
        programmed = _cond("Programmed", lst.ok, "Programmed" if lst.ok else "Invalid")
        listeners.append({
            "name": lst.listener.name,
            "supportedKinds": [{"group": GATEWAY_GROUP, "kind": k}
                               for k in _KINDS.get(lst.listener.protocol, ())],
            "attachedRoutes": len(lst.routes),
            "conditions": [c.model_dump(mode="json") for c in
                           (lst.accepted, programmed, lst.resolved, lst.conflicted)]})
    programmed = Condition(type="Programmed", status="False", reason="Pending",
                           message="no replica of this gateway has ACKed its config")
    return {"conditions": [accepted.model_dump(mode="json"), programmed.model_dump(mode="json")],
            "listeners": listeners}


def backend_keys(route: GatewayRoute) -> set[SvcKey]:
    """The Services a route's rules send or mirror to."""
    ns = route.metadata.namespace
    keys = {(b.namespace or ns, b.name) for rule in route.spec.rules for b in rule.backend_refs}
    if isinstance(route, HTTPRoute | GRPCRoute):
        keys.update((m.backend_ref.namespace or ns, m.backend_ref.name)
                    for rule in route.spec.rules for m in rule.mirrors)
    return keys


def _refused(route: GatewayRoute, refs: _Refs) -> frozenset[SvcKey]:
    ns = route.metadata.namespace
    return frozenset(k for k in backend_keys(route)
                     if not refs.permitted(route.kind, ns, "Service", k))


def _missing_backends(route: GatewayRoute, services: Mapping[SvcKey, Service],
                      refused: frozenset[SvcKey]) -> Condition:
    ns = route.metadata.namespace
    if refused:
        return _cond("ResolvedRefs", False, "RefNotPermitted",
                     "backend Service in another namespace with no ReferenceGrant there "
                     f"for {route.kind}s of {ns!r} (its share gets HTTP 500, or its "
                     "connections are closed): "
                     + ", ".join(f"{n}/{s}" for n, s in sorted(refused)))
    missing = sorted({f"{b.name}:{b.port}" for rule in route.spec.rules
                      for b in rule.backend_refs
                      if (svc := services.get((b.namespace or ns, b.name))) is None
                      or b.port is None or svc.port(b.port) is None})
    if missing:
        return _cond("ResolvedRefs", False, "BackendNotFound",
                     "backend Service port not found (its share gets HTTP 500, or its "
                     "connections are closed): " + ", ".join(missing))
    return _cond("ResolvedRefs", True, "ResolvedRefs")


def gateway_index(gateways: Iterable[Gateway], routes: Iterable[GatewayRoute],
                  secrets: Iterable[Secret], services: Mapping[SvcKey, Service],
                  grants: Iterable[ReferenceGrant] = (),
                  labels: Mapping[str, Mapping[str, str]] | None = None,
                  ) -> tuple[dict[SvcKey, GatewayView], dict[ResourceKey, dict[str, Any]]]:
    """Each Gateway of class gossamer as served, and the status of every Gateway and
    of every route with a Gateway parent (`status.parents`, per parentRef).
    `labels`: each namespace's labels (model/namespace.py)."""
    by_ns: dict[str, list[ReferenceGrant]] = {}
    for grant in grants:
        by_ns.setdefault(grant.metadata.namespace, []).append(grant)
    refs = _Refs({(s.metadata.namespace, s.metadata.name): s for s in secrets},
                 {ns: tuple(g) for ns, g in by_ns.items()}, labels or {})
    listening: dict[SvcKey, tuple[Gateway, list[_Listening]]] = {}
    for gw in gateways:
        key = (gw.metadata.namespace, gw.metadata.name)
        listening[key] = gw, _listeners(gw, refs)
    status: dict[ResourceKey, dict[str, Any]] = {}
    refused: dict[ResourceKey, frozenset[SvcKey]] = {}
    for route in routes:
        parents = [p for p in route.spec.parent_refs if p.is_gateway]
        if not parents:
            continue
        if denied := _refused(route, refs):
            refused[route.key] = denied
        resolved = _missing_backends(route, services, denied)
        out = []
        for ref in parents:
            found = listening.get((ref.namespace or route.metadata.namespace, ref.name))
            ours = found is not None and found[0].spec.gateway_class_name == GATEWAY_CLASS
            out.append(_attach(route, ref, found[0] if found and ours else None,
                               found[1] if found else [], resolved, refs))
        status[route.key] = {"parents": out}
    views: dict[SvcKey, GatewayView] = {}
    for key, (gw, lsts) in listening.items():
        status[gw.key] = _gateway_status(gw, lsts)
        if gw.spec.gateway_class_name == GATEWAY_CLASS:
            serving = tuple(ListenerView(lst.listener, tuple(lst.routes), lst.certificates)
                            for lst in lsts if lst.ok)
            mine = {r.key for lst in serving for r, _ in lst.routes}
            views[key] = GatewayView(gw, serving, {k: v for k, v in refused.items()
                                                   if k in mine})
    return views, status
