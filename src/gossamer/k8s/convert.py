"""Kubernetes objects -> the documents `gossamer apply` would store (pure).

The controller (`k8s/controller.py`) keeps the cluster's objects as plain JSON data
(what the API server sends) and asks this module what the store should hold. Nothing
here does I/O, so the whole mapping is golden-tested (tests/unit/k8s/test_convert.py)
and the controller's job is only to diff the answer against the store. Every
document is validated by the model's own parser, so an object Kubernetes accepted but
Gossamer cannot serve becomes a `Problem`, never a push Envoy would reject.

What maps to what (docs/kubernetes.md has the table):
- a core Service -> a Service (its ClusterIP is the virtual IP, `appProtocol` or the
  port name's prefix the protocol, its selector the selector);
- a running Pod with an IP -> a Workload named after the pod (labels, plus its
  node's zone and region labels for locality; its ServiceAccount is its identity
  `ns/NS/sa/SA`), Healthy only while an EndpointSlice lists it as ready;
- an EndpointSlice endpoint that is no Pod (a Service without selector) -> a
  Workload of that Service;
- a Namespace with labels -> a Namespace (its labels; Gateway listeners select by them);
- Gossamer CRDs, Gateway API Gateways and routes and the SMI kinds -> themselves,
  as applied;
- a TLS Secret a Gateway's listener names in `certificateRefs` -> a Secret (its
  `tls.crt`, `tls.key`, `ca.crt`); Secrets no Gateway names stay out of the store.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gossamer.model.errors import InvalidResource
from gossamer.model.meta import GATEWAY_GROUP, ResourceKey
from gossamer.model.namespace import NAME_LABEL
from gossamer.model.registry import KINDS, dump_document, parse_document

# Written on every document the controller stores: what it may replace or delete.
SOURCE_ANNOTATION = "gossamer.dev/source"
SOURCE = "kubernetes"
# Set by injection (k8s/inject.py) on a pod it gave a sidecar: the JSON of InjectedPod.
STATUS_ANNOTATION = "gossamer.dev/status"
SERVICE_ANNOTATION = "gossamer.dev/service"
ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"
# Namespaces of the cluster's own machinery: never part of the mesh.
SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})
_PROTOCOLS = {"http": "http", "http2": "http2", "kubernetes.io/h2c": "http2", "h2c": "http2",
              "grpc": "grpc", "tcp": "tcp", "https": "tcp", "tls": "tcp",
              "kubernetes.io/ws": "http", "kubernetes.io/wss": "tcp"}
MESH_KINDS_GROUPS = ("mesh.gossamer.dev", "gateway.networking.k8s.io", "split.smi-spec.io",
                     "access.smi-spec.io", "specs.smi-spec.io")

_TLS_KEYS = ("tls.crt", "tls.key", "ca.crt")

Objects = Mapping[tuple[str, str], Mapping[str, Any]]  # (namespace, name) -> object


@dataclass(frozen=True)
class Problem:
    """An object that maps to nothing the mesh can serve, and why."""

    kind: str
    namespace: str
    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}: {self.reason}"


@dataclass
class Cluster:
    """The objects the controller watches, by Kubernetes kind (e.g. `Service`,
    `EndpointSlice`, `Pod`, `Node`, `Namespace`, `ServiceAccount`) and, for the mesh's
    own kinds, by `apiVersion` group and kind (`mesh.gossamer.dev/FaultPolicy`)."""

    objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = field(default_factory=dict)

    def of(self, kind: str) -> dict[tuple[str, str], dict[str, Any]]:
        return self.objects.setdefault(kind, {})


@dataclass
class Desired:
    documents: dict[ResourceKey, dict[str, Any]] = field(default_factory=dict)
    # Which Kubernetes object (kind, namespace, name) each document came from.
    origins: dict[ResourceKey, tuple[str, str, str]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def desired(cluster: Cluster) -> Desired:
    """Every document the store should hold for this cluster state."""
    out = Desired()
    live = _live_namespaces(cluster)
    for (_, name), namespace in sorted(cluster.of("Namespace").items()):
        if name in live:
            _add(out, "Namespace", namespace, namespace_document(namespace))
    for (ns, _), svc in sorted(cluster.of("Service").items()):
        if ns in live:
            _add(out, "Service", svc, service_document(svc))
    health = endpoint_health(cluster.of("EndpointSlice").values())
    nodes = {name: node for (_, name), node in cluster.of("Node").items()}
    for (ns, _), pod in sorted(cluster.of("Pod").items()):
        if ns in live:
            doc = pod_workload(pod, health, nodes)
            if doc is not None:
                _add(out, "Pod", pod, doc)
    for (ns, _), eps in sorted(cluster.of("EndpointSlice").items()):
        if ns in live:
            for doc in slice_workloads(eps):
                _add(out, "EndpointSlice", eps, doc)
    for kind in sorted(k for k in cluster.objects if "/" in k):
        for (ns, _), obj in sorted(cluster.objects[kind].items()):
            if ns in live or not ns:
                _add(out, kind.rsplit("/", 1)[1], obj, mesh_document(obj))
    secrets = cluster.of("Secret")
    for ref in sorted(gateway_secret_refs(cluster)):
        if ref[0] in live and ref in secrets:
            _add(out, "Secret", secrets[ref], secret_document(secrets[ref]))
    return out


def gateway_secret_refs(cluster: Cluster) -> set[tuple[str, str]]:
    """(namespace, name) of every core Secret a Gateway's listener names: the only
    Secrets the control plane stores (key material it has no use for stays out)."""
    out = set()
    for (ns, _), gw in cluster.of(f"{GATEWAY_GROUP}/Gateway").items():
        for lis in (gw.get("spec") or {}).get("listeners") or ():
            for ref in (lis.get("tls") or {}).get("certificateRefs") or ():
                if ref.get("group", "") == "" and ref.get("kind", "Secret") == "Secret" \
                        and ref.get("name"):
                    out.add((str(ref.get("namespace") or ns), str(ref["name"])))
    return out


def secret_document(secret: Mapping[str, Any]) -> dict[str, Any]:
    """A Secret as `gossamer apply` takes it: its type and its TLS keys only (a
    Secret of another type is refused by the model, as a Problem)."""
    data = secret.get("data") or {}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(secret, labels=False),
            "type": secret.get("type") or "Opaque",
            "data": {k: v for k, v in data.items() if k in _TLS_KEYS}}


def _live_namespaces(cluster: Cluster) -> set[str]:
    """Namespaces that exist and are not being deleted (nor the system's own)."""
    out = set()
    for (_, name), ns in cluster.of("Namespace").items():
        if (ns.get("status") or {}).get("phase") != "Terminating" \
                and name not in SYSTEM_NAMESPACES:
            out.add(name)
    return out


def namespace_document(ns: Mapping[str, Any]) -> dict[str, Any] | None:
    """A Namespace with labels of its own, for Gateway listeners' namespace selectors
    (every namespace has its `kubernetes.io/metadata.name` label without one)."""
    meta = ns.get("metadata") or {}
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k != NAME_LABEL}
    if not labels:
        return None
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": meta.get("name"), "labels": labels}}


