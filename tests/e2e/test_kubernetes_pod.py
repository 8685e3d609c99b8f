"""A pod run from its injected spec, and a VM host, in one mesh served from Kubernetes.

Namespace hosts (tests/hosts.py): `a` runs `gossamer control-plane --kubernetes`
against the API emulator (tests/k8s_emulator.py, in this test's process, on the
root namespace's bridge address); `pod` plays a node's pod sandbox; `vm` is a host
outside the cluster. The test plays the API server's clients:

- the pod `web-0` is sent to the control plane's injection webhook over HTTPS, as a
  real `AdmissionReview`, and the answer's JSONPatch is applied to it;
- as kubelet: the patched pod's init containers run in order on host `pod` (the
  capture rules as root; the native sidecar started as uid 1337 and waited for on
  its startup probe), then the app container; the projected volume is a directory
  holding a ServiceAccount token (which the emulator's TokenReview knows, audience
  `gossamer`) and the trust bundle, its mount path replaced by that directory in the
  commands; `$(VAR)`s are expanded from the downward API as kubelet does;
- as the EndpointSlice controller: once the app answers, its slice says it is ready.

The VM joins as in universal mode (a join token, the CA bundle, `--capture`), and
the Kubernetes Service `vm` selects its Workload by its labels, as pods are. Then
the VM's app and the pod's app call each other by Service name, through capture
and mesh DNS, and each sees the other's SPIFFE identity: the hops were mutual TLS.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gossamer.k8s.inject import InjectConfig, apply_patch, inject_pod
from tests.hosts import Host, HostNetwork
from tests.k8s_emulator import KubeEmulator

pytestmark = pytest.mark.slow
PY = sys.executable
GOSSAMER = [PY, "-m", "gossamer"]
API = "mesh.gossamer.dev/v1alpha1"
SA_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ3ZWIifQ.c2lnbmF0dXJl"  # a JWT's shape


class Cluster:
    def __init__(self, net: HostNetwork, emulator: KubeEmulator, work: Path) -> None:
        self.net, self.emulator, self.work = net, emulator, work
        self.state = work / "state"
        self.logs = work / "logs"
        self.logs.mkdir()

    @property
    def url(self) -> str:
        return f"https://{self.net['a'].address}:15080"

    def api(self) -> httpx.AsyncClient:
        token = (self.state / "admin-token").read_text().strip()
        return httpx.AsyncClient(
            base_url=self.url, trust_env=False, timeout=10,
            verify=ssl.create_default_context(cafile=self.state / "ca-bundle.pem"),
            headers={"Authorization": f"Bearer {token}"})

    def tails(self) -> str:
        return "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')[-2500:]}"
                       for p in sorted(self.logs.glob("*.log")))


async def eventually(what: str, check: Callable[[], Awaitable[Any]], cluster: Cluster,
                     timeout: float = 90.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        with contextlib.suppress(OSError, httpx.HTTPError, ValueError):
            found = await check()
            if found:
                return found
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out: {what}{cluster.tails()}")


async def run_in(host: Host, argv: list[str],
                 timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(host.run, argv, timeout=timeout)


@pytest.fixture
async def cluster(netns_hosts: HostNetwork) -> AsyncIterator[Cluster]:
    net = netns_hosts
    for name in ("a", "vm", "pod"):
        net.add(name)
    emulator = KubeEmulator()
    await emulator.start(host=net.root_address)
    # World-readable, as the projected volume is to the sidecar's uid.
    work = Path(tempfile.mkdtemp(prefix="gossamer-k8s-pod-"))
    work.chmod(0o755)
    try:
        c = Cluster(net, emulator, work)
        emulator.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": "shop", "labels": {"gossamer.dev/inject": "enabled"}}})
        emulator.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "plain"}})
        for name, vip in (("web", "198.19.250.10"), ("vm", "198.19.250.11")):
            emulator.put({"apiVersion": "v1", "kind": "Service",
                          "metadata": {"name": name, "namespace": "shop"},
                          "spec": {"clusterIP": vip, "selector": {"app": name},
                                   "ports": [{"name": "http", "port": 80,
                                              "targetPort": 8080}]}})
        net["a"].popen([*GOSSAMER, "control-plane", "--state-dir", str(c.state),
                        "--host", net["a"].address, "--advertise-address", "a",
                        "--api-port", "15080", "--xds-port", "15010", "--kubernetes",
                        "--kubeconfig", str(emulator.kubeconfig(work / "kubeconfig"))],
                       log=c.logs / "control-plane.log")

        async def up() -> bool:
            async with c.api() as api:
                return (await api.get("/healthz")).is_success
        await eventually("the control plane is up",
                         lambda: _and((c.state / "admin-token").exists(), up), c, 60)
        yield c
    finally:
        await asyncio.to_thread(_stop, net.started)  # the hosts' processes, then the API
        await emulator.stop()
        shutil.rmtree(work, ignore_errors=True)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in reversed(procs):  # the netns_hosts fixture kills what is left after
        if proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=20)


async def _and(first: bool, then: Callable[[], Awaitable[bool]]) -> bool:
    return first and await then()


async def start_vm(c: Cluster) -> None:
    """A host outside the cluster joins as in universal mode; the Kubernetes Service
    `vm` selects its Workload by label, as it would a pod."""
    async with c.api() as api:
        strict = {"apiVersion": API, "kind": "PeerAuthentication",
                  "metadata": {"name": "strict", "namespace": "gossamer-system"},
                  "spec": {"mtls": {"mode": "STRICT"}}}
        assert (await api.post("/api/v1/apply", json=strict)).is_success
        token = (await api.post("/api/v1/tokens", json={
            "scope": "join", "service": "vm", "namespace": "shop"})).json()["token"]
    token_file = c.work / "vm.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    c.net["vm"].popen([
        *GOSSAMER, "proxy", "--service", "vm", "--namespace", "shop", "--name", "vm-0",
        "--control-plane", "https://a:15080", "--token-file", str(token_file),
        "--ca-file", str(c.state / "ca-bundle.pem"), "--capture", "--app-port", "8080",
        "--inbound-port", "15006", "--probe-path", "/healthz", "--workdir",
        str(c.work / "vm-agent"), "--drain-seconds", "0.5", "--",
        PY, "-m", "gossamer.demo.app", "--name", "vm", "--port", "8080"],
        log=c.logs / "vm.log")


def raw_pod() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-0", "namespace": "shop", "labels": {"app": "web"}},
            "spec": {"serviceAccountName": "web", "nodeName": "node-a", "containers": [{
                "name": "web", "image": "example/web",
                "command": [PY, "-m", "gossamer.demo.app", "--name", "web", "--port", "8080"],
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}}}]}}


async def admit(c: Cluster, pod: dict[str, Any]) -> dict[str, Any]:
    """The control plane's webhook, over HTTPS, as kube-apiserver calls it."""
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
              "request": {"uid": "b7a1c1f0-0000-4000-8000-000000000001",
                          "kind": {"group": "", "version": "v1", "kind": "Pod"},
                          "resource": {"group": "", "version": "v1", "resource": "pods"},
                          "namespace": pod["metadata"]["namespace"], "operation": "CREATE",
                          "object": pod}}
    async with httpx.AsyncClient(trust_env=False, timeout=10, verify=ssl.create_default_context(
            cafile=c.state / "ca-bundle.pem")) as client:
        resp = await client.post(f"{c.url}/api/v1/kubernetes/inject", json=review)
    assert resp.status_code == 200, resp.text
    answer = resp.json()["response"]
    assert answer["allowed"] is True
    assert answer["uid"] == review["request"]["uid"]  # type: ignore[index]
    return dict(answer)


