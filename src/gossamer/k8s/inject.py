"""Sidecar injection (pure): a pod spec in, a JSONPatch (RFC 6902) out.

The mutating webhook (`AdmissionReview` admission.k8s.io/v1) and `gossamer inject -f`
both call `inject_pod`, so what the cluster does and what the offline command prints
are one code path. A pod gets:

- an init container `gossamer-capture` that installs the capture rules (the only
  container with NET_ADMIN and NET_RAW; it runs as root and exits);
- a native sidecar `gossamer-proxy` (an init container with `restartPolicy: Always`):
  kubelet starts the app containers only once its startup probe passes (Envoy ready)
  and stops it after them, so the proxy is up before the app and outlives it. It runs
  as uid 1337, unprivileged, all capabilities dropped;
- the ServiceAccount token projected with audience `gossamer` (what the sidecar
  joins with), and the mesh's trust bundle from the ConfigMap `gossamer-ca-bundle`;
- the annotation `gossamer.dev/status` the controller reads (k8s/convert.py).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gossamer.contract.names import PROBES_PORT, PROXY_READY_PATH
from gossamer.k8s.convert import STATUS_ANNOTATION, first_container_port, pod_service

INJECT_LABEL = "gossamer.dev/inject"  # on a namespace: "enabled"; on a pod (annotation)
PROXY_UID = 1337
INBOUND_PORT = 15006
OUTBOUND_PORT = 15002
CAPTURE_PORT = 15001
DNS_PORT = 15053
ADMIN_PORT = 15000
APP_PROBES_PORT = PROBES_PORT
PROBES = {"livenessProbe": "livez", "readinessProbe": "readyz", "startupProbe": "startupz"}
TOKEN_DIR = "/var/run/secrets/gossamer"
AUDIENCE = "gossamer"
# The agent re-reads its token file when kubelet rotates it (certificates and API
# calls use the new one), but Envoy's xDS bootstrap holds the token it started with,
# presented on every reconnect, so that one must outlive the pod: a year. It is bound
# to the pod, so it stops being valid when the pod is deleted (TokenReview says so);
# the API server may cap the lifetime (--service-account-max-token-expiration), and
# a sidecar whose first token expired must then be restarted.
TOKEN_SECONDS = 365 * 86400
PROXY_NAME, INIT_NAME = "gossamer-proxy", "gossamer-capture"
# Resource requests and limits of the sidecar, from the pod's annotations.
RESOURCE_ANNOTATIONS = {
    "gossamer.dev/proxy-cpu": ("requests", "cpu"),
    "gossamer.dev/proxy-memory": ("requests", "memory"),
    "gossamer.dev/proxy-cpu-limit": ("limits", "cpu"),
    "gossamer.dev/proxy-memory-limit": ("limits", "memory"),
}


class InjectError(ValueError):
    """A pod that cannot be injected as asked (a bad annotation)."""


@dataclass(frozen=True)
class InjectConfig:
    image: str = "ghcr.io/gossamer-mesh/gossamer:0.1.0"
    # The control plane's API, as pods reach it.
    control_plane: str = "https://gossamer.gossamer-system.svc:15080"
    trust_domain: str = "gossamer.local"


def wants_injection(pod: Mapping[str, Any], namespace_labels: Mapping[str, str]) -> bool:
    """The namespace opts in (`gossamer.dev/inject=enabled`) and the pod does not opt
    out, or the pod opts in itself (annotation `gossamer.dev/inject: "true"`); never a
    pod on the host's network, nor one already injected."""
    meta = pod.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    spec = pod.get("spec") or {}
    if spec.get("hostNetwork") or STATUS_ANNOTATION in annotations:
        return False
    if any(c.get("name") == PROXY_NAME for c in spec.get("initContainers") or ()):
        return False
    asked = str(annotations.get(INJECT_LABEL, "")).lower()
    if asked in ("false", "disabled"):
        return False
    return asked in ("true", "enabled") or namespace_labels.get(INJECT_LABEL) == "enabled"