def _add(out: Desired, kind: str, obj: Mapping[str, Any], doc: dict[str, Any] | None) -> None:
    if doc is None:
        return
    meta = obj.get("metadata") or {}
    origin = (kind, str(meta.get("namespace", "")), str(meta.get("name", "")))
    try:
        res = parse_document(doc)
    except InvalidResource as exc:
        out.problems.append(Problem(*origin, str(exc)))
        return
    if res.key in out.documents:
        first = out.origins[res.key]
        out.problems.append(Problem(*origin, f"{res.key} is already made from {first[0]} "
                                    f"{first[1]}/{first[2]}"))
        return
    stored = dump_document(res)  # as `gossamer apply` stores it
    stored["metadata"].pop("resourceVersion", None)
    stored["metadata"].setdefault("annotations", {})[SOURCE_ANNOTATION] = SOURCE
    out.documents[res.key] = stored
    out.origins[res.key] = origin


def _meta(obj: Mapping[str, Any], *, labels: bool = True) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    out: dict[str, Any] = {"name": meta.get("name"), "namespace": meta.get("namespace")}
    if labels and meta.get("labels"):
        out["labels"] = dict(meta["labels"])
    return out


def port_protocol(port: Mapping[str, Any]) -> str | None:
    """A Service port's protocol: `appProtocol`, else the port name's prefix (`http-web`,
    `grpc`), else tcp (opaque: nothing is assumed about bytes Gossamer cannot name).
    None for UDP and SCTP ports, which the mesh does not carry."""
    if port.get("protocol", "TCP") != "TCP":
        return None
    app = str(port.get("appProtocol") or "").lower()
    if app in _PROTOCOLS:
        return _PROTOCOLS[app]
    prefix = str(port.get("name") or "").split("-", 1)[0].lower()
    return _PROTOCOLS.get(prefix, "tcp")