def patch_of(answer: dict[str, Any]) -> list[dict[str, Any]]:
    assert answer["patchType"] == "JSONPatch"
    return list(json.loads(base64.b64decode(answer["patch"])))


class Kubelet:
    """Runs a pod's containers on a namespace host as kubelet would, in its order."""

    def __init__(self, c: Cluster, host: Host, pod: dict[str, Any]) -> None:
        self.c, self.host, self.pod = c, host, pod
        self.volumes: dict[str, Path] = {}

    def env(self, container: dict[str, Any]) -> dict[str, str]:
        fields = {"metadata.name": self.pod["metadata"]["name"],
                  "metadata.namespace": self.pod["metadata"]["namespace"],
                  "status.podIP": self.pod["status"]["podIP"]}
        out = {"PYTHONDONTWRITEBYTECODE": "1"}
        for var in container.get("env") or ():
            ref = (var.get("valueFrom") or {}).get("fieldRef")
            out[var["name"]] = fields[ref["fieldPath"]] if ref else var["value"]
        return out

    def argv(self, container: dict[str, Any], env: dict[str, str]) -> list[str]:
        argv = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a)
                for a in container["command"]]
        for mount in container.get("volumeMounts") or ():  # the volume "mounted" there
            argv = [a.replace(mount["mountPath"], str(self.volumes[mount["name"]]))
                    for a in argv]
        if argv[0] == "gossamer":  # the image's entry point
            argv = [*GOSSAMER, *argv[1:]]
        sc = container.get("securityContext") or {}
        uid = sc.get("runAsUser", 0)
        if uid:
            argv = ["setpriv", f"--reuid={uid}", f"--regid={sc.get('runAsGroup', uid)}",
                    "--clear-groups", "--", *argv]
        return argv

    def projected(self, volume: dict[str, Any], token: str, bundle: str) -> None:
        path = self.c.work / f"volume-{volume['name']}"
        path.mkdir(mode=0o755)
        for source in volume["projected"]["sources"]:
            if "serviceAccountToken" in source:
                audience = source["serviceAccountToken"]["audience"]
                self.c.emulator.tokens[token] = (
                    f"system:serviceaccount:shop:{self.pod['spec']['serviceAccountName']}",
                    [audience])
                (path / source["serviceAccountToken"]["path"]).write_text(token)
            else:
                for item in source["configMap"]["items"]:
                    (path / item["path"]).write_text(bundle)
        for f in path.iterdir():
            os.chown(f, 1337, 1337)
            f.chmod(0o600)
        self.volumes[volume["name"]] = path

    async def start(self) -> None:
        for container in self.pod["spec"].get("initContainers") or ():
            env = self.env(container)
            argv = self.argv(container, env)
            log = self.c.logs / f"{container['name']}.log"
            if container.get("restartPolicy") == "Always":  # a native sidecar
                self.host.popen(argv, env=env, log=log)
                await self.startup_probe(container)
            else:
                done = await asyncio.to_thread(self.host.run, argv, env=env, timeout=60)
                log.write_text(done.stdout + done.stderr)
                assert done.returncode == 0, f"{container['name']}: {done.stderr}"
        for container in self.pod["spec"]["containers"]:
            env = self.env(container)
            self.host.popen(self.argv(container, env), env=env,
                            log=self.c.logs / f"{container['name']}.log")

    async def startup_probe(self, container: dict[str, Any]) -> None:
        """As kubelet: from the node (this test's own namespace), never inside the pod, to
        the pod's IP unless the probe names a host."""
        get = container["startupProbe"]["httpGet"]
        url = f"http://{get.get('host', self.pod['status']['podIP'])}:{get['port']}{get['path']}"

        async def ready() -> bool:
            async with httpx.AsyncClient(trust_env=False, timeout=2) as kubelet_http:
                try:
                    return (await kubelet_http.get(url)).status_code == 200
                except httpx.HTTPError:
                    return False
        await eventually(f"{container['name']}'s startup probe {url}", ready, self.c, 90)


