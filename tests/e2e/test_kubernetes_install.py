"""`gossamer install` and `gossamer check --kubernetes` against the Kubernetes API
emulator (tests/k8s_emulator.py): the chart's objects are created (then patched on
a second install); the check passes on a whole installation and names each broken
part with its fix, RBAC decided by the emulator from the installed roles, and the
webhook's caBundle verifying the serving certificate of a control plane run with
the chart's CA."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gossamer.ca.pki import generate_root
from gossamer.k8s.inject import InjectConfig, inject_document
from gossamer.testing.envoy import free_port
from tests.k8s_emulator import KubeEmulator

pytestmark = pytest.mark.slow
NS = "gossamer-system"


@pytest.fixture
async def emulator() -> AsyncIterator[KubeEmulator]:
    emu = KubeEmulator()
    await emu.start()
    try:
        yield emu
    finally:
        await emu.stop()


async def gossamer(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gossamer", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def pod(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "shop", "labels": {"app": "web"}},
            "spec": {"serviceAccountName": "web", **spec,
                     "containers": [{"name": "web", "image": "example/web",
                                     "ports": [{"containerPort": 8080}]}]},
            "status": {"phase": "Running"}}


async def test_install_creates_the_objects_and_check_names_what_is_broken(
        emulator: KubeEmulator, tmp_path: Path) -> None:
    kubeconfig = str(emulator.kubeconfig(tmp_path / "kubeconfig"))
    code, out = await gossamer("install", "--kubeconfig", kubeconfig, "--set", "replicas=1",
                               "--set", "injectNamespaces=[shop]")
    assert code == 0, out
    assert "Namespace/gossamer-system created" in out
    assert "CustomResourceDefinition/services.mesh.gossamer.dev created" in out
    assert "MutatingWebhookConfiguration/gossamer-sidecar-injector created" in out
    deploy = emulator.get("apps/v1", "Deployment", NS, "gossamer")
    assert deploy is not None
    assert deploy["spec"]["replicas"] == 1
    assert emulator.get("v1", "ConfigMap", "shop", "gossamer-ca-bundle") is not None
    assert emulator.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", "",
                        "httproutes.gateway.networking.k8s.io") is not None
    # A second install patches what exists (a new value arrives).
    code, out = await gossamer("install", "--kubeconfig", kubeconfig, "--set", "replicas=1",
                               "--set", "injectNamespaces=[shop]", "--set",
                               "webhook.failurePolicy=Fail")
    assert code == 0, out
    assert "Deployment/gossamer configured" in out
    hook = emulator.get("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration",
                        "", "gossamer-sidecar-injector")
    assert hook is not None
    assert hook["webhooks"][0]["failurePolicy"] == "Fail"

    # No replica is available yet, and nothing is labelled for injection.
    code, out = await gossamer("check", "--kubernetes", "--kubeconfig", kubeconfig)
    assert code == 1, out
    assert "✔ Gossamer CRDs installed, at this version" in out
    assert "✔ Gateway API CRDs installed (v1.5.1)" in out
    assert "✔ RBAC grants the controller what it needs" in out
    assert "✘ control plane Deployment available (0/1 replicas)" in out
    assert "fix: kubectl -n gossamer-system describe deployment gossamer" in out
    assert "‼ no namespace is labelled gossamer.dev/inject=enabled" in out

    # The control plane is up; one namespace injects, one of its pods has no sidecar.
    emulator.put({**deploy, "status": {"availableReplicas": 1, "replicas": 1}})
    emulator.put({"apiVersion": "v1", "kind": "Namespace",
                  "metadata": {"name": "shop", "labels": {"gossamer.dev/inject": "enabled"}}})
    config = InjectConfig(image="ghcr.io/gossamer-mesh/gossamer:0.1.0")
    emulator.put(inject_document(pod("web-0"), config))
    emulator.put(pod("legacy-0"))
    emulator.put({**pod("tool-0"), "metadata": {
        "name": "tool-0", "namespace": "shop", "annotations": {"gossamer.dev/inject": "false"}}})
    # The CRD of one kind is from another version, and RBAC lost a rule.
    crd = emulator.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", "",
                       "workloads.mesh.gossamer.dev")
    assert crd is not None
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"].pop("status")
    emulator.put(crd)
    role = emulator.get("rbac.authorization.k8s.io/v1", "ClusterRole", "", "gossamer-controller")
    assert role is not None
    role["rules"] = [r for r in role["rules"] if "endpointslices" not in r["resources"]]
    emulator.put(role)
    code, out = await gossamer("check", "--kubernetes", "--kubeconfig", kubeconfig)
    assert code == 1, out
    assert "✔ control plane Deployment available (1/1 replicas)" in out
    assert "✘ Gossamer CRDs (not this version's: workloads.mesh.gossamer.dev)" in out
    assert "✘ the controller's ServiceAccount may not: list endpointslices.discovery.k8s.io, " \
        "watch endpointslices.discovery.k8s.io" in out
    assert "✔ injection enabled in: shop" in out
    assert "✘ pods without the sidecar: shop/legacy-0\n" in out
    assert "fix: re-create them: kubectl rollout restart" in out

    # Installing again repairs the CRD and the role; the legacy pod is re-created.
    code, out = await gossamer("install", "--kubeconfig", kubeconfig, "--set", "replicas=1",
                               "--set", "injectNamespaces=[shop]")
    assert code == 0, out
    emulator.delete(pod("legacy-0"))
    code, out = await gossamer("check", "--kubernetes", "--kubeconfig", kubeconfig)
    assert code == 0, out
    assert "✘" not in out
    assert "✔ every pod in those namespaces has the current sidecar" in out
    assert "‼ webhook serving certificate not checked: pass --server" in out
    assert out.rstrip().endswith("Status check results are ✔")


async def _listening(port: int, proc: asyncio.subprocess.Process) -> None:
    for _ in range(600):
        assert proc.returncode is None, "the control plane exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            await asyncio.sleep(0.1)
    raise AssertionError("the control plane's API did not listen")


async def test_check_verifies_the_webhook_certificate_with_its_ca_bundle(
        emulator: KubeEmulator, tmp_path: Path) -> None:
    """The control plane run with the rendered Deployment's own command line (the
    Secret mounted as a directory, the kubeconfig instead of the in-cluster account,
    loopback and free ports) starts in Kubernetes mode against the API, takes the
    leader Lease, and serves a certificate the webhook's caBundle verifies; a
    caBundle of another CA does not."""
    kubeconfig = str(emulator.kubeconfig(tmp_path / "kubeconfig"))
    code, out = await gossamer("install", "--kubeconfig", kubeconfig, "--set", "replicas=1")
    assert code == 0, out
    secret = emulator.get("v1", "Secret", NS, "gossamer-ca")
    assert secret is not None
    mounted = tmp_path / "ca"  # the Secret's volume
    mounted.mkdir()
    for key in ("ca.crt", "ca.key"):
        (mounted / key).write_bytes(base64.b64decode(secret["data"][key]))
    deploy = emulator.get("apps/v1", "Deployment", NS, "gossamer")
    assert deploy is not None
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["gossamer"]
    args = [a.replace("/etc/gossamer/ca/", f"{mounted}/")
            .replace("=/var/lib/gossamer", f"={tmp_path / 'state'}")
            .replace("--host=0.0.0.0", "--host=127.0.0.1") for a in container["args"]]
    assert "--advertise-address=gossamer.gossamer-system.svc" in args
    api_port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gossamer", *args, "--api-tls", "--kubeconfig", kubeconfig,
        "--api-port", str(api_port), "--xds-port", str(free_port()),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True)
    try:
        await _listening(api_port, proc)
        server = f"https://127.0.0.1:{api_port}"
        for _ in range(300):  # the controller lists every kind, then leads
            lease = emulator.get("coordination.k8s.io/v1", "Lease", NS, "gossamer-controller")
            if lease and lease["spec"].get("holderIdentity"):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the control plane never took the leader Lease")
        code, out = await gossamer("check", "--kubernetes", "--kubeconfig", kubeconfig,
                                   "--server", server)
        assert "✔ webhook serving certificate verifies with its caBundle " \
            "(gossamer.gossamer-system.svc)" in out, out
        hook = emulator.get("admissionregistration.k8s.io/v1",
                            "MutatingWebhookConfiguration", "", "gossamer-sidecar-injector")
        assert hook is not None
        other = generate_root("gossamer.local", datetime.now(UTC)).root_pem()
        hook["webhooks"][0]["clientConfig"]["caBundle"] = base64.b64encode(
            other.encode()).decode()
        emulator.put(hook)
        code, out = await gossamer("check", "--kubernetes", "--kubeconfig", kubeconfig,
                                   "--server", server)
        assert code == 1
        assert "✘ the webhook's caBundle does not verify" in out, out
        assert "fix: the control plane must sign with the CA of the Secret" in out
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)



async def test_upgrade_deletes_what_the_new_render_drops_and_uninstall_what_was_installed(
        emulator: KubeEmulator, tmp_path: Path) -> None:
    """The release record (ConfigMap gossamer-release) lists what was applied: an
    install without the gateway and with one replica deletes the gateway's objects and
    the PodDisruptionBudget; uninstall deletes the rest, but CRDs."""
    kubeconfig = str(emulator.kubeconfig(tmp_path / "kubeconfig"))
    gateway = "gateways=[{name: edge, namespace: shop, ports: [{name: https, port: 443}]}]"
    code, out = await gossamer("install", "--kubeconfig", kubeconfig,
                               "--set", "store.secret.name=pg", "--set", gateway)
    assert code == 0, out
    assert "revision 1" in out
    record = emulator.get("v1", "ConfigMap", NS, "gossamer-release")
    assert record is not None
    listed = json.loads(record["data"]["release"])
    assert listed["status"] == "deployed"
    assert listed["version"] == "0.1.0"
    assert {"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "shop",
            "name": "gateway-edge"} in listed["objects"]
    assert emulator.get("policy/v1", "PodDisruptionBudget", NS, "gossamer") is not None

    code, out = await gossamer("install", "--kubeconfig", kubeconfig, "--set", "replicas=1",
                               "--skip-crds")
    assert code == 0, out
    assert "Deployment/gateway-edge deleted" in out
    assert "revision 2" in out
    for api_version, kind, ns, name in [
            ("apps/v1", "Deployment", "shop", "gateway-edge"),
            ("v1", "Service", "shop", "gateway-edge"),
            ("v1", "ServiceAccount", "shop", "edge"),
            ("v1", "ConfigMap", "shop", "gateway-edge-ca"),
            ("policy/v1", "PodDisruptionBudget", NS, "gossamer")]:
        assert emulator.get(api_version, kind, ns, name) is None, (kind, name)
    assert emulator.get("apps/v1", "Deployment", NS, "gossamer") is not None
    crd = ("apiextensions.k8s.io/v1", "CustomResourceDefinition", "",
           "services.mesh.gossamer.dev")
    assert emulator.get(*crd) is not None  # --skip-crds: not rendered, never deleted

    code, out = await gossamer("uninstall", "--kubeconfig", kubeconfig)
    assert code == 0, out
    for api_version, kind, ns, name in [
            ("apps/v1", "Deployment", NS, "gossamer"), ("v1", "Secret", NS, "gossamer-ca"),
            ("rbac.authorization.k8s.io/v1", "ClusterRole", "", "gossamer-controller"),
            ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", "",
             "gossamer-sidecar-injector"),
            ("v1", "ConfigMap", NS, "gossamer-release")]:
        assert emulator.get(api_version, kind, ns, name) is None, (kind, name)
    assert emulator.get(*crd) is not None  # kept, as helm uninstall keeps them
    code, out = await gossamer("uninstall", "--kubeconfig", kubeconfig)
    assert code != 0
    assert "no release record" in out