def service_document(svc: Mapping[str, Any]) -> dict[str, Any] | None:
    spec = svc.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return None
    ports = []
    for p in spec.get("ports") or ():
        protocol = port_protocol(p)
        if protocol is not None:
            ports.append({"port": p.get("port"), "protocol": protocol,
                          **({"name": p["name"]} if p.get("name") else {})})
    if not ports:
        return None
    out_spec: dict[str, Any] = {"ports": ports}
    if spec.get("selector"):
        out_spec["selector"] = dict(spec["selector"])
    vip = spec.get("clusterIP")
    if vip and vip != "None" and _ipv4(vip):
        out_spec["virtualIP"] = vip
    return {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Service",
            "metadata": _meta(svc), "spec": out_spec}


def _ipv4(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False


def endpoint_health(slices: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], str]:
    """(namespace, pod) -> Healthy or Unhealthy, from every slice that lists the pod.

    `ready` (absent means ready, as the API defines it) is what routes traffic: a pod
    that is serving but terminating, or not ready in any slice, is Unhealthy, so it
    leaves the endpoints as it leaves the Service's."""
    out: dict[tuple[str, str], str] = {}
    for eps in slices:
        for ep in eps.get("endpoints") or ():
            ref = ep.get("targetRef") or {}
            if ref.get("kind") != "Pod":
                continue
            key = (str(ref.get("namespace") or eps["metadata"].get("namespace")), ref["name"])
            ready = (ep.get("conditions") or {}).get("ready")
            healthy = ready is None or ready is True
            if out.get(key) != "Unhealthy":
                out[key] = "Healthy" if healthy else "Unhealthy"
    return out


@dataclass(frozen=True)
class InjectedPod:
    """What injection decided for a pod, read back from its status annotation."""

    service: str
    inbound_port: int
    app_port: int | None


def injected(pod: Mapping[str, Any]) -> InjectedPod | None:
    text = ((pod.get("metadata") or {}).get("annotations") or {}).get(STATUS_ANNOTATION)
    if not text:
        return None
    try:
        data = json.loads(text)
        return InjectedPod(str(data["service"]), int(data["inboundPort"]),
                           int(data["appPort"]) if data.get("appPort") else None)
    except (ValueError, KeyError, TypeError):
        return None