async def curl_json(host: Host, url: str) -> dict[str, Any] | None:
    done = await run_in(host, ["curl", "-sS", "--max-time", "10", url])
    if done.returncode != 0 or not done.stdout.startswith("{"):
        return None
    return dict(json.loads(done.stdout))


async def test_an_injected_pod_and_a_vm_call_each_other(cluster: Cluster) -> None:
    c = cluster
    pod_host = c.net["pod"]
    await start_vm(c)

    elsewhere = raw_pod()
    elsewhere["metadata"]["namespace"] = "plain"  # a namespace not labelled for injection
    assert "patch" not in await admit(c, elsewhere)
    patch = patch_of(await admit(c, raw_pod()))
    # The webhook's answer is what `gossamer inject` computes offline for that pod.
    assert patch == inject_pod(raw_pod(), InjectConfig(control_plane="https://a:15080"))
    pod = apply_patch(raw_pod(), patch)
    pod["status"] = {"phase": "Running", "podIP": pod_host.address}
    c.emulator.put(pod)  # scheduled: kubelet reports its IP
    kubelet = Kubelet(c, pod_host, pod)
    bundle = (c.state / "ca-bundle.pem").read_text()
    for volume in pod["spec"]["volumes"]:
        kubelet.projected(volume, SA_TOKEN, bundle)
    await kubelet.start()

    # The sidecar runs unprivileged: Envoy and the agent as 1337, no capabilities.
    owners = await run_in(pod_host, ["ps", "-o", "uid=,args=", "-e"])
    assert any(line.split()[0] == "1337" and "envoy" in line
               for line in owners.stdout.splitlines()), owners.stdout
    rules = await run_in(pod_host, ["iptables-save", "-t", "nat"])
    assert "--to-ports 15006" in rules.stdout
    assert "--uid-owner 1337" in rules.stdout

    async def app_up() -> bool:
        done = await run_in(pod_host, ["curl", "-sf", "http://127.0.0.1:8080/healthz"])
        return done.returncode == 0
    await eventually("web's app answers", app_up, c)
    # Kubelet's probe, rewritten: answered by the sidecar from the app. The original
    # (plaintext to the app's port) meets the STRICT mTLS inbound listener instead.
    probe = pod["spec"]["containers"][0]["readinessProbe"]["httpGet"]
    assert (probe["port"], probe["path"]) == (15020, "/app-health/web/readyz")
    async with httpx.AsyncClient(trust_env=False, timeout=5) as kubelet_http:
        ready = await kubelet_http.get(f"http://{pod_host.address}:15020{probe['path']}")
        assert ready.status_code == 200
        with pytest.raises(httpx.HTTPError):
            await kubelet_http.get(f"http://{pod_host.address}:8080/healthz")
    c.emulator.put({  # the EndpointSlice controller sees it ready
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-x1", "namespace": "shop",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
        "endpoints": [{"addresses": [pod_host.address], "conditions": {"ready": True},
                       "targetRef": {"kind": "Pod", "namespace": "shop", "name": "web-0"}}]})

    async def both_in_sync() -> bool:
        async with c.api() as api:
            proxies = (await api.get("/api/v1/proxies")).json()
            workloads = (await api.get("/api/v1/resources/Workload")).json()
        synced = {p["node_id"] for p in proxies if p["connected"] and p["synced"]}
        healthy = {w["metadata"]["name"] for w in workloads
                   if w["spec"]["health"] == "Healthy" and w["metadata"]["namespace"] == "shop"}
        return {"web-0.shop", "vm-0.shop"} <= synced and {"web-0", "vm-0"} <= healthy
    await eventually("the pod's and the VM's sidecars in sync, both healthy", both_in_sync, c)
    # The pod's sidecar joined with its ServiceAccount token, through a TokenReview.
    assert any(path.endswith("/tokenreviews") for _, path in c.emulator.requests)

    seen = await eventually("the VM calls web by name",
                            lambda: curl_json(c.net["vm"], "http://web.shop/from-vm"), c)
    assert (seen["service"], seen["path"]) == ("web", "/from-vm")
    assert "URI=spiffe://gossamer.local/ns/shop/sa/vm" in seen["headers"][
        "x-forwarded-client-cert"]
    seen = await eventually("the pod calls vm by name",
                            lambda: curl_json(pod_host, "http://vm/from-pod"), c)
    assert (seen["service"], seen["path"]) == ("vm", "/from-pod")
    assert "URI=spiffe://gossamer.local/ns/shop/sa/web" in seen["headers"][
        "x-forwarded-client-cert"]