def _resources(annotations: Mapping[str, str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {"requests": {"cpu": "50m", "memory": "64Mi"}}
    for key, (section, name) in RESOURCE_ANNOTATIONS.items():
        if key in annotations:
            value = str(annotations[key])
            if not value or len(value) > 32 or not value[0].isdigit():
                raise InjectError(f"metadata.annotations[{key}]: {value!r} is not a "
                                  "Kubernetes quantity (such as 100m or 128Mi)")
            out.setdefault(section, {})[name] = value
    return out


def _app_port(pod: Mapping[str, Any]) -> int | None:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    text = annotations.get("gossamer.dev/app-port")
    if text is None:
        return first_container_port(pod)
    if not str(text).isdigit() or not 0 < int(text) < 65536:
        raise InjectError(f"metadata.annotations[gossamer.dev/app-port]: {text!r} is not "
                          "a port")
    return int(text)


def _env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def init_container(config: InjectConfig, app_port: int | None) -> dict[str, Any]:
    argv = ["gossamer", "capture", "install", "--proxy-uid", str(PROXY_UID),
            "--capture-port", str(CAPTURE_PORT), "--dns-port", str(DNS_PORT),
            "--inbound-port", str(INBOUND_PORT)]
    if app_port:
        argv += ["--app-port", str(app_port)]
    return {"name": INIT_NAME, "image": config.image, "command": argv,
            "securityContext": {"runAsUser": 0, "runAsNonRoot": False,
                                "capabilities": {"add": ["NET_ADMIN", "NET_RAW"],
                                                 "drop": ["ALL"]}}}


def _probe_port(container: Mapping[str, Any], port: object) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    for p in container.get("ports") or ():
        if p.get("name") == port:
            return int(p["containerPort"])
    raise InjectError(f"a probe names port {port!r}, which container "
                      f"{container.get('name')!r} does not declare")


def rewrite_probes(pod: Mapping[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The app containers' HTTP and gRPC probes sent to the sidecar's /app-health/ paths
    (agent/appprobes.py), and the table of originals the sidecar gets: under STRICT
    mTLS, kubelet's plaintext probe of the app's port would meet the inbound listener."""
    patch: list[dict[str, Any]] = []
    table: dict[str, Any] = {}
    for i, container in enumerate((pod.get("spec") or {}).get("containers") or ()):
        for field, kind in PROBES.items():
            grpc = (container.get(field) or {}).get("grpc")
            if grpc:
                path = f"/app-health/{container.get('name')}/{kind}"
                table[path] = {"port": _probe_port(container, grpc.get("port")),
                               "grpc": {"service": grpc.get("service") or ""},
                               "timeoutSeconds": container[field].get("timeoutSeconds", 1)}
                # The whole probe replaced: its thresholds kept, `grpc` now `httpGet`.
                probe = {k: v for k, v in container[field].items() if k != "grpc"}
                probe["httpGet"] = {"path": path, "port": APP_PROBES_PORT, "scheme": "HTTP"}
                patch.append({"op": "replace", "path": f"/spec/containers/{i}/{field}",
                              "value": probe})
                continue
            get = (container.get(field) or {}).get("httpGet")
            if not get or get.get("host"):  # a probe of another host: not the app's
                continue
            path = f"/app-health/{container.get('name')}/{kind}"
            table[path] = {"port": _probe_port(container, get.get("port")),
                           "path": get.get("path") or "/",
                           "scheme": get.get("scheme") or "HTTP",
                           "timeoutSeconds": container[field].get("timeoutSeconds", 1),
                           **({"httpHeaders": get["httpHeaders"]}
                              if get.get("httpHeaders") else {})}
            patch.append({"op": "replace", "path": f"/spec/containers/{i}/{field}/httpGet",
                          "value": {"path": path, "port": APP_PROBES_PORT,
                                    "scheme": "HTTP"}})
    return patch, table


def sidecar(pod: Mapping[str, Any], config: InjectConfig, service: str,
            app_port: int | None, probes: Mapping[str, Any]) -> dict[str, Any]:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    account = (pod.get("spec") or {}).get("serviceAccountName") or "default"
    argv = ["gossamer", "proxy", "--capture", "--capture-installed", "--no-register",
            "--proxy-uid", str(PROXY_UID), "--service", service, "--service-account", account,
            "--name", "$(POD_NAME)", "--namespace", "$(POD_NAMESPACE)",
            "--address", "$(POD_IP)", "--app-port", str(app_port or 0),
            "--inbound-port", str(INBOUND_PORT), "--outbound-port", str(OUTBOUND_PORT),
            "--admin-port", str(ADMIN_PORT), "--capture-port", str(CAPTURE_PORT),
            "--dns-port", str(DNS_PORT), "--app-probes-port", str(APP_PROBES_PORT),
            "--ready-probe",
            "--control-plane", config.control_plane,
            "--token-file", f"{TOKEN_DIR}/token", "--ca-file", f"{TOKEN_DIR}/ca.crt"]
    return {
        "name": PROXY_NAME, "image": config.image, "command": argv,
        "restartPolicy": "Always",
        "env": [_env("POD_NAME", "metadata.name"), _env("POD_NAMESPACE", "metadata.namespace"),
                _env("POD_IP", "status.podIP"),
                *([{"name": "GOSSAMER_APP_PROBES", "value": json.dumps(probes, sort_keys=True)}]
                  if probes else [])],
        "ports": [{"name": "gossamer-in", "containerPort": INBOUND_PORT}],
        # Kubelet probes the pod's address from the node, so not Envoy's loopback admin:
        # the agent answers PROXY_READY_PATH with Envoy's readiness (agent/appprobes.py).
        "startupProbe": {"httpGet": {"path": PROXY_READY_PATH, "port": APP_PROBES_PORT},
                         "periodSeconds": 1, "failureThreshold": 120},
        "readinessProbe": {"httpGet": {"path": PROXY_READY_PATH, "port": APP_PROBES_PORT},
                           "periodSeconds": 5, "failureThreshold": 3},
        "resources": _resources(annotations),
        "securityContext": {"runAsUser": PROXY_UID, "runAsGroup": PROXY_UID,
                            "runAsNonRoot": True, "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": False,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "gossamer-token", "mountPath": TOKEN_DIR,
                          "readOnly": True}],
    }


def token_volume() -> dict[str, Any]:
    return {"name": "gossamer-token", "projected": {"sources": [
        {"serviceAccountToken": {"path": "token", "audience": AUDIENCE,
                                 "expirationSeconds": TOKEN_SECONDS}},
        {"configMap": {"name": "gossamer-ca-bundle",
                       "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}}


def inject_pod(pod: Mapping[str, Any], config: InjectConfig) -> list[dict[str, Any]]:
    """The JSONPatch that injects `pod` (a Pod, or a workload's pod template)."""
    spec = pod.get("spec") or {}
    service = pod_service(pod)
    app_port = _app_port(pod)
    status = {"service": service, "inboundPort": INBOUND_PORT, "appPort": app_port,
              "version": 1}
    patch: list[dict[str, Any]] = []
    meta = pod.get("metadata") or {}
    if not meta.get("annotations"):
        patch.append({"op": "add", "path": "/metadata/annotations", "value": {}})
    patch.append({"op": "add", "path": "/metadata/annotations/" + _escape(STATUS_ANNOTATION),
                  "value": json.dumps(status, sort_keys=True)})
    probe_patch, probes = rewrite_probes(pod)
    containers = [init_container(config, app_port),
                  sidecar(pod, config, service, app_port, probes)]
    if spec.get("initContainers"):
        # Before the pod's own init containers: they may call out, through the mesh.
        patch += [{"op": "add", "path": f"/spec/initContainers/{i}", "value": c}
                  for i, c in enumerate(containers)]
    else:
        patch.append({"op": "add", "path": "/spec/initContainers", "value": containers})
    if spec.get("volumes"):
        patch.append({"op": "add", "path": "/spec/volumes/-", "value": token_volume()})
    else:
        patch.append({"op": "add", "path": "/spec/volumes", "value": [token_volume()]})
    return patch + probe_patch


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def review(request: Mapping[str, Any], namespace_labels: Mapping[str, str],
           config: InjectConfig) -> dict[str, Any]:
    """An AdmissionReview answered: a JSONPatch for a pod to inject, allowed unchanged
    otherwise, refused (with the reason) for a pod whose annotations are wrong."""
    req = request.get("request") or {}
    response: dict[str, Any] = {"uid": req.get("uid", ""), "allowed": True}
    pod = req.get("object") or {}
    if req.get("kind", {}).get("kind") == "Pod" and req.get("operation", "CREATE") == "CREATE" \
            and wants_injection(pod, namespace_labels):
        try:
            patch = inject_pod(pod, config)
        except InjectError as exc:
            response = {"uid": response["uid"], "allowed": False,
                        "status": {"code": 400, "message": f"gossamer injection: {exc}"}}
        else:
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": response}


# Where each workload kind keeps its pod template (`gossamer inject -f`).
TEMPLATES = {"Deployment": ("spec", "template"), "StatefulSet": ("spec", "template"),
             "DaemonSet": ("spec", "template"), "ReplicaSet": ("spec", "template"),
             "Job": ("spec", "template"), "CronJob": ("spec", "jobTemplate", "spec", "template")}


def apply_patch(obj: dict[str, Any], patch: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply the operations inject_pod writes (RFC 6902 `add`, `-` appends, and
    `replace` of a mapping's key)."""
    for op in patch:
        if op["op"] not in ("add", "replace"):
            raise InjectError(f"unsupported patch operation {op['op']!r}")
        *parents, last = [p.replace("~1", "/").replace("~0", "~")
                          for p in op["path"].split("/")[1:]]
        target: Any = obj
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list) and op["op"] == "add":
            target.insert(len(target) if last == "-" else int(last), op["value"])
        elif isinstance(target, list):
            target[int(last)] = op["value"]
        else:
            target[last] = op["value"]
    return obj


def inject_document(doc: dict[str, Any], config: InjectConfig) -> dict[str, Any]:
    """A Pod or a workload (its pod template) injected as the webhook would in a
    namespace labelled for injection; other kinds, and pods that opt out, unchanged."""
    kind = doc.get("kind")
    path = () if kind == "Pod" else TEMPLATES.get(str(kind))
    if path is None:
        return doc
    pod: Any = doc
    for part in path:
        pod = (pod or {}).get(part)
    if not isinstance(pod, dict) or not wants_injection(pod, {INJECT_LABEL: "enabled"}):
        return doc
    apply_patch(pod, inject_pod(pod, config))
    return doc