def pod_service(pod: Mapping[str, Any]) -> str:
    """The Service a pod's sidecar runs as (its view and policies): the
    `gossamer.dev/service` annotation, else label `app.kubernetes.io/name`, else `app`,
    else its ServiceAccount."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    return str((meta.get("annotations") or {}).get(SERVICE_ANNOTATION)
               or labels.get("app.kubernetes.io/name") or labels.get("app")
               or (pod.get("spec") or {}).get("serviceAccountName") or "default")


def first_container_port(pod: Mapping[str, Any]) -> int | None:
    for c in (pod.get("spec") or {}).get("containers") or ():
        for p in c.get("ports") or ():
            if p.get("protocol", "TCP") == "TCP" and p.get("containerPort"):
                return int(p["containerPort"])
    return None


def pod_workload(pod: Mapping[str, Any], health: Mapping[tuple[str, str], str],
                 nodes: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    """A running pod with an IP as a Workload; None for pods that serve nothing."""
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    ip = status.get("podIP")
    if not ip or status.get("phase") in ("Succeeded", "Failed") or spec.get("hostNetwork"):
        return None
    info = injected(pod)
    labels = dict(meta.get("labels") or {})
    node_labels = (nodes.get(str(spec.get("nodeName"))) or {}).get("metadata", {}) \
        .get("labels") or {}
    for key in (ZONE_LABEL, REGION_LABEL):
        if key in node_labels:
            labels[key] = node_labels[key]
    name, ns = str(meta.get("name")), str(meta.get("namespace"))
    state = "Unhealthy" if meta.get("deletionTimestamp") else health.get((ns, name), "Unknown")
    if info is not None:
        port, app_port, service = info.inbound_port, info.app_port, info.service
    else:
        first = first_container_port(pod)
        if first is None:
            return None
        port, app_port, service = first, None, pod_service(pod)
    wspec: dict[str, Any] = {"service": service, "address": ip, "port": port,
                             "health": state,
                             "serviceAccount": spec.get("serviceAccountName") or "default"}
    if app_port:
        wspec["appPort"] = app_port
    if info is not None:
        wspec["proxy"] = f"{name}.{ns}"
    return {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Workload",
            "metadata": {"name": name, "namespace": ns, "labels": labels}, "spec": wspec}


def slice_workloads(eps: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Endpoints that are no pod (a Service without selector, its slices written by
    hand or by another controller): one Workload each, of the slice's Service."""
    meta = eps.get("metadata") or {}
    service = (meta.get("labels") or {}).get("kubernetes.io/service-name")
    ports = [p.get("port") for p in eps.get("ports") or () if p.get("protocol", "TCP") == "TCP"]
    if not service or not ports or eps.get("addressType") != "IPv4":
        return []
    out = []
    for i, ep in enumerate(eps.get("endpoints") or ()):
        if (ep.get("targetRef") or {}).get("kind") == "Pod" or not ep.get("addresses"):
            continue
        ready = (ep.get("conditions") or {}).get("ready")
        out.append({
            "apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Workload",
            "metadata": {"name": f"{meta['name']}-{i}", "namespace": meta.get("namespace")},
            "spec": {"service": service, "address": ep["addresses"][0], "port": ports[0],
                     "health": "Healthy" if ready in (None, True) else "Unhealthy"}})
    return out


def mesh_document(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """A Gossamer, Gateway API or SMI object as `gossamer apply` takes it: no status,
    metadata reduced to what the model keeps."""
    meta = obj.get("metadata") or {}
    out_meta: dict[str, Any] = {"name": meta.get("name")}
    if meta.get("namespace"):
        out_meta["namespace"] = meta["namespace"]
    for key in ("labels", "annotations"):
        kept = {k: v for k, v in (meta.get(key) or {}).items()
                if not k.startswith("kubectl.kubernetes.io/")}
        if kept:
            out_meta[key] = kept
    kind = obj.get("kind")
    cls = next((c for c in KINDS.values() if kind == c.KIND
                or str(c.model_fields["kind"].default) == kind), None)
    if cls is not None and cls.CLUSTER_NAMESPACE:
        out_meta["namespace"] = cls.CLUSTER_NAMESPACE
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")} | {
        "metadata": out_meta}
