"""The Helm chart (deploy/helm/gossamer) as `gossamer install` renders it: generated
files in step with the code, every object valid against the Kubernetes schemas for
several values sets, RBAC exactly what the controller watches, clear refusals."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from gossamer.cli.app import app
from gossamer.cli.k8s import install as _registers_install  # noqa: F401
from gossamer.k8s.client import WATCHED
from gossamer.k8s.crds import crds_yaml
from gossamer.k8s.install import (
    InstallError,
    chart_dir,
    generated_ca,
    rbac_rules,
    rbac_template,
    render,
    smi_crds_template,
    values,
)

CHART = chart_dir()
VALUE_SETS: dict[str, list[str]] = {
    "defaults": ["store.secret.name=gossamer-store"],
    "one-replica-emptydir": ["replicas=1"],
    "one-replica-pvc": ["replicas=1", "store.persistence.enabled=true",
                        "store.persistence.storageClass=fast"],
    "three-replicas-fail": ["replicas=3", "store.secret.name=pg", "store.secret.key=url",
                            "webhook.failurePolicy=Fail", "injectNamespaces=[shop, web]",
                            "nodeSelector.disk=ssd",
                            "podDisruptionBudget.minAvailable=2"],
    "smi-crds": ["store.secret.name=pg", "smi.crds=true"],
    "gateways": ["store.secret.name=pg",
                 "gateways=[{name: edge, namespace: shop, replicas: 2, serviceAccount: edge-gw,"
                 " ports: [{name: https, port: 443, targetPort: 8443}],"
                 " resources: {requests: {cpu: 100m}}}, {name: internal, namespace: web}]"],
}


def rendered(sets: list[str], **kw: Any) -> list[dict[str, Any]]:
    return render(CHART, generated_ca(values(CHART, [], sets)), **kw)


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind
             and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def test_generated_chart_files_match_the_code() -> None:
    """Run `gossamer k8s rbac > templates/rbac.yaml` and `gossamer k8s crds` (with its
    header) into crds/gossamer.yaml when this fails."""
    assert (CHART / "templates" / "rbac.yaml").read_text() == rbac_template()
    assert (CHART / "templates" / "smi-crds.yaml").read_text() == smi_crds_template()
    text = (CHART / "crds" / "gossamer.yaml").read_text()
    assert text.split("\n", 1)[1] == crds_yaml()


def test_gateway_api_crds_are_the_vendored_ones() -> None:
    vendored = CHART.parents[1] / "crds" / "gateway-api" / "experimental"
    for kind in ("httproutes", "grpcroutes", "tcproutes", "gateways", "tlsroutes",
                 "gatewayclasses"):
        name = f"gateway.networking.k8s.io_{kind}.yaml"
        assert (CHART / "crds" / name).resolve() == (vendored / name).resolve()


def test_rbac_is_exactly_what_the_controller_watches() -> None:
    rules = rbac_rules()
    listed = {(g, r) for rule in rules if rule["verbs"] == ["list", "watch"]
              for g in rule["apiGroups"] for r in rule["resources"]}
    info = [(w.resource._api_info.resource.group, w.resource._api_info.plural)
            for w in WATCHED]
    assert listed == set(info)
    patched = {(g, r) for rule in rules if rule["verbs"] == ["patch"]
               for g in rule["apiGroups"] for r in rule["resources"]}
    want = {(g, f"{p}/status") for w, (g, p) in zip(WATCHED, info, strict=True) if w.status}
    assert patched == want
    verbs = {v for rule in rules for v in rule["verbs"]}
    assert verbs == {"list", "watch", "patch", "create"}  # no get/update/delete cluster-wide
    assert [r for r in rules if r["verbs"] == ["create"]] == [
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"],
         "verbs": ["create"]}]


@pytest.mark.parametrize("version", ["1.30", "latest"])
@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_rendered_objects_are_valid_kubernetes(name: str, version: str) -> None:
    import kubernetes_validate

    wanted = kubernetes_validate.latest_version() if version == "latest" else version
    docs = rendered(VALUE_SETS[name])
    for doc in docs:
        kubernetes_validate.validate(doc, wanted, strict=True)
    kinds = {d["kind"] for d in docs}
    assert {"CustomResourceDefinition", "Deployment", "Service", "ServiceAccount",
            "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
            "MutatingWebhookConfiguration", "Secret"} <= kinds
    crds = {d["metadata"]["name"] for d in docs if d["kind"] == "CustomResourceDefinition"}
    assert {"httproutes.gateway.networking.k8s.io", "grpcroutes.gateway.networking.k8s.io",
            "tcproutes.gateway.networking.k8s.io", "gateways.gateway.networking.k8s.io",
            "tlsroutes.gateway.networking.k8s.io", "services.mesh.gossamer.dev",
            "meshes.mesh.gossamer.dev"} <= crds


def test_replicas_decide_the_store_and_the_disruption_budget() -> None:
    many = rendered(VALUE_SETS["three-replicas-fail"], crds=False)
    deploy = one(many, "Deployment")
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert deploy["spec"]["replicas"] == 3
    assert "--store=$(GOSSAMER_STORE)" in container["args"]
    assert container["env"] == [{"name": "GOSSAMER_STORE", "valueFrom": {
        "secretKeyRef": {"name": "pg", "key": "url"}}}]
    assert one(many, "PodDisruptionBudget")["spec"]["minAvailable"] == 2
    assert one(many, "MutatingWebhookConfiguration")["webhooks"][0]["failurePolicy"] == "Fail"
    assert {d["metadata"]["namespace"] for d in many if d["kind"] == "ConfigMap"} == \
        {"shop", "web"}
    single = rendered(VALUE_SETS["one-replica-pvc"], crds=False)
    deploy = one(single, "Deployment")
    spec = deploy["spec"]["template"]["spec"]
    assert not [a for a in spec["containers"][0]["args"] if a.startswith("--store")]
    assert spec["volumes"][0] == {"name": "state",
                                  "persistentVolumeClaim": {"claimName": "gossamer-state"}}
    assert one(single, "PersistentVolumeClaim")["spec"]["storageClassName"] == "fast"
    assert not [d for d in single if d["kind"] == "PodDisruptionBudget"]
    empty = rendered(VALUE_SETS["one-replica-emptydir"], crds=False)
    assert one(empty, "Deployment")["spec"]["template"]["spec"]["volumes"][0] == \
        {"name": "state", "emptyDir": {}}


def test_the_control_plane_runs_locked_down() -> None:
    deploy = one(rendered(VALUE_SETS["defaults"], crds=False), "Deployment")
    spec = deploy["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"] == {"allowPrivilegeEscalation": False,
                                            "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert "--kubernetes" in container["args"]
    assert spec["affinity"]["podAntiAffinity"]
    assert spec["serviceAccountName"] == "gossamer"


def test_smi_crds_are_rendered_only_when_asked() -> None:
    def smi(docs: list[dict[str, Any]]) -> set[str]:
        return {d["metadata"]["name"] for d in docs if d["kind"] == "CustomResourceDefinition"
                and "smi-spec.io" in d["metadata"]["name"]}

    assert smi(rendered(VALUE_SETS["smi-crds"], crds=False)) == {
        "trafficsplits.split.smi-spec.io", "traffictargets.access.smi-spec.io",
        "httproutegroups.specs.smi-spec.io", "tcproutes.specs.smi-spec.io"}
    assert smi(rendered(VALUE_SETS["defaults"])) == set()


def test_gateways_run_gossamer_gateway_with_their_own_identity() -> None:
    docs = rendered(VALUE_SETS["gateways"], crds=False)
    edge = one(docs, "Deployment", "gateway-edge")
    spec = edge["spec"]["template"]["spec"]
    assert edge["metadata"]["namespace"] == "shop"
    assert edge["spec"]["replicas"] == 2
    assert spec["serviceAccountName"] == "edge-gw"
    args = spec["containers"][0]["args"]
    assert args[:4] == ["gateway", "--name=edge", "--namespace=shop", "--service-account=edge-gw"]
    assert "--control-plane=https://gossamer.gossamer-system.svc:15080" in args
    token = spec["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] == "gossamer"
    assert one(docs, "ConfigMap", "gateway-edge-ca")["data"]["ca.crt"] == \
        base64.b64decode(one(docs, "Secret", "gossamer-ca")["data"]["ca.crt"]).decode()
    assert one(docs, "Service", "gateway-edge")["spec"]["ports"] == [
        {"name": "https", "port": 443, "targetPort": 8443}]
    internal = one(docs, "Deployment", "gateway-internal")
    assert internal["spec"]["replicas"] == 1
    assert internal["spec"]["template"]["spec"]["serviceAccountName"] == "internal"
    assert not [d for d in docs if d["kind"] == "Service"
                and d["metadata"]["name"] == "gateway-internal"]  # no ports: no Service
    assert not [d for d in rendered(VALUE_SETS["defaults"], crds=False)
                if d["metadata"]["name"].startswith("gateway-")]


def test_webhook_trusts_the_ca_the_control_plane_signs_with() -> None:
    docs = rendered(VALUE_SETS["defaults"], crds=False)
    secret = one(docs, "Secret", "gossamer-ca")
    hook = one(docs, "MutatingWebhookConfiguration")["webhooks"][0]
    assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    assert hook["namespaceSelector"] == {"matchLabels": {"gossamer.dev/inject": "enabled"}}
    assert hook["clientConfig"]["service"] == {
        "name": "gossamer", "namespace": "gossamer-system",
        "path": "/api/v1/kubernetes/inject", "port": 15080}
    pem = base64.b64decode(secret["data"]["ca.crt"]).decode()
    assert pem.startswith("-----BEGIN CERTIFICATE-----")


def test_given_ca_is_used_not_generated() -> None:
    vals = generated_ca(values(CHART, [], VALUE_SETS["defaults"]))
    again = generated_ca(vals)
    assert again["ca"] == vals["ca"]
    docs = render(CHART, again, crds=False)
    assert base64.b64decode(one(docs, "Secret")["data"]["ca.crt"]).decode() == \
        vals["ca"]["cert"]


@pytest.mark.parametrize(("sets", "namespace", "message"), [
    ([], "gossamer-system", "store.secret.name: replicas > 1"),
    (["replicas=1"], "mesh", "installs into gossamer-system"),
])
def test_refusals_name_the_value(sets: list[str], namespace: str, message: str) -> None:
    with pytest.raises(InstallError, match=message):
        rendered(sets, namespace=namespace)


def test_helm_refuses_a_missing_ca() -> None:
    """Helm has no generated CA here: without ca.cert the chart says what to pass."""
    with pytest.raises(InstallError, match=r"ca\.cert"):
        render(CHART, values(CHART, [], ["replicas=1"]))


def test_install_dry_run_prints_the_same_objects(tmp_path: Path) -> None:
    extra = tmp_path / "values.yaml"
    extra.write_text(yaml.safe_dump({"replicas": 1, "webhook": {"timeoutSeconds": 5}}))
    result = CliRunner().invoke(app, ["install", "--dry-run", "-f", str(extra),
                                      "--set", "trustDomain=corp.example", "--skip-crds"])
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(result.stdout))
    assert not [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    kinds = [d["kind"] for d in docs]  # Helm's install order
    assert kinds.index("ServiceAccount") < kinds.index("Secret") < kinds.index("Deployment")
    assert kinds[-1] == "MutatingWebhookConfiguration"
    assert one(docs, "MutatingWebhookConfiguration")["webhooks"][0]["timeoutSeconds"] == 5
    assert "--trust-domain=corp.example" in \
        one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    bad = CliRunner().invoke(app, ["install", "--dry-run", "--set", "replicas"])
    assert bad.exit_code != 0
    assert "expected key.path=value" in str(bad.exception)
