"""k8s/inject.py: the injection patch (golden), the AdmissionReview answers, and
`gossamer inject -f` (golden). `GOSSAMER_UPDATE_GOLDEN=1` rewrites the golden files."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from gossamer.cli.app import app
from gossamer.cli.k8s import inject as _registers_inject  # noqa: F401
from gossamer.k8s.convert import injected
from gossamer.k8s.inject import InjectConfig, apply_patch, review

HERE = Path(__file__).parent
GOLDEN = HERE.parent / "golden" / "k8s"
ENABLED = {"gossamer.dev/inject": "enabled"}


def _golden(name: str, text: str) -> None:
    if os.environ.get("GOSSAMER_UPDATE_GOLDEN"):
        (GOLDEN / name).write_text(text)
    assert text == (GOLDEN / name).read_text()


def pod(**meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-0", "namespace": "shop", "labels": {"app": "web"},
                         **meta},
            "spec": {"serviceAccountName": "web",
                     "containers": [{"name": "web", "image": "example/web",
                                     "ports": [{"containerPort": 8080}]}]}}


def admission(obj: dict[str, Any], operation: str = "CREATE") -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                        "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "resource": {"group": "", "version": "v1", "resource": "pods"},
                        "namespace": "shop", "operation": operation, "object": obj}}


def test_admission_review_patch_is_golden_and_applies() -> None:
    answer = review(admission(pod()), ENABLED, InjectConfig())
    response = answer["response"]
    assert response["allowed"] is True
    assert response["uid"] == "705ab4f5-6393-11e8-b7cc-42010a800002"
    assert response["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(response["patch"]))
    _golden("inject-patch.json", json.dumps(patch, indent=2) + "\n")
    patched = apply_patch(pod(), patch)
    init = patched["spec"]["initContainers"]
    assert [c["name"] for c in init] == ["gossamer-capture", "gossamer-proxy"]
    assert init[1]["restartPolicy"] == "Always"  # a native sidecar
    assert init[1]["securityContext"]["runAsUser"] == 1337
    assert "add" not in init[1]["securityContext"]["capabilities"]  # only the init has caps
    assert "NET_ADMIN" in init[0]["securityContext"]["capabilities"]["add"]
    info = injected(patched)  # what the controller reads back
    assert info is not None
    assert (info.service, info.inbound_port, info.app_port) == ("web", 15006, 8080)


@pytest.mark.parametrize(("obj", "labels"), [
    (pod(), {}),  # namespace not labelled
    (pod(annotations={"gossamer.dev/inject": "false"}), ENABLED),  # the pod opts out
    ({**pod(), "spec": {**pod()["spec"], "hostNetwork": True}}, ENABLED),
    (pod(annotations={"gossamer.dev/status": "{}"}), ENABLED),  # injected already
])
def test_pods_left_alone(obj: dict[str, Any], labels: dict[str, str]) -> None:
    response = review(admission(obj), labels, InjectConfig())["response"]
    assert response == {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "allowed": True}


def test_a_pod_opts_in_without_its_namespace() -> None:
    response = review(admission(pod(annotations={"gossamer.dev/inject": "true"})), {},
                      InjectConfig())["response"]
    assert "patch" in response


def test_a_bad_annotation_is_refused_with_the_field() -> None:
    bad = pod(annotations={"gossamer.dev/app-port": "http"})
    response = review(admission(bad), ENABLED, InjectConfig())["response"]
    assert response["allowed"] is False
    assert "gossamer.dev/app-port" in response["status"]["message"]


def test_gossamer_inject_file_is_golden() -> None:
    result = CliRunner().invoke(app, ["inject", "-f", str(HERE / "testdata" / "deploy.yaml")])
    assert result.exit_code == 0, result.output
    _golden("inject-deploy.yaml", result.stdout)
    docs = list(yaml.safe_load_all(result.stdout))
    job = docs[1]["spec"]["template"]["spec"]
    assert [c["name"] for c in job["initContainers"]] == [
        "gossamer-capture", "gossamer-proxy", "wait"]  # the mesh first
    assert "initContainers" not in docs[2]["spec"]  # opted out
    assert docs[3]["kind"] == "Service"


def test_probes_go_through_the_sidecar() -> None:
    p = pod()
    container = p["spec"]["containers"][0]
    container["ports"][0]["name"] = "http"
    container["livenessProbe"] = {"httpGet": {"path": "/live", "port": "http"},
                                  "timeoutSeconds": 3}
    container["startupProbe"] = {"tcpSocket": {"port": 8080}}  # left as it is
    container["readinessProbe"] = {"httpGet": {"path": "/r", "port": 9, "host": "10.0.0.1"}}
    patched = apply_patch(p, patch_for(p))
    c = patched["spec"]["containers"][0]
    assert c["livenessProbe"]["httpGet"] == {"path": "/app-health/web/livez", "port": 15020,
                                             "scheme": "HTTP"}
    assert c["livenessProbe"]["timeoutSeconds"] == 3
    assert c["startupProbe"] == {"tcpSocket": {"port": 8080}}
    assert c["readinessProbe"]["httpGet"]["host"] == "10.0.0.1"  # another host's: kept
    env = {e["name"]: e.get("value") for e in patched["spec"]["initContainers"][1]["env"]}
    assert json.loads(env["GOSSAMER_APP_PROBES"]) == {"/app-health/web/livez": {
        "path": "/live", "port": 8080, "scheme": "HTTP", "timeoutSeconds": 3}}


def test_grpc_probes_become_http_probes_of_the_sidecar() -> None:
    p = pod()
    container = p["spec"]["containers"][0]
    container["readinessProbe"] = {"grpc": {"port": 9090, "service": "shop.Cart"},
                                   "periodSeconds": 2, "timeoutSeconds": 4}
    container["livenessProbe"] = {"grpc": {"port": 9090}}
    patched = apply_patch(p, patch_for(p))
    c = patched["spec"]["containers"][0]
    assert c["readinessProbe"] == {"httpGet": {"path": "/app-health/web/readyz",
                                               "port": 15020, "scheme": "HTTP"},
                                   "periodSeconds": 2, "timeoutSeconds": 4}
    assert "grpc" not in c["livenessProbe"]
    env = {e["name"]: e.get("value") for e in patched["spec"]["initContainers"][1]["env"]}
    assert json.loads(env["GOSSAMER_APP_PROBES"]) == {
        "/app-health/web/readyz": {"port": 9090, "grpc": {"service": "shop.Cart"},
                                   "timeoutSeconds": 4},
        "/app-health/web/livez": {"port": 9090, "grpc": {"service": ""},
                                  "timeoutSeconds": 1}}
    import kubernetes_validate

    kubernetes_validate.validate(patched, "1.30", strict=True)


def test_a_probe_of_an_undeclared_named_port_is_refused() -> None:
    p = pod()
    p["spec"]["containers"][0]["readinessProbe"] = {"httpGet": {"path": "/", "port": "web"}}
    response = review(admission(p), ENABLED, InjectConfig())["response"]
    assert response["allowed"] is False
    assert "port 'web'" in response["status"]["message"]


def patch_for(p: dict[str, Any]) -> list[dict[str, Any]]:
    response = review(admission(p), ENABLED, InjectConfig())["response"]
    return list(json.loads(base64.b64decode(response["patch"])))


@pytest.mark.parametrize("version", ["1.30", "latest"])
def test_injected_documents_are_valid_kubernetes(version: str) -> None:
    """What `gossamer inject` prints (native sidecars: Kubernetes 1.29 and later)
    passes the Kubernetes schemas, strictly (no unknown field)."""
    import kubernetes_validate

    result = CliRunner().invoke(app, ["inject", "-f", str(HERE / "testdata" / "deploy.yaml")])
    assert result.exit_code == 0, result.output
    wanted = kubernetes_validate.latest_version() if version == "latest" else version
    for doc in yaml.safe_load_all(result.stdout):
        kubernetes_validate.validate(doc, wanted, strict=True)
    patched = apply_patch(pod(), patch_for(pod()))
    kubernetes_validate.validate(patched, wanted, strict=True)
