"""`gossamer check --kubernetes`: is the installation whole, as `linkerd check` asks.

Each check reads the cluster through k8s/client.py and yields findings: a ✔ line,
or a ✘ line with the command that fixes it (‼ for what could not be checked). The
RBAC check asks the API server itself (SubjectAccessReview for the controller's
ServiceAccount), so it sees what is granted, not what the chart meant to grant.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from lightkube.resources.admissionregistration_v1 import MutatingWebhookConfiguration
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import ConfigMap, Namespace, Pod

from gossamer.k8s.client import KubeApi
from gossamer.k8s.convert import STATUS_ANNOTATION
from gossamer.k8s.crds import crds
from gossamer.k8s.inject import INJECT_LABEL, PROXY_NAME
from gossamer.k8s.install import LEASE_RULES, NAMESPACE, rbac_rules

WEBHOOK = "gossamer-sidecar-injector"
GATEWAY_CRDS = ("httproutes", "grpcroutes", "tcproutes", "gateways", "gatewayclasses",
                "tlsroutes")
GATEWAY_BUNDLE = "v1.5.1"  # deploy/crds/gateway-api/README.md
BUNDLE_ANNOTATION = "gateway.networking.k8s.io/bundle-version"
INSTALL = "gossamer install (or helm upgrade gossamer deploy/helm/gossamer)"


@dataclass(frozen=True)
class Finding:
    ok: bool | None  # None: not checked (a warning)
    text: str
    fix: str = ""

    def line(self) -> str:
        mark = {True: "✔", False: "✘", None: "‼"}[self.ok]
        return f"{mark} {self.text}" + (f"\n    fix: {self.fix}" if self.fix else "")


async def check(api: KubeApi, *, server: str | None = None,
                namespace: str = NAMESPACE) -> AsyncIterator[Finding]:
    yield await _crds(api)
    yield await _gateway_crds(api)
    yield await _deployment(api, namespace)
    hook = await api.get(MutatingWebhookConfiguration, WEBHOOK)
    yield _webhook(hook)
    if hook is not None:
        yield await _serving_cert(hook, server, namespace)
    yield await _rbac(api, namespace)
    async for finding in _injection(api, namespace):
        yield finding


async def _crds(api: KubeApi) -> Finding:
    missing, stale = [], []
    for want in crds():
        name = want["metadata"]["name"]
        have = await api.get(CustomResourceDefinition, name)
        if have is None:
            missing.append(name)
        elif _schema(have) != _schema(want):
            stale.append(name)
    if missing or stale:
        what = "; ".join(f"{label}: {', '.join(names)}" for label, names in
                         (("missing", missing), ("not this version's", stale)) if names)
        return Finding(False, f"Gossamer CRDs ({what})", INSTALL)
    return Finding(True, f"Gossamer CRDs installed, at this version ({len(crds())})")


def _schema(crd: dict[str, Any]) -> Any:
    return [(v.get("name"), v.get("schema")) for v in crd["spec"]["versions"]]


async def _gateway_crds(api: KubeApi) -> Finding:
    bad = []
    for plural in GATEWAY_CRDS:
        have = await api.get(CustomResourceDefinition, f"{plural}.gateway.networking.k8s.io")
        bundle = ((have or {}).get("metadata", {}).get("annotations") or {}).get(
            BUNDLE_ANNOTATION)
        if bundle != GATEWAY_BUNDLE:
            bad.append(f"{plural} ({bundle or 'missing'})")
    if bad:
        return Finding(False, f"Gateway API CRDs not at {GATEWAY_BUNDLE}: {', '.join(bad)}",
                       "kubectl apply --server-side -f deploy/crds/gateway-api/experimental/"
                       " (or " + INSTALL + ")")
    return Finding(True, f"Gateway API CRDs installed ({GATEWAY_BUNDLE})")


async def _deployment(api: KubeApi, namespace: str) -> Finding:
    deploy = await api.get(Deployment, "gossamer", namespace)
    if deploy is None:
        return Finding(False, f"control plane Deployment {namespace}/gossamer missing",
                       INSTALL)
    want = int(deploy["spec"].get("replicas") or 0)
    ready = int((deploy.get("status") or {}).get("availableReplicas") or 0)
    text = f"control plane Deployment available ({ready}/{want} replicas)"
    if ready < 1:
        return Finding(False, text, f"kubectl -n {namespace} describe deployment gossamer; "
                       f"kubectl -n {namespace} logs deployment/gossamer")
    if ready < want:
        return Finding(None, text + ": not every replica is available")
    return Finding(True, text)


def _webhook(hook: dict[str, Any] | None) -> Finding:
    if hook is None:
        return Finding(False, f"MutatingWebhookConfiguration {WEBHOOK} missing", INSTALL)
    bundles = [w.get("clientConfig", {}).get("caBundle") for w in hook.get("webhooks") or ()]
    if not bundles or not all(bundles):
        return Finding(False, f"webhook {WEBHOOK} has no caBundle", INSTALL)
    return Finding(True, f"injection webhook configured ({len(bundles)} webhook)")


async def _serving_cert(hook: dict[str, Any], server: str | None,
                        namespace: str) -> Finding:
    """Verify what the control plane serves with the webhook's caBundle, under the
    name kube-apiserver uses (SERVICE.NAMESPACE.svc)."""
    config = hook["webhooks"][0]["clientConfig"]
    service = config.get("service") or {}
    name = f"{service.get('name', 'gossamer')}.{service.get('namespace', namespace)}.svc"
    if server is None:
        return Finding(None, "webhook serving certificate not checked: pass --server "
                       "(e.g. after kubectl -n gossamer-system port-forward svc/gossamer "
                       "15080)")
    url = urlsplit(server)
    try:
        context = ssl.create_default_context(
            cadata=base64.b64decode(config["caBundle"]).decode())
        _, writer = await asyncio.wait_for(asyncio.open_connection(
            url.hostname, url.port or 443, ssl=context, server_hostname=name), 10)
        writer.close()
    except (OSError, ssl.SSLError, ValueError, TimeoutError) as exc:
        return Finding(False, f"the webhook's caBundle does not verify {server} as {name}: "
                       f"{exc}", "the control plane must sign with the CA of the Secret "
                       f"{namespace}/gossamer-ca: {INSTALL}, then kubectl -n {namespace} "
                       "rollout restart deployment gossamer")
    return Finding(True, f"webhook serving certificate verifies with its caBundle ({name})")


async def _rbac(api: KubeApi, namespace: str) -> Finding:
    user = f"system:serviceaccount:{namespace}:gossamer"
    denied = []
    asks = [(r, "") for r in rbac_rules()] + [(r, namespace) for r in LEASE_RULES]
    for rule, ns in asks:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                res, _, sub = resource.partition("/")
                for verb in rule["verbs"]:
                    if not await api.may(user, verb, group, res, ns, sub):
                        denied.append(f"{verb} {resource}{'.' + group if group else ''}")
    if denied:
        return Finding(False, f"the controller's ServiceAccount may not: {', '.join(denied)}",
                       f"{INSTALL} (ClusterRole gossamer-controller, Role "
                       "gossamer-leader-election)")
    return Finding(True, f"RBAC grants the controller what it needs ({len(asks)} rules)")


async def _injection(api: KubeApi, namespace: str) -> AsyncIterator[Finding]:
    enabled = [n["metadata"]["name"] for n in await api.list_all(Namespace, namespaced=False)
               if (n["metadata"].get("labels") or {}).get(INJECT_LABEL) == "enabled"]
    if not enabled:
        yield Finding(None, "no namespace is labelled gossamer.dev/inject=enabled")
        return
    yield Finding(True, f"injection enabled in: {', '.join(sorted(enabled))}")
    no_bundle = [ns for ns in sorted(enabled)
                 if await api.get(ConfigMap, "gossamer-ca-bundle", ns) is None]
    if no_bundle:
        yield Finding(False, f"no ConfigMap gossamer-ca-bundle (the pods' trust bundle) in: "
                      f"{', '.join(no_bundle)}", "add them to the value injectNamespaces "
                      f"and run {INSTALL}")
    deploy = await api.get(Deployment, "gossamer", namespace)
    image = _inject_image(deploy)
    missing, stale = [], []
    for pod in await api.list_all(Pod):
        meta = pod["metadata"]
        if meta.get("namespace") not in enabled or _opted_out(pod):
            continue
        proxy = next((c for c in pod["spec"].get("initContainers") or ()
                      if c.get("name") == PROXY_NAME), None)
        ref = f"{meta['namespace']}/{meta['name']}"
        if proxy is None or STATUS_ANNOTATION not in (meta.get("annotations") or {}):
            missing.append(ref)
        elif image and proxy.get("image") != image:
            stale.append(ref)
    if missing:
        yield Finding(False, f"pods without the sidecar: {', '.join(missing)}",
                      "re-create them: kubectl rollout restart deployment -n NAMESPACE NAME")
    if stale:
        yield Finding(False, f"pods whose sidecar is not the control plane's image ({image}): "
                      f"{', '.join(stale)}",
                      "kubectl rollout restart deployment -n NAMESPACE NAME")
    if not missing and not stale:
        yield Finding(True, "every pod in those namespaces has the current sidecar")


def _inject_image(deploy: dict[str, Any] | None) -> str | None:
    for c in ((deploy or {}).get("spec", {}).get("template", {}).get("spec", {})
              .get("containers") or ()):
        for arg in c.get("args") or ():
            if arg.startswith("--inject-image="):
                return str(arg.split("=", 1)[1])
    return None


def _opted_out(pod: dict[str, Any]) -> bool:
    meta = pod["metadata"]
    said = {str((meta.get("annotations") or {}).get(INJECT_LABEL, "")).lower(),
            str((meta.get("labels") or {}).get(INJECT_LABEL, "")).lower()}
    phase = (pod.get("status") or {}).get("phase")
    return bool(said & {"false", "disabled"}) or bool(pod["spec"].get("hostNetwork")) \
        or phase in ("Succeeded", "Failed")


